"""`agekit export` from the command line: success with a parity table, and clear failures."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agekit.cli.main import app


def _run(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def test_export_missing_model_file(tmp_path: Path):
    r = _run(str(tmp_path / "nope.safetensors"))
    assert r.exit_code != 0 and "model file not found" in r.output and "Traceback" not in r.output


def test_export_unknown_format(random_model_file: Path):
    r = _run(str(random_model_file), "--format", "coreml")
    assert r.exit_code != 0 and "unknown export format 'coreml'" in r.output and "onnx" in r.output


def test_export_format_without_its_toolchain(random_model_file: Path, tmp_path: Path):
    from agekit.export.formats import get_format, missing_requirements

    if not missing_requirements(get_format("tflite")):
        pytest.skip("litert-torch is installed here")
    r = _run(str(random_model_file), "--format", "tflite", "--out", str(tmp_path / "m.tflite"))
    assert r.exit_code != 0 and "pip install litert-torch" in r.output
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.realdata
def test_export_cli_checks_parity_on_real_chips(random_model_file: Path, utkface_subset: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    r = _run(str(random_model_file), "--out", str(out), "--check-data", str(utkface_subset), "--n-check", "16")
    assert r.exit_code == 0, r.output
    assert out.is_file() and "parity onnx vs PyTorch" in r.output and "16 images from" in r.output


def test_export_cli_fails_when_parity_exceeds_tolerance(random_model_file: Path, tmp_path: Path):
    """Tolerance 0 cannot be met by float arithmetic in two runtimes: the command must exit non-zero."""
    r = _run(str(random_model_file), "--out", str(tmp_path / "m.onnx"), "--opset", "17", "--check-data", "random",
             "--n-check", "4", "--tolerance", "0", "--prob-tolerance", "0")
    assert r.exit_code == 1 and "parity check failed" in r.output
