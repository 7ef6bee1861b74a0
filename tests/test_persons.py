"""Person mode: pairing faces with people (each rule on composited scenes), body crops and their masks and
drop rules, per-person results in the API, JSON/CSV and the CLI, the interval widening, --crops."""
from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest

from agekit.data.crops import (EDGE_SNAP, MIN_BODY_SIDE, CropError, body_crop, body_crop_problem, body_visible_mask)
from agekit.data.imageio import load_rgb
from agekit.evaluation.scenes import paste_person
from agekit.inference.defaults import example_photo_path
from agekit.inference.detectors import Detection
from agekit.inference.pairing import max_weight_assignment, pair_faces
from agekit.inference.person_detectors import PersonDetection
from agekit.inference.persons import person_units
from agekit.inference.results import ImageResult, PersonResult
from agekit.inference.writers import PERSON_CSV_COLUMNS, open_writer
from agekit.runtime.runner import INPUT_WIDTH, age_interval

pytest.importorskip("ai_edge_litert")


# -- exact assignment -----------------------------------------------------------------------------------

def _brute_force(w: np.ndarray) -> float:
    n, m = w.shape
    if n <= m:
        return max(sum(w[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))
    return _brute_force(w.T)


@pytest.mark.parametrize("seed", range(40))
def test_assignment_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 6, 2)
    w = rng.random((n, m)) * (rng.random((n, m)) > 0.3)
    if seed % 4 == 0:
        w = np.round(w * 2) / 2  # ties
    pairs = max_weight_assignment(w)
    assert len(pairs) == min(n, m)
    assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
    assert sum(w[i, j] for i, j in pairs) == pytest.approx(_brute_force(w))


def test_assignment_matches_scipy_when_present():
    opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = rng.random(tuple(rng.integers(1, 12, 2)))
        r, c = opt.linear_sum_assignment(w, maximize=True)
        assert sum(w[i, j] for i, j in max_weight_assignment(w)) == pytest.approx(w[r, c].sum())
    assert max_weight_assignment(np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="2-D"):
        max_weight_assignment(np.zeros(3))


# -- pairing rules ----------------------------------------------------------------------------------------

def test_each_face_goes_to_its_own_person():
    people = np.array([[0, 0, 100, 300], [80, 0, 180, 300]])  # two people side by side, overlapping
    faces = np.array([[110, 10, 150, 50], [30, 10, 70, 50]])  # listed in the other order
    assert pair_faces(people, faces) == ([1, 0], [])


def test_optimal_not_greedy():
    # greedy on the best pair would give face 0 to person 0 and leave face 1 (only inside person 0) unpaired
    people = np.array([[0, 0, 100, 200], [50, 0, 150, 200]])
    faces = np.array([[52, 10, 98, 50], [5, 10, 45, 50]])
    face_to_person, lonely = pair_faces(people, faces)
    assert face_to_person == [1, 0] and lonely == []


def test_lone_face_lone_body_and_a_grazing_face():
    people = np.array([[0, 0, 100, 300], [300, 0, 400, 300]])
    faces = np.array([[20, 10, 60, 50],      # inside person 0
                      [600, 10, 640, 50],    # inside nobody -> face-only person
                      [390, 10, 430, 50]])   # only a quarter inside person 1 -> not theirs
    face_to_person, lonely = pair_faces(people, faces)
    assert face_to_person == [0, None, None] and lonely == [1]
    # the reference's any-overlap rule would pair the grazing face
    assert pair_faces(people, faces, min_face_inside=0.0)[0] == [0, None, 1]


def test_two_faces_in_one_body_box():
    people = np.array([[0, 0, 200, 300]])
    faces = np.array([[10, 10, 30, 30], [60, 10, 140, 90]])  # the bigger face overlaps the box more
    assert pair_faces(people, faces) == ([None, 0], [])
    assert pair_faces(np.zeros((0, 4)), faces) == ([None, None], [])
    assert pair_faces(people, np.zeros((0, 4))) == ([], [0])


# -- body crops -------------------------------------------------------------------------------------------

