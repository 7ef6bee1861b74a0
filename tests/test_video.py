"""Video: decoding each container, bad videos, tracking two people who cross paths, stride, drawings, and the
per-track aggregation (winsorised age, narrowing interval, gender vote).

The crossing video is made here from two real UTKFace test chips (skipped without ../shared); the rest makes
its own frames.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.inference.aggregation import (FRAME_CORRELATION_FLOOR, aggregate_track, effective_frames,
                                          winsorized_age)
from agekit.inference.draw import VideoWriter
from agekit.inference.results import FaceResult, ImageResult, Observation
from agekit.inference.sources import VideoError, VideoSource
from agekit.inference.tracking import Tracker, observations
from tests.test_cli_common import one_line_error

runner = CliRunner()
FPS, N_FRAMES = 25, 50  # 2 seconds
YOUNG_F, OLD_M = "26_1_0_20170116220842573.jpg.chip.jpg", "68_0_1_20170113152656361.jpg.chip.jpg"  # test split


def predict(*args) -> object:
    return runner.invoke(app, ["predict", *map(str, args)])


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS, codec: str | None = None) -> Path:
    with VideoWriter(path, fps, codec=codec) as w:
        for f in frames:
            w.write(f)
    return path


def bar_frames(n: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Grey frames with a white vertical bar moving right by 8 px per frame (its position identifies the frame)."""
    out = []
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        f[:, 8 * i: 8 * i + 8] = 230
        out.append(f)
    return out


# -- decoding ------------------------------------------------------------------------------------------------
CONTAINERS = [("mp4", "libx264"), ("m4v", "libx264"), ("mov", "libx264"), ("avi", "mjpeg"), ("avi", "mpeg4"), ("mkv", "libx264"),
              ("mkv", "libvpx-vp9"), ("webm", "libvpx-vp9"), ("webm", "libvpx"), ("webm", "libsvtav1")]


@pytest.mark.parametrize("ext, codec", CONTAINERS, ids=[f"{e}-{c}" for e, c in CONTAINERS])
def test_each_container_decodes_every_frame_in_order(tmp_path, ext, codec):
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    path = write_video(tmp_path / f"bars.{ext}", bar_frames(8), codec=codec)
    with VideoSource(path) as src:
        assert (src.width, src.height) == (96, 64) and src.fps == pytest.approx(FPS)
        frames = list(src.frames())
    assert [f.index for f in frames] == list(range(8))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(8)], abs=1e-3)
    for i, f in enumerate(frames):  # lossy codecs blur the edges; the bar's centre column is where it was drawn
        assert f.rgb.shape == (64, 96, 3) and f.rgb.dtype == np.uint8
        assert abs(int(np.argmax(f.rgb[32, :, 0].astype(int))) - (8 * i + 4)) <= 4


def test_stride_keeps_every_nth_frame_and_counts_all(tmp_path):
    path = write_video(tmp_path / "bars.mp4", bar_frames(11))
    with VideoSource(path, stride=3) as src:
        assert src.expected_frames == 4
        idx = [f.index for f in src.frames()]
        assert idx == [0, 3, 6, 9] and src.decoded == 11


def test_phone_rotation_metadata_is_applied(tmp_path):
    """A landscape-coded stream with a 90 degree (counter-clockwise) display matrix, as phones write portrait clips."""
    import av

    path = tmp_path / "portrait.mp4"
    frame = np.full((32, 64, 3), 30, np.uint8)
    frame[:, :8] = 250  # a band along the left edge as stored
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        for _ in range(3):
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with VideoSource(path) as src:
        rgb = next(src.frames()).rgb
    assert rgb.shape == (64, 32, 3)  # upright: portrait
    assert rgb[-6:].mean() > 200 and rgb[:-10].mean() < 60  # the left edge, turned counter-clockwise, is the bottom


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("not a video at all"), "not a readable video"),
    (lambda p: p.write_bytes(b""), "not a readable video"),
    (lambda p: None, "file not found"),
])
def test_unusable_files_raise_one_line(tmp_path, make, message):
    path = tmp_path / "clip.mp4"
    make(path)
    with pytest.raises(VideoError) as e:
        VideoSource(path)
    assert message in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        VideoSource(path)


