"""Longer checks on the real UTKFace data (run with: python -m pytest -m slow).

They re-measure the bundled model's published figures, so a change that silently hurts accuracy
(preprocessing, alignment, weights loading) fails here even when the fast suite passes.
"""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_bundled_model_meets_the_bar_on_the_test_split(bundled_model_file, utkface_root, tmp_path):
    from agekit.evaluation.evaluate import evaluate

    res = evaluate(bundled_model_file, data="utkface", split="test", root=utkface_root, cache_dir=tmp_path / "cache",
                   work_dir=tmp_path / "work")
    m = res.results["metrics"]
    assert m["mae"]["value"] <= 4.9
    assert m["gender_acc"]["value"] >= 0.92
    assert m["mae"]["n"] == 2310


def test_photo_pipeline_mae_stays_close_to_crop_mae(bundled_model_file, utkface_root):
    from agekit import Predictor
    from agekit.data.datasets import resolve_manifest
    from agekit.evaluation.pipeline_check import run_pipeline_check

    df = resolve_manifest("utkface", str(utkface_root), None, "default")
    df = df[df["split"] == "test"].reset_index(drop=True)
    check, _ = run_pipeline_check(Predictor(bundled_model_file, backend="onnx"), df, n=200)
    assert check.detected >= 0.98 * check.n
    assert check.mae_photos - check.mae_crops_on_detected < 1.0