def test_body_crop_letterboxes_and_masks_other_people():
    img = np.full((400, 400, 3), 200, np.uint8)
    chip = body_crop(img, (100, 0, 200, 400), 224)  # 1:4 tall box
    assert chip.shape == (224, 224, 3)
    assert chip[:, :80].max() == 0 and chip[:, 144:].max() == 0 and chip[:, 90:134].min() == 200  # bars, not squashed
    other = np.array([[150, 150, 300, 250]])  # reaches into the right half, mid-height
    masked = body_crop(img, (100, 0, 200, 400), 400, other)
    visible = body_visible_mask((100, 0, 200, 400), other, 400, 400)
    assert visible.shape == (400, 100) and not visible[150:250, 50:].any()
    assert visible[:150].all() and visible[250:].all() and visible[:, :50].all()
    # letterboxed at x 150..250: the crop's right half (x 200..250) is masked at those rows
    assert masked[150:250, 200:250].max() == 0 and masked[150:250, 150:200].min() == 200 and masked[300:, 150:250].min() == 200
    with pytest.raises(CropError, match="empty"):
        body_crop(img, (500, 0, 600, 100), 224)


def test_mask_near_the_edge_snaps_to_it():
    # a box starting 20% into the crop (< EDGE_SNAP) is extended to the crop's left edge
    v = body_visible_mask((0, 0, 100, 100), [[20, 40, 60, 60]], 200, 200)
    assert EDGE_SNAP == 0.3 and not v[40:60, :20].any() and v[40:60, 60:].all()
    # a face box is a mask like any other: no snapping inside from far away
    v = body_visible_mask((0, 0, 100, 100), [[40, 40, 60, 60]], 200, 200)
    assert v[40:60, :40].all() and not v[40:60, 40:60].any()


def test_drop_rules():
    shape = (400, 400, 3)
    assert body_crop_problem(shape, (0, 0, 49, 200)) == f"body crop under {MIN_BODY_SIDE} px (49x200)"
    assert body_crop_problem(shape, (0, 0, 60, 200)) is None
    # another person covers 70% of this one
    problem = body_crop_problem(shape, (100, 0, 200, 400), [[100, 0, 170, 400]])
    assert problem is not None and "visible" in problem and "< 40%" in problem
    assert body_crop_problem(shape, (100, 0, 200, 400), [[100, 0, 150, 400]]) is None  # 50% left


# -- persons from detections on a composited scene --------------------------------------------------------

def _det(box, score=0.99):
    x0, y0, x1, y1 = box
    lm = np.array([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)], [x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0)],
                   [(x0 + x1) / 2, y0 + 0.6 * (y1 - y0)], [x0 + 0.35 * (x1 - x0), y0 + 0.8 * (y1 - y0)],
                   [x0 + 0.65 * (x1 - x0), y0 + 0.8 * (y1 - y0)]], np.float32)
    return Detection(np.array(box, np.float32), score, lm)


def _person(box, score=0.9):
    return PersonDetection(np.array(box, np.float32), score)


def test_person_units_cover_every_rule():
    """A scene with: a person with a face (face+body), a person turned away (body), a face with no body
    found (face), a person too small for a body crop (face only), and a tiny person with no face (no input)."""
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (480, 800, 3)).astype(np.uint8)
    faces = [_det((40, 20, 100, 80)), _det((600, 30, 640, 70)), _det((705, 300, 725, 320))]
    people = [_person((20, 10, 180, 470)), _person((160, 10, 320, 470)), _person((700, 295, 740, 330)),
              _person((400, 400, 430, 440))]
    units = person_units(img, faces, people, 224)
    got = [(u.result.inputs, u.result.person_box is not None, u.result.face_box is not None, u.result.note) for u in units]
    assert got == [("face+body", True, True, None), ("body", True, False, None),
                   ("face", True, True, "body crop under 50 px (40x35)"),
                   ("body", True, False, "body crop under 50 px (30x40)"), ("face", False, True, None)]
    both, back = units[0], units[1]
    assert both.face.shape == (200, 200, 3) and both.body.shape == (224, 224, 3)
    # the neighbour's box (x 160..320) is blacked out in the first person's crop, not the person's own face
    s = 224 / 460  # the 160x460 box letterboxed into 224 px
    ox = (224 - round(160 * s)) // 2
    assert both.body[:, ox + int(142 * s):ox + round(160 * s) - 1].max() == 0  # crop x 140..160, whole height
    assert both.body[int(15 * s):int(65 * s), ox + int(25 * s):ox + int(75 * s)].min() > 0  # own face stays
    assert back.face is None and units[3].body is None and units[3].face is None