def test_huge_frames_are_refused(tmp_path):
    path = write_video(tmp_path / "bars.mkv", bar_frames(2))
    with pytest.raises(VideoError, match=r"frames too large \(96x64 px > 5000 px limit\)"):
        VideoSource(path, max_pixels=5000)


def test_truncated_video_keeps_what_decodes_and_says_so(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (90, 160, 3), dtype=np.uint8) for i in range(30)]
    full = write_video(tmp_path / "full.mkv", frames)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    r = predict(cut, "--quiet")
    assert r.exit_code == 0, r.output
    notes = r.stderr.splitlines()
    assert f"{cut}: nobody found in" in notes[0]
    assert notes[1].startswith(f"{cut}: the file ends after ") and notes[1].endswith("of the 30 frames its header announces (truncated?)")


def test_damaged_middle_keeps_the_rest(tmp_path):
    """Garbage over the middle of an MJPEG AVI: the frames around it decode, the video is still usable."""
    path = write_video(tmp_path / "bars.avi", bar_frames(12))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 600] = np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with VideoSource(path) as src:
        got = [f.index for f in src.frames()]
    assert 6 <= len(got) <= 12 and got[0] == 0


# -- the crossing video ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chips(utkface_root):
    from agekit.data.imageio import load_rgb

    paths = [utkface_root / YOUNG_F, utkface_root / OLD_M]
    if not all(p.is_file() for p in paths):
        pytest.skip("the two UTKFace test chips are not present")
    return [load_rgb(p) for p in paths]


@pytest.fixture(scope="module")
def crossing(chips, tmp_path_factory) -> Path:
    """2 s, 640x360, 25 fps: the young woman walks right, the old man left, passing in front of her mid-way."""
    from agekit.evaluation.pipeline_check import crossing_faces_frames

    d = tmp_path_factory.mktemp("video")
    return write_video(d / "crossing.mp4", crossing_faces_frames(chips, N_FRAMES, offset=0.2))


