"""Evaluating age groups: group accuracy (+ CI) against the majority class, MAE to the group's range, the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.manifest import AGE_MAX, write_manifest
from agekit.evaluation.evaluate import add_group_columns, summarize
from agekit.evaluation.metrics import assign_groups, group_metrics, group_set, range_error
from agekit.evaluation.report import age_group_lines, markdown_report

PETA_GROUPS = np.array([(0, 15), (16, 30), (31, 45), (46, 60), (61, AGE_MAX)], dtype=float)


def test_group_boundaries_and_range_error():
    pred = np.array([-3, 15.4, 15.6, 30.49, 30.5, 60.6, 95.0])
    np.testing.assert_array_equal(assign_groups(pred, PETA_GROUPS), [0, 0, 1, 1, 2, 4, 4])
    lo, hi = np.full(7, 16.0), np.full(7, 30.0)
    np.testing.assert_allclose(range_error(pred, lo, hi), [18.5, 0.1, 0, 0, 0, 30.1, 64.5])
    with pytest.raises(ValueError, match="overlap"):
        group_set(np.array([16.0, 20]), np.array([30.0, 40]))
    np.testing.assert_array_equal(group_set(np.array([31, 16, 16.0]), np.array([45, 30, 30.0])), [[16, 30], [31, 45]])


def test_group_metrics_on_known_predictions():
    # 10 rows: 6 in 16-30, 3 in 31-45, 1 in 46-60; 7 predicted right
    lo = np.array([16] * 6 + [31] * 3 + [46], dtype=float)
    hi = np.array([30] * 6 + [45] * 3 + [60], dtype=float)
    pred = np.array([20, 25, 29, 30.4, 33, 14,   # 4 right; 33 is 2.5 above 30.5, 14 is 1.5 below 15.5
                     40, 44, 50,                 # 2 right; 50 is 4.5 above 45.5
                     55])                        # right
    g = group_metrics(pred, lo, hi, PETA_GROUPS, n_boot=200, seed=0)
    assert g["n"] == 10 and g["accuracy"]["value"] == pytest.approx(0.7)
    assert g["accuracy"]["ci_low"] <= 0.7 <= g["accuracy"]["ci_high"]
    assert g["majority"] == {"group": "16-30", "rate": pytest.approx(0.6)}
    assert g["beats_majority"] is False  # 10 rows: the CI is far too wide to beat 60%
    assert g["range_mae"]["value"] == pytest.approx((2.5 + 1.5 + 4.5) / 10)
    assert g["balanced_accuracy"] == pytest.approx((4 / 6 + 2 / 3 + 1) / 3)
    rows = {r["group"]: r for r in g["by_group"]}
    assert rows["16-30"]["recall"] == pytest.approx(4 / 6) and rows["61+"]["n"] == 0 and rows["61+"]["recall"] is None
    assert rows["0-15"]["predicted"] == 1 and rows["46-60"]["predicted"] == 2
    m = np.array(g["confusion"]["matrix"])
    assert g["confusion"]["labels"] == ["0-15", "16-30", "31-45", "46-60", "61+"]
    assert m.sum() == 10 and np.trace(m) == 7 and m[1, 0] == 1 and m[1, 2] == 1 and m[2, 3] == 1
    # a strong model on a large set beats the majority class beyond its CI
    rng = np.random.default_rng(0)
    lo = rng.choice([16.0, 31.0], size=400, p=[0.6, 0.4])
    hi = lo + 14
    good = np.where(rng.random(400) < 0.85, lo + 7, np.where(lo == 16, 38.0, 23.0))
    g = group_metrics(good, lo, hi, n_boot=500)
    assert g["accuracy"]["ci_low"] > g["majority"]["rate"] and g["beats_majority"] is True


def test_summarize_mixed_table_and_report_section():
    nan = np.nan
    pred = pd.DataFrame({
        "path": [f"{i}.jpg" for i in range(6)], "age": [30.0, 40.0, nan, nan, nan, nan],
        "pred": [32.0, 38.0, 20.0, 40.0, 50.0, 70.0], "gender": pd.array([0, 1, 1, 0, 1, pd.NA], dtype="Int64"),
        "p_female": [0.2, 0.8, 0.3, 0.1, 0.9, 0.5], "race": [None] * 6, "source": ["peta"] * 6,
        "age_lo": [nan, nan, 16, 31, 31, 61], "age_hi": [nan, nan, 30, 45, 45, AGE_MAX]})
    s = summarize(pred, n_boot=100, groups=PETA_GROUPS)
    assert s["metrics"]["mae"]["value"] == pytest.approx(2.0) and s["metrics"]["mae"]["n"] == 2  # exact rows only
    assert s["metrics"]["gender_acc"]["n"] == 5 and s["metrics"]["gender_acc"]["value"] == pytest.approx(4 / 5)
    g = s["age_groups"]
    assert g["n"] == 4 and g["accuracy"]["value"] == pytest.approx(0.75)  # 50 is predicted 46-60, not 31-45
    assert g["range_mae"]["value"] == pytest.approx(4.5 / 4)
    table = add_group_columns(pred, PETA_GROUPS)
    assert table["pred_group"].tolist()[2:] == ["16-30", "31-45", "46-60", "61+"]
    assert table["group"].tolist()[2:] == ["16-30", "31-45", "31-45", "61+"] and table["group"].isna().sum() == 2
    md = "\n".join(age_group_lines(g))
    assert "## Age groups" in md and "majority-class rate (31-45)" in md and "| 61+ | 1 | 100.0% |" in md
    # groups only: no exact-age metrics, a report that still renders
    only = summarize(pred.iloc[2:], n_boot=50, groups=PETA_GROUPS)
    assert only["metrics"]["mae"] is None and only["metrics"]["cs"] is None and only["by_age_bin"] == []
    r = {"model": {"path": "m", "backend": "torch", "input_size": [3, 8, 8], "tta_flip": False},
         "data": {"name": "peta", "split": "test", "n": 4, "n_unreadable": 0, "data": "peta"},
         "settings": {"ci": "95%", "n_boot": 50, "seed": 0, "cs_k": 5}, "agekit_version": "x", "created": "now",
         **only}
    text = markdown_report(r, {"predictions": "predictions.csv"})
    assert "| MAE (years) | - | - | 0 |" in text and "## Age groups (interval labels)" in text


def test_eval_cli_scores_a_manifest_with_age_groups(random_model_file: Path, tmp_path):
    """`agekit eval` end to end on chips labelled by groups (an untrained model: pipeline, not quality)."""
    from PIL import Image

    rows = []
    rng = np.random.default_rng(0)
    for i in range(12):
        px = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(px).save(tmp_path / f"{i}.jpg")
        lo, hi = PETA_GROUPS[i % 4]
        rows.append({"path": f"{i}.jpg", "age": 25.0 if i == 0 else np.nan, "gender": i % 2,
                     "age_lo": np.nan if i == 0 else lo, "age_hi": np.nan if i == 0 else hi, "split": "test"})
    from agekit.data.manifest import new_manifest

    m = write_manifest(new_manifest(rows, "chips"), tmp_path / "groups.csv")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", str(random_model_file), "--data", str(m), "--out", str(out),
                                   "--cache-dir", str(tmp_path / "cache"), "--n-boot", "50", "--no-tta"])
    assert res.exit_code == 0, res.output
    assert "age-group accuracy" in res.output and "majority class" in res.output
    r = json.loads((out / "results.json").read_text())
    assert r["age_groups"]["n"] == 11 and r["metrics"]["mae"]["n"] == 1
    assert r["age_groups"]["majority"]["rate"] == pytest.approx(3 / 11)
    pred = pd.read_csv(out / "predictions.csv")
    assert {"age_lo", "age_hi", "group", "pred_group", "range_error"} <= set(pred.columns)
    g = pred.dropna(subset=["group"])
    assert (g["range_error"] >= 0).all() and ((g["range_error"] == 0) == (g["group"] == g["pred_group"])).all()
    assert "## Age groups" in (out / "report.md").read_text()
