"""TFLite export through litert-torch (installed by scripts/setup.sh; skipped where it is not installed):
metadata inside the file, parity in years on real UTKFace crops, `agekit predict --backend tflite`, int8."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from agekit.cli.main import app  # noqa: E402
from agekit.evaluation.parity import check_parity, parity_inputs  # noqa: E402
from agekit.export.formats import INT8_PARITY, ExportError, export_model  # noqa: E402
from agekit.export.tflite import read_tflite_metadata  # noqa: E402
from agekit.inference.defaults import example_photo_path  # noqa: E402
from agekit.runtime import ModelFileError, load_runner  # noqa: E402
from agekit.runtime.cache import cached_export  # noqa: E402


@pytest.fixture(scope="module")
def bundled_tflite(bundled_model_file: Path, tmp_path_factory) -> Path:
    """The bundled model converted once for this module, in the user cache (as `--backend tflite` does)."""
    import os

    return cached_export(bundled_model_file, "tflite", os.environ["AGEKIT_CACHE_DIR"])


def test_tflite_export_carries_metadata_and_calibration(bundled_model_file: Path, bundled_tflite: Path):
    """The metadata (the calibrated interval's record included) is inside the .tflite file, no sidecar."""
    ref = load_runner(bundled_model_file, "torch")
    assert ref.calibration  # the bundled model is calibrated (agekit calibrate)
    assert [p.name for p in bundled_tflite.parent.iterdir() if p.name.startswith(bundled_tflite.stem)] == [bundled_tflite.name]
    md = read_tflite_metadata(bundled_tflite)
    assert json.loads(md["calibration"]) == ref.calibration and json.loads(md["outputs_order"]) == ["age", "gender_logit", "age_std", "age_dist"]
    runner = load_runner(bundled_tflite, threads=1)
    assert runner.backend == "tflite" and runner.calibration == ref.calibration
    assert runner.cfg.input_size == ref.cfg.input_size and runner.cfg.mean == ref.cfg.mean
    x = np.random.default_rng(0).standard_normal((3, *ref.cfg.input_size)).astype(np.float32)
    rep = check_parity(ref, runner, x, "random", age_tolerance=1e-2, prob_tolerance=1e-3)
    assert rep.passed, rep
    out, ref_out = runner.predict(x), ref.predict(x)  # whole outputs per image, and the calibrated interval
    assert out["age"].shape == (3,) and out["gender_logit"].shape == (3,)
    np.testing.assert_allclose(out["age_low"], ref_out["age_low"], atol=1e-2)
    np.testing.assert_allclose(out["age_high"], ref_out["age_high"], atol=1e-2)


def test_a_tflite_file_without_agekit_metadata_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="x.tflite"):
        load_runner(bad)


def test_bundled_tflite_parity_in_years_on_real_crops(bundled_model_file, bundled_tflite, utkface_subset):
    """The README's mobile path: the bundled model as TFLite matches PyTorch on real UTKFace chips."""
    ref = load_runner(bundled_model_file, "torch")
    cand = load_runner(bundled_tflite, threads=1)
    x, source = parity_inputs(utkface_subset, ref.cfg, n=16)
    rep = check_parity(ref, cand, x, source)
    assert rep.n == 16 and rep.passed and rep.max_age_diff < 0.01 and rep.max_p_female_diff < 1e-3, rep
    assert cand.calibration == ref.calibration  # the interval record travels with the file


def test_predict_backend_tflite_on_the_example_photo(bundled_model_file, bundled_tflite, tmp_path):
    """`agekit predict --backend tflite` on the bundled model: converted once into the cache, same answer."""
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["predict", str(example_photo_path()), "--backend", "tflite", "--threads", "1",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "tflite)" in r.output
    [rec] = json.loads(out.read_text())
    [face] = rec["faces"]
    assert face["age"] == pytest.approx(29.91, abs=0.1) and face["gender"] == "male"  # the bundled model's answer
    assert face["age_low"] is not None and face["age_low"] < face["age"] < face["age_high"]
    r2 = CliRunner().invoke(app, ["predict", str(example_photo_path()), "--model", str(bundled_tflite), "--quiet"])
    assert r2.exit_code == 0, r2.output


@pytest.mark.slow
def test_tflite_int8_export_and_runner(bundled_model_file, utkface_subset, calib_chips, tmp_path):
    """Int8 through ai-edge-quantizer, calibrated on a few real training crops: its own row, runner and
    metadata, float input and output (first layer and head kept float), and parity within the int8 tolerance
    on real test crops (the MAE against float is `agekit eval`'s, README)."""
    ref = load_runner(bundled_model_file, "torch")
    with pytest.raises(ExportError, match="needs calibration inputs"):
        export_model(bundled_model_file, "tflite-int8", tmp_path / "m.int8.tflite")
    calib, source = parity_inputs(calib_chips, ref.cfg, n=24)
    res = export_model(bundled_model_file, "tflite-int8", tmp_path / "m.int8.tflite", calibration=calib,
                       calibration_source=source)
    runner = load_runner(res.path, threads=1)
    assert runner.backend == "tflite-int8" and json.loads(runner.metadata["quantization"])["calibration_crops"] == 24
    assert runner.calibration == ref.calibration
    assert res.size_bytes < 0.5 * (bundled_model_file.stat().st_size)  # int8 weights
    x, src = parity_inputs(utkface_subset, ref.cfg, n=16)
    age_tol, mean_tol, prob_tol = INT8_PARITY
    rep = check_parity(ref, runner, x, src, age_tolerance=age_tol, prob_tolerance=prob_tol, mean_age_tolerance=mean_tol)
    assert rep.passed and rep.mean_age_diff > 0, rep  # int8 arithmetic (not the float file), within tolerance
    md = json.loads(runner.metadata["quantization"])
    assert md["scheme"].startswith("int8 static (ai-edge-quantizer)") and md["float_ops"] > 2
    assert load_runner(res.path, "tflite").backend == "tflite-int8"  # an int8 file is still a TFLite file
