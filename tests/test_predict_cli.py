"""`agekit predict` through Typer's CliRunner: folders with good and bad files, JSON/CSV/drawings, exit codes."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.inference.defaults import example_photo_path

runner = CliRunner()


def predict(*args) -> object:
    return runner.invoke(app, ["predict", *map(str, args)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two good photos, one without a face, and three bad files."""
    d = tmp_path_factory.mktemp("photos")
    shutil.copy(example_photo_path(), d / "astronaut.jpg")
    Image.open(example_photo_path()).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "mirrored.png")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(d / "wall.png")
    (d / "notes.jpg").write_text("a text file with an image name")
    (d / "broken.jpg").write_bytes(example_photo_path().read_bytes()[:3000])
    (d / "zero.png").write_bytes(b"")
    (d / "readme.txt").write_text("ignored: not an image extension")
    return d


GOOD, NOFACE, BAD = {"astronaut.jpg", "mirrored.png"}, {"wall.png"}, {"notes.jpg", "broken.jpg", "zero.png"}


def test_folder_run_writes_json_and_drawings(photos, random_model_file, tmp_path):
    out, draw = tmp_path / "res.json", tmp_path / "drawn"
    r = predict(photos, "--model", random_model_file, "--out", out, "--draw", draw, "--batch-size", 2, "--threads", 1)
    assert r.exit_code == 0, r.output
    records = {rec["name"]: rec for rec in json.loads(out.read_text())}
    assert set(records) == GOOD | NOFACE | BAD
    for name in GOOD:
        rec = records[name]
        assert rec["status"] == "ok" and rec["error"] is None and len(rec["faces"]) == 1
        face = rec["faces"][0]
        assert set(face) == {"box", "landmarks", "score", "age", "age_low", "age_high", "gender", "gender_prob"}
        assert face["age_low"] is None and face["age_high"] is None  # an uncalibrated model: no interval
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["gender"] in ("male", "female")
    assert records["wall.png"]["status"] == "no face detected" and records["wall.png"]["faces"] == []
    for name in BAD:
        assert records[name]["error"] and records[name]["faces"] == []
    assert "not an image file" in records["notes.jpg"]["status"]
    assert "truncated" in records["broken.jpg"]["status"]
    # one line per skipped file, a table row per face, a summary
    for name in BAD:
        assert f"skipped {photos / name}:" in r.output
    assert "astronaut.jpg" in r.output and "no face detected" in r.output
    assert "6 image(s): 2 face(s), 1 without a face, 3 skipped" in r.output
    # drawings for every readable image, same names, same size as the input
    assert {p.name for p in draw.iterdir()} == GOOD | NOFACE
    drawn = np.asarray(Image.open(draw / "astronaut.jpg"))
    assert drawn.shape == (512, 512, 3)
    assert np.abs(drawn.astype(int) - np.asarray(Image.open(example_photo_path()))).max() > 100  # something drawn


def test_folder_run_writes_csv(photos, random_model_file, tmp_path):
    out = tmp_path / "res.csv"
    r = predict(photos, "--model", random_model_file, "--out", out, "--quiet", "--no-tta", "--min-score", 0.5)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert {row["image"] for row in rows} == GOOD | NOFACE | BAD and len(rows) == 6
    face_rows = [row for row in rows if row["status"] == "ok"]
    assert {row["image"] for row in face_rows} == GOOD
    for row in face_rows:
        assert row["gender"] in ("male", "female") and float(row["left_eye_x"]) > 0
    # the same numbers as the API (no TTA here), and gender_prob = P(reported gender)
    import agekit

    [api] = agekit.Predictor(random_model_file, flip_tta=False, min_score=0.5, threads=1).predict(photos / "astronaut.jpg")
    [row] = [row for row in face_rows if row["image"] == "astronaut.jpg"]
    f = api.faces[0]
    assert float(row["age"]) == pytest.approx(f.age, abs=0.01) and row["gender"] == f.gender
    assert float(row["gender_prob"]) == pytest.approx(f.gender_prob, abs=1e-4)
    assert "┃" not in r.output  # --quiet: no table


def test_drawing_into_the_input_folder_never_overwrites_inputs(random_model_file, tmp_path):
    shutil.copy(example_photo_path(), tmp_path / "astronaut.jpg")
    before = (tmp_path / "astronaut.jpg").read_bytes()
    r = predict(tmp_path, "--model", random_model_file, "--draw", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "astronaut.jpg").read_bytes() == before and (tmp_path / "astronaut_1.jpg").is_file()


def test_glob_and_several_arguments(photos, random_model_file, tmp_path):
    out = tmp_path / "r.jsonl"
    r = predict(str(photos / "*.png"), photos / "astronaut.jpg", photos / "gone.jpg", "--model", random_model_file, "--out", out)
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [rec["name"] for rec in lines] == ["mirrored.png", "wall.png", "zero.png", "astronaut.jpg", "gone.jpg"]
    assert lines[-1]["status"] == "file not found"


def test_bad_paths_and_options_exit_nonzero(photos, random_model_file, tmp_path):
    r = predict(tmp_path / "nowhere", "--model", random_model_file)
    assert r.exit_code == 2 and "input not found" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = predict(empty, "--model", random_model_file)
    assert r.exit_code == 2 and "no images in folder" in r.output
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    (bad_only / "x.jpg").write_text("nope")
    r = predict(bad_only, "--model", random_model_file)
    assert r.exit_code == 1 and "no image could be read" in r.output
    r = predict(photos, "--model", random_model_file, "--out", tmp_path / "r.xlsx")
    assert r.exit_code == 2 and ".json, .jsonl or .csv" in r.output
    r = predict(photos, "--model", tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "model file not found" in r.output
    r = predict(photos, "--model", random_model_file, "--backend", "tf")
    assert r.exit_code == 2 and "unknown backend" in r.output


def test_readme_example_with_random_model(random_model_file, tmp_path, monkeypatch):
    """`agekit predict <bundled astronaut.jpg>`, always runnable: any model file, both backends."""
    monkeypatch.setenv("AGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    for backend in ("torch", "onnx"):
        r = predict(example_photo_path(), "--model", random_model_file, "--backend", backend)
        assert r.exit_code == 0, r.output
        assert "astronaut.jpg" in r.output and "1 image(s): 1 face(s)" in r.output


def test_readme_example_with_bundled_model(bundled_model_file, tmp_path):
    out = tmp_path / "r.json"
    r = predict(example_photo_path(), "--out", out)
    assert r.exit_code == 0, r.output
    [rec] = json.loads(out.read_text())
    face = rec["faces"][0]
    # Eileen Collins was born 1956; the NASA portrait is from the 1990s (she was ~35-42)
    assert 20 < face["age"] < 65 and face["gender"] == "male", face  # the v2 model's (wrong) answer, as the README shows
