"""Int8 ONNX (ONNX Runtime static quantisation): its own row in the format table, its runner, calibration on
real crops, parity within the int8 tolerance, and the CLI paths (export, predict --backend, eval --backend)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.evaluation.parity import check_parity, parity_inputs
from agekit.export.formats import INT8_PARITY, ExportError, export_model, format_for_path, get_format
from agekit.export.quantize import float_nodes
from agekit.inference.defaults import example_photo_path
from agekit.runtime import ModelFileError, load_runner


@pytest.fixture(scope="module")
def int8_file(bundled_model_file: Path, calib_chips: Path, tmp_path_factory) -> Path:
    ref = load_runner(bundled_model_file, "torch")
    calib, source = parity_inputs(calib_chips, ref.cfg, n=24)
    out = tmp_path_factory.mktemp("int8") / "bundled.int8.onnx"
    return export_model(bundled_model_file, "onnx-int8", out, calibration=calib, calibration_source=source).path


def test_int8_rows_are_in_the_table():
    for name, suffix, float_name in (("onnx-int8", ".int8.onnx", "onnx"), ("tflite-int8", ".int8.tflite", "tflite")):
        row = get_format(name)
        assert row.calibrated and row.parity == INT8_PARITY and row.runner == get_format(float_name).runner
        assert format_for_path(f"m{suffix}") is row and format_for_path(f"m.{float_name}").name == float_name
        assert not row.from_torch  # an int8 file needs calibration crops: made by `agekit export`, never on the fly


def test_int8_export_needs_calibration_and_a_file(random_model_file, tmp_path):
    with pytest.raises(ExportError, match="needs calibration inputs"):
        export_model(random_model_file, "onnx-int8", tmp_path / "m.int8.onnx")
    with pytest.raises(ModelFileError, match="agekit export .* --format onnx-int8"):
        load_runner(random_model_file, "onnx-int8")
    r = CliRunner().invoke(app, ["export", str(random_model_file), "--format", "onnx-int8", "--calib-data", "random"])
    assert r.exit_code != 0 and "int8 calibration needs real face crops" in r.output


def test_float_nodes_are_the_first_layer_and_the_head(random_model_file, tmp_path):
    """Chosen by the graph's shape: up to the first convolution, and everything after the global pooling."""
    from agekit.export.onnx import export_onnx
    from agekit.models import load_model

    model, cfg, _ = load_model(random_model_file)
    graph = onnx.load(str(export_onnx(model, cfg, tmp_path / "f.onnx"))).graph
    keep = float_nodes(graph)
    ops = [n.op_type for n in graph.node if n.name in keep]
    assert ops[0] == "Conv" and ops.count("Conv") == 1 and "Gemm" in ops and "Sigmoid" in ops
    assert graph.node[0].name in keep and graph.node[-1].name in keep
    assert len(keep) < len(graph.node) / 4  # the backbone is quantised


def test_bundled_int8_onnx_parity_and_metadata(bundled_model_file, int8_file, utkface_subset):
    ref = load_runner(bundled_model_file, "torch")
    q = load_runner(int8_file, threads=1)
    assert q.backend == "onnx-int8" and load_runner(int8_file, "onnx").backend == "onnx-int8"
    rec = json.loads(q.metadata["quantization"])
    assert rec["calibration_crops"] == 24 and "24 images" in rec["calibration_data"] and rec["float_nodes"]
    assert q.calibration == ref.calibration  # the age interval record is carried as in the float export
    assert int8_file.stat().st_size < 0.5 * bundled_model_file.stat().st_size
    n_qdq = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8_file)).graph.node)
    assert n_qdq > 30
    x, source = parity_inputs(utkface_subset, ref.cfg, n=32)
    age_tol, mean_tol, prob_tol = INT8_PARITY
    rep = check_parity(ref, q, x, source, age_tolerance=age_tol, prob_tolerance=prob_tol, mean_age_tolerance=mean_tol)
    assert rep.passed, rep
    assert rep.max_age_diff > 1e-4  # it really runs int8 arithmetic


def test_int8_backend_in_predict_and_eval(int8_file, utkface_subset, tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["predict", str(example_photo_path()), "--model", str(int8_file), "--backend",
                                 "onnx-int8", "--threads", "1", "--out", str(out)])
    assert r.exit_code == 0 and "onnx-int8)" in r.output, r.output
    [face] = json.loads(out.read_text())[0]["faces"]
    assert abs(face["age"] - 29.91) < 3 and face["gender"] == "male"  # the float model: 29.91, male
    from agekit.data.adapters.utkface import utkface_manifest

    manifest = tmp_path / "m.csv"
    utkface_manifest(utkface_subset).assign(split="test").to_csv(manifest, index=False)
    r = CliRunner().invoke(app, ["eval", str(int8_file), "--data", str(manifest), "--backend", "onnx-int8",
                                 "--out", str(tmp_path / "ev"), "--n-boot", "20", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["metrics"]["mae"]["n"] == 60 and np.isfinite(res["metrics"]["mae"]["value"])
