"""Split-conformal age intervals: the quantile, coverage, adaptive width, `agekit calibrate`, the runtime's
age_low/age_high (torch = onnx), and the interval in writers, the table, drawings and `agekit eval`."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.manifest import new_manifest, write_manifest
from agekit.evaluation.calibration import (calibration_record, conformal_quantile, conformal_scores,
                                           write_calibrated)
from agekit.inference.results import FaceResult, ImageResult
from agekit.inference.writers import CSV_COLUMNS, open_writer
from agekit.models.weights import read_metadata
from agekit.runtime.runner import Runner, age_interval

cli = CliRunner()


# -- the statistics --------------------------------------------------------------------------------

def test_finite_sample_quantile_on_known_scores():
    s = np.arange(1, 11, dtype=float)[::-1]  # 10 scores, unsorted
    assert conformal_quantile(s, 0.1) == 10.0  # ceil(11 * 0.9) = 10th smallest
    assert conformal_quantile(s, 0.2) == 9.0   # ceil(11 * 0.8) = 9th
    assert conformal_quantile(np.arange(1, 20, dtype=float), 0.1) == 18.0  # ceil(20 * 0.9) = 18th
    assert conformal_quantile(np.arange(1, 100, dtype=float), 0.1) == 90.0  # ceil(100 * 0.9) = 90th
    assert math.isinf(conformal_quantile(np.arange(5, dtype=float), 0.1))  # ceil(6 * 0.9) = 6 > n
    with pytest.raises(ValueError, match="too few"):
        calibration_record(np.zeros(5), np.ones(5))
    rec = calibration_record(np.arange(1, 11, dtype=float), np.zeros(10), data="x", split="val")
    assert rec == {"method": "split_conformal", "alpha": 0.1, "q": 10.0, "score": "abs", "data": "x",
                   "split": "val", "n": 10}


@pytest.mark.parametrize("normalized", [False, True])
def test_coverage_on_exchangeable_data_is_near_the_target(normalized: bool):
    rng = np.random.default_rng(0)
    n = 5000

    def draw():
        age = rng.uniform(1, 90, n)
        std = 1 + 0.1 * age  # heteroscedastic: older faces are harder
        return age + std * rng.standard_normal(n), age, std

    y, age, std = draw()
    rec = calibration_record(y, age, std if normalized else None, alpha=0.1)
    assert rec["score"] == ("normalized" if normalized else "abs")
    y2, age2, std2 = draw()
    lo, hi = age_interval({"age": age2, "age_std": std2}, rec, (-1e9, 1e9))
    coverage = np.mean((lo <= y2) & (y2 <= hi))
    assert abs(coverage - 0.9) <= 0.02, coverage
    if normalized:  # adaptive: the young are covered by narrower intervals than the old, both near 90%
        young, old = age2 < 30, age2 > 60
        assert (hi - lo)[young].mean() < (hi - lo)[old].mean()
        assert abs(np.mean(((lo <= y2) & (y2 <= hi))[old]) - 0.9) < 0.04


def test_normalized_scores_widen_with_age_std_and_abs_scores_do_not():
    out = {"age": np.array([40.0, 40.0, 1.0]), "age_std": np.array([1.0, 3.0, 1.0])}
    lo, hi = age_interval(out, {"q": 2.0, "score": "normalized"}, (0.0, 100.0))
    np.testing.assert_allclose(hi - lo, [4.0, 12.0, 3.0])  # the last one clipped at 0
    assert lo[2] == 0.0
    lo, hi = age_interval(out, {"q": 2.0, "score": "abs"}, (0.0, 100.0))
    np.testing.assert_allclose(hi - lo, [4.0, 4.0, 3.0])
    assert age_interval(out, None, (0.0, 100.0)) is None
    with pytest.raises(ValueError, match="age_std"):
        age_interval({"age": np.array([1.0])}, {"q": 1.0, "score": "normalized"}, (0.0, 100.0))
    s, kind = conformal_scores(np.array([10.0, 10.0]), np.array([4.0, 4.0]), np.array([2.0, 3.0]))
    assert kind == "normalized" and np.allclose(s, [3.0, 2.0])


class _Stub(Runner):
    backend = "stub"

    def __init__(self, meta):
        from agekit.models import get_model_cfg

        self.cfg, self.meta, self.path, self.output_names = get_model_cfg("mobileagenet_lite0"), meta, Path("x"), ("age",)

    def __call__(self, x):
        return {"age": x.reshape(len(x), -1).mean(1) * 0 + 50.0, "age_std": np.full(len(x), 2.0, np.float32)}


def test_runner_predict_adds_the_interval_only_when_calibrated():
    x = np.zeros((3, 3, 8, 8), np.float32)
    assert "age_low" not in _Stub({}).predict(x)
    out = _Stub({"calibration": {"q": 1.5, "score": "normalized", "alpha": 0.1}}).predict(x)
    np.testing.assert_allclose(out["age_low"], 47.0)
    np.testing.assert_allclose(out["age_high"], 53.0)
    out = _Stub({"calibration": {"q": 80.0, "score": "abs"}, "model_kwargs": {"age_range": [1, 90]}}).predict(x)
    np.testing.assert_allclose(out["age_low"], 1.0)  # clipped to the model's age range
    np.testing.assert_allclose(out["age_high"], 90.0)


# -- agekit calibrate --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chips_manifest(tmp_path_factory) -> Path:
    """40 synthetic 200x200 'chips' (noise with a gradient), ages 1-80: 28 in val, 12 in test."""
    d = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        img = (rng.random((200, 200, 3)) * (40 + 5 * i)).astype(np.uint8)
        if i % 3 == 0:
            img = np.asarray(Image.fromarray(img).resize((25, 25)).resize((200, 200)))  # blurred ones
        p = d / f"{i}.png"
        Image.fromarray(img).save(p)
        rows.append({"path": str(p), "age": float(1 + 2 * i), "gender": i % 2, "race": str(i % 4),
                     "split": "val" if i < 28 else "test"})
    return write_manifest(new_manifest(rows, "synthetic"), d / "chips.csv")


@pytest.fixture(scope="module")
def calibrated(random_model_file: Path, chips_manifest: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "cal.safetensors"
    res = cli.invoke(app, ["calibrate", str(random_model_file), "--data", str(chips_manifest), "--split", "val",
                           "--out", str(out), "--cache-dir", str(out.parent / "cache")])
    assert res.exit_code == 0, res.output
    assert "q =" in res.output
    return out


def test_calibrate_writes_the_record_and_keeps_the_tensors(calibrated: Path, random_model_file: Path):
    from safetensors.torch import load_file

    meta, before = read_metadata(calibrated), read_metadata(random_model_file)
    rec = meta["calibration"]
    assert rec["method"] == "split_conformal" and rec["alpha"] == 0.1 and rec["score"] == "abs"
    assert rec["split"] == "val" and rec["n"] == 28 and rec["data"] == "chips" and rec["q"] > 0
    assert {k: v for k, v in meta.items() if k != "calibration"} == before  # provenance kept
    a, b = load_file(str(random_model_file)), load_file(str(calibrated))
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_calibrate_refuses_to_overwrite(calibrated: Path, random_model_file: Path, chips_manifest: Path, tmp_path):
    args = ["--data", str(chips_manifest), "--cache-dir", str(tmp_path / "cache")]
    res = cli.invoke(app, ["calibrate", str(random_model_file), *args, "--out", str(random_model_file)])
    assert res.exit_code != 0 and "input model" in res.output
    res = cli.invoke(app, ["calibrate", str(random_model_file), *args, "--out", str(calibrated)])
    assert res.exit_code != 0 and "exists" in res.output
    res = cli.invoke(app, ["calibrate", str(random_model_file), *args, "--split", "test", "--out", str(tmp_path / "t.safetensors")])
    assert res.exit_code != 0 and "test split" in res.output
    with pytest.raises(FileExistsError):
        write_calibrated(random_model_file, {"q": 1.0}, random_model_file)
    # the default name sits next to the input
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(random_model_file.read_bytes())
    assert write_calibrated(copy, {"q": 1.0}).name == "m_calibrated.safetensors"


def test_intervals_agree_across_torch_and_onnx(calibrated: Path, tmp_path):
    from agekit.export.onnx import read_onnx_metadata
    from agekit.runtime import load_runner
    from agekit.runtime.onnx import cached_onnx

    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    t = load_runner(calibrated, "torch")
    o = load_runner(calibrated, "onnx", cache_dir=tmp_path)
    assert json.loads(read_onnx_metadata(cached_onnx(calibrated, tmp_path))["calibration"]) == t.calibration
    a, b = t.predict(x), o.predict(x)
    q = t.calibration["q"]
    for k in ("age_low", "age_high"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-3)
    np.testing.assert_allclose(b["age_high"] - b["age_low"],
                               np.minimum(b["age"] + q, 100) - np.maximum(b["age"] - q, 0), atol=1e-9)
    assert t.info()["calibration"] == t.calibration


# -- everywhere an age appears ---------------------------------------------------------------------

def _face(lo=24.2, hi=37.4) -> FaceResult:
    return FaceResult(box=(1, 2, 3, 4), landmarks=((0, 0),) * 5, score=0.99, age=30.3, gender="female",
                      gender_prob=0.94, age_low=lo, age_high=hi)


def test_writers_and_label_show_the_interval(tmp_path):
    assert _face().label == "30 (24-37) F 0.94"
    assert _face(None, None).label == "30 F 0.94" and _face(None, None).interval is None
    res = ImageResult(name="a.jpg", path="a.jpg", width=10, height=10, faces=[_face()])
    for suffix in (".json", ".jsonl", ".csv"):
        with open_writer(tmp_path / f"r{suffix}") as w:
            w.write(res)
    assert {"age_low", "age_high"} <= set(CSV_COLUMNS)
    with open(tmp_path / "r.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["age_low"]) == 24.2 and float(row["age_high"]) == 37.4
    face = json.loads((tmp_path / "r.json").read_text())[0]["faces"][0]
    assert face["age_low"] == 24.2 and face["age_high"] == 37.4
    assert json.loads((tmp_path / "r.jsonl").read_text())["faces"][0]["age_high"] == 37.4


def test_predict_table_csv_and_api_have_the_interval(calibrated: Path, random_model_file: Path, tmp_path):
    from agekit.inference.defaults import example_photo_path
    from agekit.inference.predictor import Predictor

    out = tmp_path / "r.csv"
    res = cli.invoke(app, ["predict", str(example_photo_path()), "-m", str(calibrated), "-o", str(out),
                           "--draw", str(tmp_path / "draw")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "interval" in res.output
    with open(out) as f:
        row = next(csv.DictReader(f))
    assert float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"])
    assert f"{float(row['age_low']):.0f}-{float(row['age_high']):.0f}" in res.output
    face = Predictor(calibrated).predict(example_photo_path())[0].faces[0]
    assert face.age_low is not None and face.age_low <= face.age <= face.age_high
    assert f"({face.interval})" in face.label
    plain = Predictor(random_model_file).predict(example_photo_path())[0].faces[0]
    assert plain.age_low is None and plain.age_high is None
    res = cli.invoke(app, ["predict", str(example_photo_path()), "-m", str(random_model_file)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "interval" not in res.output


def test_eval_reports_coverage(calibrated: Path, random_model_file: Path, chips_manifest: Path, tmp_path):
    res = cli.invoke(app, ["eval", str(calibrated), "--data", str(chips_manifest), "--split", "test",
                           "--out", str(tmp_path / "ev"), "--cache-dir", str(tmp_path / "cache"), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "ev" / "results.json").read_text())
    iv = r["interval"]
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert {"age_low", "age_high", "blur"} <= set(pred.columns)
    inside = ((pred["age_low"] <= pred["age"]) & (pred["age"] <= pred["age_high"])).mean()
    assert iv["coverage"]["value"] == pytest.approx(inside)
    assert iv["coverage"]["ci_low"] <= iv["coverage"]["value"] <= iv["coverage"]["ci_high"]
    assert iv["mean_width"]["value"] == pytest.approx((pred["age_high"] - pred["age_low"]).mean())
    assert sum(g["n"] for g in iv["by_age_bin"]) == len(pred) == 12
    assert [g["group"] for g in iv["by_blur"]] == ["blurriest third", "middle third", "sharpest third"]
    assert r["model"]["calibration"]["split"] == "val"
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Age interval" in report and "coverage" in report and "By blur" in report
    # an uncalibrated model: no interval anywhere
    plain = cli.invoke(app, ["eval", str(random_model_file), "--data", str(chips_manifest), "--split", "test",
                             "--out", str(tmp_path / "ev2"), "--cache-dir", str(tmp_path / "cache"), "--n-boot", "50"])
    assert plain.exit_code == 0, plain.output
    assert "interval" not in json.loads((tmp_path / "ev2" / "results.json").read_text())
    assert "age_low" not in pd.read_csv(tmp_path / "ev2" / "predictions.csv").columns


def test_pooled_data_calibrates_over_both(tmp_path, random_model_file: Path, chips_manifest: Path):
    """``--data a,b`` pools the splits of several datasets (each row keeps its source): one calibration
    set for two populations, and eval reports by source."""
    from agekit.data.manifest import read_manifest
    from agekit.evaluation.calibration import calibrate
    from agekit.evaluation.evaluate import load_eval_table

    df = read_manifest(chips_manifest)
    a, b = tmp_path / "a" / "first.csv", tmp_path / "b" / "second.csv"
    write_manifest(df.iloc[:20].assign(source="first"), a)
    write_manifest(df.iloc[20:].assign(source="second"), b)
    pooled, name = load_eval_table(f"{a},{b}")
    assert name == f"{a}+{b}" and len(pooled) == 40
    assert pooled["source"].value_counts().to_dict() == {"first": 20, "second": 20}
    rec = calibrate(random_model_file, f"{a},{b}", "val", cache_dir=tmp_path / "cache")
    assert rec["n"] == 28 and rec["data"] == f"{a}+{b}"
    with pytest.raises(ValueError, match="--root applies to one dataset"):
        load_eval_table(f"{a},{b}", root=tmp_path)