def test_a_paired_person_box_grows_to_hold_the_face():
    img = np.zeros((300, 300, 3), np.uint8)
    units = person_units(img, [_det((100, 20, 160, 80))], [_person((90, 50, 200, 290))], 64)
    assert units[0].result.person_box == (90.0, 20.0, 200.0, 290.0)


# -- the interval widens as inputs drop ---------------------------------------------------------------

def test_interval_widens_with_fewer_inputs():
    out = {"age": np.array([30.0, 60.0])}
    face_record = {"q": 10.0}  # every face model's record: fitted on faces
    lo, hi = age_interval(out, face_record, (0, 100), inputs="face")
    np.testing.assert_allclose(hi - lo, [20, 20])  # a face model on faces: unchanged
    lo, hi = age_interval(out, face_record, (0, 100), inputs="body")
    np.testing.assert_allclose(hi - lo, 20 * INPUT_WIDTH["body"] / INPUT_WIDTH["face"])
    pair_record = {"q": 8.0, "inputs": "face+body"}
    widths = [np.diff(age_interval(out, pair_record, (0, 200), inputs=k), axis=0)[0, 0] for k in ("face+body", "face", "body")]
    assert widths[0] == pytest.approx(16) and widths[0] < widths[1] < widths[2]
    per_input = {"q": 8.0, "inputs": "face+body", "by_inputs": {"body": {"q": 15.0}}}
    assert np.diff(age_interval(out, per_input, (0, 200), inputs="body"), axis=0)[0, 0] == pytest.approx(30)
    with pytest.raises(ValueError, match="inputs must be one of"):
        age_interval(out, face_record, (0, 100), inputs="hands")


# -- the Predictor, writers and CLI in person mode --------------------------------------------------------

@pytest.fixture(scope="module")
def two_people_photo(tmp_path_factory):
    """The astronaut twice in one photo, side by side: two people, two faces."""
    import cv2

    rgb = load_rgb(example_photo_path())
    canvas = np.empty((480, 960, 3), np.uint8)
    canvas[:] = np.linspace(60, 200, 960, dtype=np.uint8)[None, :, None]
    paste_person(canvas, rgb, (20, 60, 440, 480))
    paste_person(canvas, rgb[:, ::-1], (500, 60, 920, 480))
    path = tmp_path_factory.mktemp("persons") / "two.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def person_predictor(bundled_model_file):
    from agekit import Predictor

    return Predictor(bundled_model_file, persons=True, threads=1)


def test_predictor_person_mode(person_predictor, two_people_photo, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((240, 320, 3), 127, np.uint8))
    res, broken, empty = person_predictor.predict([two_people_photo, bad, blank])
    assert [p.inputs for p in res.persons] == ["face", "face"]  # a face-only model uses the face of each pair
    for p in res.persons:
        assert p.person_box is not None and p.face_box is not None and 15 < p.age < 50 and p.gender in ("female", "male")
        assert p.age_low < p.age < p.age_high
    # the same faces as face mode, the same estimates
    from agekit import Predictor

    faces = Predictor(person_predictor.model_path, threads=1).predict(two_people_photo)[0].faces
    assert sorted(round(f.age, 3) for f in faces) == sorted(round(p.age, 3) for p in res.persons)
    assert broken.error is not None and broken.persons == [] and "\n" not in broken.status
    assert empty.status == "no person detected" and empty.persons == []
    d = res.to_dict()
    assert "faces" not in d and set(d["persons"][0]) == {"person_box", "face_box", "inputs", "score", "age", "age_low",
                                                         "age_high", "gender", "gender_prob", "note"}


def test_body_only_person_says_the_model_has_no_body_input(bundled_model_file):
    from agekit import Predictor

    pred = Predictor(bundled_model_file, crops="person", threads=1)
    assert pred.persons
    (res,) = pred.predict(example_photo_path())
    (p,) = res.persons
    assert (p.inputs, p.age, p.face_box, p.person_box) == ("body", None, None, (0.0, 0.0, 512.0, 512.0))
    assert p.note == "no model input for body (this model takes faces only)"
    assert p.label.startswith("- body: no model input for body")


