"""TFLite export through litert-torch (optional dependency: skipped where it is not installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from agekit.evaluation.parity import check_parity  # noqa: E402
from agekit.export.formats import export_model  # noqa: E402
from agekit.runtime import load_runner  # noqa: E402


def test_tflite_export_parity_and_metadata(random_model_file: Path, tmp_path: Path):
    res = export_model(random_model_file, "tflite", tmp_path / "m.tflite")
    assert res.path.is_file() and (tmp_path / "m.tflite.json").is_file()
    runner = load_runner(res.path, threads=1)
    ref = load_runner(random_model_file)
    assert runner.backend == "tflite"
    assert runner.cfg.input_size == ref.cfg.input_size and runner.cfg.mean == ref.cfg.mean
    x = np.random.default_rng(0).standard_normal((3, *ref.cfg.input_size)).astype(np.float32)
    rep = check_parity(ref, runner, x, "random", age_tolerance=1e-3, prob_tolerance=1e-4)
    assert rep.passed, rep
    out = runner(x)  # whole outputs per image, not element [0] of each
    assert out["age"].shape == (3,) and out["gender_logit"].shape == (3,)
