"""Age and gender per person in a video: the photo pipeline on every Nth frame, tracks across frames,
one robust estimate per track.

    decode (VideoSource, every ``stride``-th frame) -> Predictor stages per frame (detect, align,
    preprocess, infer, postprocess; crops pooled across frames into batches) -> observations ->
    Tracker (ByteTrack) -> per-track aggregation (winsorised age, narrowing interval, mean P(female))
    -> VideoResult (+ annotated video, written as frames arrive)

Frames are decoded lazily and dropped once drawn, so memory does not grow with the video's length;
only the per-frame observations (a box and four numbers per person) are kept.
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..runtime.runner import model_age_range
from .aggregation import FRAME_CORRELATION_FLOOR, aggregate_track
from .draw import VideoWriter, draw_tracks, drawing_path
from .results import Observation, TrackResult, VideoResult
from .sources import SourceItem, VideoError, VideoSource
from .tracking import Tracker, observations

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["predict_video", "interval_level"]

_FRAME_STAGES = ("detect", "align", "preprocess", "infer", "postprocess")


def interval_level(predictor: Predictor) -> float:
    """Coverage of the model's per-frame interval (1 - alpha of its calibration record; 0.9 by default)."""
    cal = predictor.runner.calibration or {}
    return 1.0 - float(cal.get("alpha", 0.1))


def predict_video(predictor: Predictor, path: str | Path, stride: int = 1, draw: str | Path | None = None,
                  on_frame: Callable[[int, int], None] | None = None, lost_seconds: float = 2.0,
                  correlation_floor: float = FRAME_CORRELATION_FLOOR, taken: set[str] | None = None,
                  on_open: Callable[[VideoSource], None] | None = None) -> VideoResult:
    """Tracks with one age, interval and gender each for the video at ``path``.

    Args:
        predictor: the per-image :class:`~agekit.inference.predictor.Predictor` (model, detector, batching).
        stride: look at every Nth frame (all frames are decoded; only these are converted and estimated).
        draw: a folder: writes ``<draw>/<video name>.mp4`` with every processed frame, each tracked person
            boxed with its id and running estimate (at ``fps / stride``, so it plays in real time).
        on_frame: called as ``on_frame(frames_processed, tracks_so_far)`` after each processed frame.
        lost_seconds: how long an unseen track is kept for re-association (occlusion, a turned head).
        correlation_floor: the interval rule's floor on the person-level share of error
            (:mod:`agekit.inference.aggregation`).
        taken: file names already used in ``draw`` (several videos with one stem).
        on_open: called with the opened :class:`VideoSource` before decoding starts (e.g. to size a progress bar).

    Raises :class:`VideoError` (one line) when the file is not a usable video or not one frame decodes.
    """
    src = VideoSource(path, stride)
    if on_open is not None:
        on_open(src)
    out = VideoResult(name=src.name, path=str(src.path), width=src.width, height=src.height, fps=round(src.fps, 3),
                      stride=stride, codec=src.codec, frames_expected=src.frame_count)
    tracker = Tracker(src.fps, min_score=predictor.min_score, lost_seconds=lost_seconds, step_seconds=stride / src.fps)
    level = interval_level(predictor)
    age_range = model_age_range(predictor.cfg, predictor.runner.meta)
    tracks: dict[int, list[Observation]] = {}
    writer = VideoWriter(drawing_path(draw, src.name, ".mp4", src.path, taken), src.fps / stride) if draw is not None else None
    pending: deque[tuple[int, float]] = deque()  # (index, time) of frames handed to the predictor, in order
    spent = dict.fromkeys((*_FRAME_STAGES, "track", "draw"), 0.0)

    def items() -> Iterator[SourceItem]:
        for fr in src.frames():
            pending.append((fr.index, fr.time))
            yield SourceItem(f"{src.name}#{fr.index}", data=fr.rgb)

    try:
        for res in predictor.stream_items(items(), keep_images=writer is not None):
            index, t = pending.popleft()
            out.frames_processed += 1
            if out.frames_processed == 1 and res.width:
                out.width, out.height = res.width, res.height  # as shown: after the rotation metadata
            if res.error is not None:
                out.frames_failed += 1
            for stage in _FRAME_STAGES:
                spent[stage] += res.timings.get(stage, 0.0)
            t0 = time.perf_counter()
            tracked = tracker.update(observations(res, index, t), t)
            for tid, o in tracked:
                tracks.setdefault(tid, []).append(o)
            t1 = time.perf_counter()
            spent["track"] += t1 - t0
            if writer is not None and res.image is not None:
                labels = []
                for tid, o in tracked:
                    if o.frame != index:  # a newly confirmed track's first sighting, from an earlier frame
                        continue
                    est = aggregate_track(tracks[tid], level, age_range, correlation_floor)
                    labels.append((tid, o, est.label, est.gender))
                writer.write(draw_tracks(res.image, labels))
                res.image = None
                spent["draw"] += time.perf_counter() - t1
            if on_frame is not None:
                on_frame(out.frames_processed, len(tracks))
    except BaseException:
        if writer is not None:
            writer.close()
            writer.path.unlink(missing_ok=True)
        src.close()
        raise
    if writer is not None:
        writer.close()
        out.drawing = str(writer.path)
    src.close()
    out.frames_total, out.corrupt_packets, out.stopped = src.decoded, src.corrupt, src.stopped
    if src.decoded == 0:
        if writer is not None:
            writer.path.unlink(missing_ok=True)
        reason = src.stopped or (f"{src.corrupt} corrupt packet(s)" if src.corrupt else "no frames in the stream")
        raise VideoError(f"{src.path}: no frame could be decoded ({reason})")
    n = max(out.frames_processed, 1)
    out.timings = {"decode": src.decode_seconds / n, **{k: v / n for k, v in spent.items()}}
    out.timings["total"] = sum(out.timings.values())
    for tid in sorted(tracks):
        obs = sorted(tracks[tid], key=lambda o: o.frame)
        est = aggregate_track(obs, level, age_range, correlation_floor)
        out.tracks.append(TrackResult(id=tid, first_frame=obs[0].frame, last_frame=obs[-1].frame, num_frames=len(obs),
                                      age=est.age, age_low=est.age_low, age_high=est.age_high, gender=est.gender,
                                      gender_prob=est.gender_prob, p_female=est.p_female,
                                      effective_frames=round(est.effective_frames, 2), frames=obs))
    return out