@pytest.fixture(scope="module")
def crossing_run(crossing, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    out, draw = d / "tracks.json", d / "drawn"
    r = predict(crossing, "--out", out, "--stride", 2, "--draw", draw)
    assert r.exit_code == 0, r.output
    return r, json.loads(out.read_text()), draw


def test_two_people_crossing_give_exactly_two_tracks(crossing_run):
    r, rec, _ = crossing_run
    assert rec["status"] == "ok" and rec["frames_total"] == N_FRAMES and rec["frames_processed"] == N_FRAMES // 2
    tracks = rec["tracks"]
    assert len(tracks) == 2, [(t["id"], t["first_frame"], t["last_frame"]) for t in tracks]
    for t in tracks:
        assert set(t) >= {"id", "first_frame", "last_frame", "num_frames", "age", "age_low", "age_high", "interval",
                          "gender", "gender_prob", "frames"}
        assert math.isfinite(t["age"]) and t["age_low"] <= t["age"] <= t["age_high"]
        assert t["num_frames"] == len(t["frames"]) >= 20 and t["first_frame"] == 0 and t["last_frame"] >= 46
        assert [f["frame"] for f in t["frames"]] == sorted(f["frame"] for f in t["frames"])
        assert all(len(f["box"]) == 4 and f["frame"] % 2 == 0 for f in t["frames"])
    # no identity switch: each track keeps moving one way, and keeps its own person's age and gender
    by_dir = {}
    for t in tracks:
        x = np.array([(f["box"][0] + f["box"][2]) / 2 for f in t["frames"]])
        way = np.sign(x[-1] - x[0])
        assert abs(x[-1] - x[0]) > 300 and np.mean(np.sign(np.diff(x)) == way) >= 0.9, x  # (a half-hidden face jitters)
        by_dir["right" if way > 0 else "left"] = t
    woman, man = by_dir["right"], by_dir["left"]
    assert woman["gender"] == "female" and man["gender"] == "male"
    assert woman["age"] < 35 < 55 < man["age"]
    assert "crossing.mp4" in r.stdout and "2 track(s)" in r.stderr


def test_drawing_has_every_processed_frame(crossing_run):
    _, rec, draw = crossing_run
    path = draw / "crossing.mp4"
    assert path.is_file() and rec["drawing"] == str(path)
    with VideoSource(path) as src:
        frames = list(src.frames())
        assert src.fps == pytest.approx(FPS / 2) and src.codec == "h264"
    assert len(frames) == rec["frames_processed"] and frames[0].rgb.shape == (360, 640, 3)
    woman = next(t for t in rec["tracks"] if t["gender"] == "female")
    obs = woman["frames"][5]
    f = frames[obs["frame"] // 2].rgb
    x0, y0 = (int(round(v)) for v in obs["box"][:2])
    r, g, b = f[max(y0 - 1, 0):y0 + 2, x0 + 10:x0 + 40].reshape(-1, 3).mean(0)
    assert r > g + 60 and r > b + 60  # the box's top line, in the female colour (red)


def test_stride_looks_at_every_nth_frame(crossing, tmp_path):
    out = tmp_path / "t.json"
    r = predict(crossing, "--out", out, "--stride", 5, "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec["stride"] == 5 and rec["frames_processed"] == 10 and rec["frames_total"] == N_FRAMES
    assert len(rec["tracks"]) == 2
    assert all(f["frame"] % 5 == 0 for t in rec["tracks"] for f in t["frames"])


def test_python_api_gives_the_same_tracks(crossing):
    import agekit

    res = agekit.Predictor().predict_video(crossing, stride=5)
    assert len(res.tracks) == 2 and res.status == "ok"
    assert sorted(round(t.age) for t in res.tracks)[0] < 35


@pytest.mark.parametrize("stride, looked", [(1, "10 frame(s) looked at"), (2, "5 frame(s) looked at (every 2nd of 10)")])
def test_video_with_nobody(tmp_path, stride, looked):
    path = write_video(tmp_path / "empty room.webm", [np.full((180, 320, 3), v, np.uint8) for v in range(60, 80, 2)])
    out = tmp_path / "t.json"
    r = predict(path, "--out", out, "--stride", stride)
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec["status"] == "nobody found" and rec["tracks"] == [] and rec["frames_processed"] == 10 // stride
    assert f"{path}: nobody found in {looked}" in r.stderr.splitlines()


def test_corrupt_video_is_one_line(tmp_path):
    bad = tmp_path / "clip.mkv"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    line = one_line_error(predict(bad, "--out", tmp_path / "t.json"), code=1)
    assert str(bad) in line and "not a readable video" in line


def test_several_videos_skip_the_bad_one(tmp_path):
    good = write_video(tmp_path / "plain.mp4", [np.full((90, 160, 3), 100, np.uint8)] * 3)
    bad = tmp_path / "bad.avi"
    bad.write_text("no")
    out = tmp_path / "t.jsonl"
    r = predict(good, bad, "--out", out)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["name"] for x in lines] == ["plain.mp4"]
    assert f"skipped {bad}: {bad}: not a readable video" in r.stderr


def test_a_quoted_glob_expands_to_the_videos(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, [np.full((90, 160, 3), 100, np.uint8)] * 2)
    out = tmp_path / "t.jsonl"
    r = predict(str(tmp_path / "*.mp4"), "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["name"] for x in out.read_text().splitlines()] == ["a.mp4", "b.mp4"]
    assert "no videos match" in one_line_error(predict(str(tmp_path / "*.mkv")))


@pytest.mark.parametrize("args, message", [
    (["clip.mp4", "photo.jpg"], "give videos and images in separate commands"),
    (["photo.jpg", "--stride", "2"], "--stride applies to videos"),
    (["clip.mp4", "--out", "t.csv"], "video results are JSON"),
    (["a.mp4", "b.mp4", "--out", "t.json"], "use a .jsonl file name for 2 videos"),
])
def test_video_argument_errors(args, message):
    assert message in one_line_error(predict(*args))


# -- tracking without a model ---------------------------------------------------------------------------------
def _obs(frame: int, x: float, y: float = 100.0, age: float = 30.0, score: float = 0.99) -> Observation:
    return Observation(frame=frame, time=frame / FPS, box=(x, y, x + 60, y + 60), score=score, age=age,
                       age_low=age - 10, age_high=age + 10, p_female=0.8)


def test_tracker_keeps_identities_through_a_crossing_and_the_first_sighting():
    tr = Tracker(FPS)
    seen: dict[int, list[Observation]] = {}
    for i in range(30):
        a, b = _obs(i, 20 + 10 * i, age=20), _obs(i, 310 - 10 * i, y=130, age=70)
        obs = [a] if 13 <= i <= 16 else [a, b]  # b hidden behind a for four frames
        for tid, o in tr.update(obs, i / FPS):
            seen.setdefault(tid, []).append(o)
    assert sorted(seen) == [1, 2]
    for tid, obs in seen.items():
        assert {o.age for o in obs} in ({20}, {70})  # one person per track
        assert obs[0].frame == 0  # the sighting before confirmation is kept
    assert sorted(len(v) for v in seen.values()) == [26, 30]


def test_a_slow_crossing_hidden_for_1_4_seconds_keeps_both_tracks():
    tr = Tracker(FPS)
    ids: dict[int, set[int]] = {}
    for i in range(60):
        a, b = _obs(i, 20 + 3 * i, age=20), _obs(i, 200 - 3 * i, y=130, age=70)
        for tid, o in tr.update([a] if 15 <= i < 50 else [a, b], i / FPS):
            ids.setdefault(tid, set()).add(int(o.age))
    assert ids == {1: {20}, 2: {70}} or ids == {1: {70}, 2: {20}}


def test_a_face_moving_more_than_its_width_between_looked_at_frames_keeps_its_track():
    """Stride 5 at 25 fps: 0.2 s between frames, 70 px steps for a 60 px face box (plain IoU: no overlap at all)."""
    tr = Tracker(FPS, step_seconds=0.2)
    ids = [tid for i in range(8) for tid, _ in tr.update([_obs(5 * i, 10 + 70 * i)], i * 0.2)]
    assert set(ids) == {1} and len(ids) == 8


def test_a_single_flicker_makes_no_track():
    tr = Tracker(FPS)
    out = [tr.update([_obs(0, 50)], 0.0), tr.update([], 1 / FPS), tr.update([_obs(2, 400)], 2 / FPS)]
    assert out == [[], [], []]


def test_observations_drop_a_face_mostly_inside_a_better_one():
    def face(box, score):
        return FaceResult(box=box, landmarks=(), score=score, age=30.0, gender="male", gender_prob=0.9)

    res = ImageResult("f", faces=[face((0, 0, 100, 100), 1.0), face((40, 10, 130, 100), 0.97), face((200, 0, 300, 100), 0.9)])
    kept = observations(res, 3, 0.12)
    assert [o.box[0] for o in kept] == [0, 200] and kept[0].p_female == pytest.approx(0.1)


# -- aggregation ------------------------------------------------------------------------------------------------
def _track(ages, half: float = 10.23, p_female=0.9) -> list[Observation]:
    return [Observation(i, i / FPS, (0, 0, 1, 1), 1.0, float(a), float(a) - half, float(a) + half, p_female)
            for i, a in enumerate(ages)]


def test_winsorised_age_follows_the_reference_rule():
    assert winsorized_age([20, 22, 90]) == pytest.approx(44.0)  # fewer than 10: the plain mean
    ages = [30] * 9 + [90]  # ten: 90 is clipped to median + 6 = 36
    assert winsorized_age(ages) == pytest.approx((30 * 9 + 36) / 10)
    assert winsorized_age([10, 20] * 5 + [100]) == pytest.approx(np.mean(np.clip([10, 20] * 5 + [100], 14, 26)))


def test_effective_frames():
    rng = np.random.default_rng(0)
    assert effective_frames([5.0] * 20) == 1.0
    assert effective_frames(rng.normal(size=400)) == pytest.approx(400, rel=0.2)
    walk = np.cumsum(rng.normal(size=400))  # strongly autocorrelated: worth few frames
    assert effective_frames(walk) < 10


def test_interval_narrows_with_evidence_but_never_below_the_floor():
    rng = np.random.default_rng(1)
    h = 10.23
    ages = 40 + rng.normal(0, 3, 1000)
    widths = {}
    for n in (1, 5, 10, 30, 100, 1000):  # the same track, seen longer and longer
        est = aggregate_track(_track(ages[:n], h))
        widths[n] = est.age_high - est.age_low
        assert est.age_low < est.age < est.age_high and widths[n] <= 2 * h + 1e-9
    assert widths[1] == pytest.approx(2 * h) and widths[5] == pytest.approx(2 * h)  # under 10 frames: per-frame
    assert widths[1000] < widths[100] < widths[10] < widths[5]
    assert widths[1000] >= 2 * h * math.sqrt(FRAME_CORRELATION_FLOOR) - 1e-6
    # frames that all agree carry no more evidence than one frame
    same = aggregate_track(_track([40.0] * 50, h))
    assert same.age_high - same.age_low == pytest.approx(2 * h)
    # a wildly varying track narrows only down to the floor
    wild = aggregate_track(_track(rng.uniform(0, 80, 2000), h))
    assert wild.age_high - wild.age_low == pytest.approx(2 * h * math.sqrt(FRAME_CORRELATION_FLOOR), rel=0.02)


@pytest.mark.parametrize("rho, phi", [(0.5, 0.0), (0.5, 0.9), (0.8, 0.5), (0.9, 0.98)])
def test_interval_keeps_its_coverage_on_correlated_frames(rho, phi):
    """Simulated tracks: a person-level error shared by all frames (share rho of the per-frame variance) plus
    AR(1) frame noise (phi = lag-1 correlation). The per-frame interval is exactly calibrated (90%)."""
    rng = np.random.default_rng(int(rho * 100 + phi * 10))
    h = 10.23
    sigma = h / 1.6449
    hits, n, T = 0, 40, 400
    for _ in range(T):
        e = np.empty(n)
        e[0] = rng.normal()
        for t in range(1, n):
            e[t] = phi * e[t - 1] + math.sqrt(1 - phi**2) * rng.normal()
        ages = 40 + rng.normal(0, math.sqrt(rho) * sigma) + math.sqrt(1 - rho) * sigma * e
        est = aggregate_track(_track(ages, h))
        hits += est.age_low <= 40 <= est.age_high
    assert hits / T >= 0.86  # 90% nominal; 400 tracks give a standard error of 1.5 points


def test_gender_is_the_mean_p_female_and_no_interval_without_calibration():
    obs = _track([30] * 4, p_female=0.9) + _track([30] * 2, p_female=0.2)
    est = aggregate_track(obs)
    assert est.p_female == pytest.approx((4 * 0.9 + 2 * 0.2) / 6) and est.gender == "female"
    assert est.gender_prob == pytest.approx(est.p_female)
    bare = [Observation(0, 0.0, (0, 0, 1, 1), 1.0, 30.0), Observation(1, 0.04, (0, 0, 1, 1), 1.0, 32.0)]
    est = aggregate_track(bare)
    assert est.age == 31.0 and est.age_low is None and est.gender is None and est.label == "31"