def test_face_crops_skip_detection(bundled_model_file, tmp_path):
    import cv2

    from agekit import Predictor

    chip = load_rgb(example_photo_path())[40:240, 130:330]  # roughly her face, as a crop
    path = tmp_path / "chip.png"
    cv2.imwrite(str(path), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
    (face_mode,) = Predictor(bundled_model_file, crops="face", threads=1).predict(path)
    assert face_mode.persons is None and len(face_mode.faces) == 1 and face_mode.faces[0].box == (0.0, 0.0, 200.0, 200.0)
    assert face_mode.faces[0].landmarks == () and 5 < face_mode.faces[0].age < 80
    with open_writer(tmp_path / "r.json") as w:
        w.write(face_mode)
    assert "NaN" not in (tmp_path / "r.json").read_text()
    (person_mode,) = Predictor(bundled_model_file, crops="face", persons=True, threads=1).predict(path)
    (p,) = person_mode.persons
    assert p.inputs == "face" and p.person_box is None and p.age == pytest.approx(face_mode.faces[0].age)
    with pytest.raises(ValueError, match="crops must be one of face, person"):
        Predictor(bundled_model_file, crops="body")


def test_writers_in_person_mode(tmp_path):
    people = [PersonResult((0, 0, 10, 20), (1, 1, 5, 5), "face+body", 0.9, 30.0, 20.0, 40.0, "male", 0.8),
              PersonResult((20, 0, 30, 20), None, "body", 0.7, note="no model input for body")]
    res = ImageResult("a.jpg", "a.jpg", 40, 20, persons=people)
    none = ImageResult("b.jpg", "b.jpg", 40, 20, persons=[])
    for suffix in (".json", ".csv"):
        with open_writer(tmp_path / f"r{suffix}", persons=True) as w:
            w.write(res)
            w.write(none)
    records = json.loads((tmp_path / "r.json").read_text())
    assert records[0]["persons"][1] == {"person_box": [20, 0, 30, 20], "face_box": None, "inputs": "body", "score": 0.7,
                                        "age": None, "age_low": None, "age_high": None, "gender": None,
                                        "gender_prob": None, "note": "no model input for body"}
    assert records[1]["status"] == "no person detected" and "faces" not in records[0]
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert list(rows[0]) == PERSON_CSV_COLUMNS
    assert (rows[0]["inputs"], rows[0]["age"], rows[0]["face_x0"], rows[1]["face_x0"], rows[1]["age"]) == \
        ("face+body", "30.0", "1", "", "")
    assert rows[2]["status"] == "no person detected"
    # face mode keeps its schema: no persons key
    assert "persons" not in ImageResult("c.jpg").to_dict()


def test_cli_persons(two_people_photo, tmp_path, bundled_model_file):
    from typer.testing import CliRunner

    from agekit.cli.main import app

    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["predict", str(two_people_photo), "--persons", "--out", str(out), "--draw",
                                 str(tmp_path / "drawn"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "inputs" in r.output and "2 person(s)" in r.output
    (rec,) = json.loads(out.read_text())
    assert len(rec["persons"]) == 2 and (tmp_path / "drawn" / "two.jpg").is_file()
    r = CliRunner().invoke(app, ["predict", str(two_people_photo), "--crops", "bodies"])
    assert r.exit_code == 2 and "--crops 'bodies': use 'face' or 'person'" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_person_mode_defaults_to_the_shipped_face_body_model(two_people_photo):
    """Person mode without --model runs the bundled MiVOLO face+body model (in ONNX Runtime, parity-checked on
    first use): people with a face get face+body, a person crop alone (--crops person) still gets an age, and
    the interval is the calibration record's own for each input combination (wider from the body alone)."""
    from agekit import Predictor
    from agekit.runtime import bundled_person_model_path

    assert bundled_person_model_path().is_file()
    pred = Predictor(persons=True, threads=1)
    assert pred.cfg.name == "mivolo_lite0x2_128" and pred.backend_name == "onnx"
    (res,) = pred.predict(two_people_photo)
    assert [p.inputs for p in res.persons] == ["face+body", "face+body"]
    for p in res.persons:
        assert 15 < p.age < 60 and p.age_low < p.age < p.age_high and p.gender in ("female", "male")
    (crop,) = Predictor(crops="person", threads=1).predict(example_photo_path())
    (body,) = crop.persons
    assert body.inputs == "body" and body.note is None and body.age_low < body.age < body.age_high
    by_inputs = pred.runner.calibration["by_inputs"]
    assert by_inputs["body"]["q"] > 0 and by_inputs["face+body"]["q"] > 0
    assert body.age_high - body.age_low > min(p.age_high - p.age_low for p in res.persons)
