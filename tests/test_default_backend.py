"""The default runtime: agekit weights run in ONNX Runtime, exported once into the user cache and checked
against PyTorch there; PyTorch with a one-line warning when that fails; `--backend torch` stays."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import agekit
from agekit.cli.main import app
from agekit.inference.backend import default_runner
from agekit.inference.defaults import DEFAULT_BACKEND, example_photo_path
from agekit.runtime.cache import cache_path, cache_record


def _files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def test_default_is_onnx_exported_once_and_checked(random_model_file, tmp_path):
    cache = tmp_path / "cache"
    assert DEFAULT_BACKEND == "onnx"
    p = agekit.Predictor(random_model_file, threads=1, cache_dir=cache)
    assert p.backend_name == "onnx" and p.model_path == random_model_file
    onnx_file = cache_path(random_model_file, "onnx", cache)
    assert p.runner.path == onnx_file and onnx_file.is_file()
    rec = cache_record(onnx_file)
    assert rec["passed"] and rec["max_age_diff"] < 0.1 and "astronaut.jpg" in rec["source"] and rec["n"] >= 8
    stamps = {f: f.stat().st_mtime_ns for f in _files(cache)}
    again = agekit.Predictor(random_model_file, threads=1, cache_dir=cache)  # second run: nothing exported or checked
    assert again.backend_name == "onnx" and {f: f.stat().st_mtime_ns for f in _files(cache)} == stamps
    # and it answers what PyTorch answers on the photo
    torch_p = agekit.Predictor(random_model_file, backend="torch", threads=1)
    a, b = again.predict(example_photo_path())[0].faces[0], torch_p.predict(example_photo_path())[0].faces[0]
    assert torch_p.backend_name == "torch" and abs(a.age - b.age) < 0.1 and a.gender == b.gender


def test_a_replaced_model_file_gets_a_new_export(random_model_file, tmp_path):
    """The cache is keyed by the file's bytes: same name, new weights -> a new export."""
    from agekit.models import load_model, save_weights

    cache, model_file = tmp_path / "cache", tmp_path / "m.safetensors"
    shutil.copy(random_model_file, model_file)
    first = default_runner(model_file, threads=1, cache_dir=cache)
    model, _, meta = load_model(model_file)
    for prm in model.parameters():
        prm.data.mul_(0.5)
    save_weights(model, model_file, meta)
    second = default_runner(model_file, threads=1, cache_dir=cache)
    assert second.backend == first.backend == "onnx" and second.path != first.path
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2


def test_exported_files_and_named_backends_run_as_asked(random_model_file, tmp_path):
    cache = tmp_path / "cache"
    assert default_runner(random_model_file, "torch").backend == "torch"
    onnx_file = default_runner(random_model_file, threads=1, cache_dir=cache).path
    r = default_runner(onnx_file, threads=1)
    assert r.backend == "onnx" and r.path == onnx_file


def test_falls_back_to_torch_when_the_cache_cannot_be_written(random_model_file, tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="agekit"):
        p = agekit.Predictor(random_model_file, threads=1, cache_dir=blocker)
    assert p.backend_name == "torch" and "onnx not used" in p.runner.fallback_reason
    [line] = [r.getMessage() for r in caplog.records if r.name == "agekit"]
    assert "running lite0_random.safetensors in PyTorch" in line and "\n" not in line
    assert len(p.predict(example_photo_path())[0].faces) == 1  # and it still predicts


def test_falls_back_when_the_recorded_parity_check_failed(random_model_file, tmp_path, caplog):
    cache = tmp_path / "cache"
    onnx_file = default_runner(random_model_file, threads=1, cache_dir=cache).path
    rec_file = onnx_file.with_name(onnx_file.name + ".parity.json")
    rec = json.loads(rec_file.read_text())
    rec_file.write_text(json.dumps({**rec, "passed": False, "max_age_diff": 3.5}))  # as a failed check leaves it
    with caplog.at_level(logging.WARNING, logger="agekit"):
        r = default_runner(random_model_file, threads=1, cache_dir=cache)
    assert r.backend == "torch" and "differs from PyTorch by up to 3.5 years" in r.fallback_reason
    assert any("in PyTorch" in m.getMessage() for m in caplog.records)


def test_a_damaged_cache_file_is_exported_again(random_model_file, tmp_path):
    cache = tmp_path / "cache"
    onnx_file = default_runner(random_model_file, threads=1, cache_dir=cache).path
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])  # a cut-off copy
    r = default_runner(random_model_file, threads=1, cache_dir=cache)
    assert r.backend == "onnx" and r.path == onnx_file and onnx_file.stat().st_size > 100_000


def test_predict_cli_default_is_onnx_and_cached(random_model_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AGEKIT_CACHE_DIR", str(cache))
    run = CliRunner()
    args = ["predict", str(example_photo_path()), "--model", str(random_model_file), "--threads", "1", "--out"]
    r1 = run.invoke(app, [*args, str(tmp_path / "a.json")])
    assert r1.exit_code == 0, r1.output
    assert "onnx)" in r1.output  # the table title names the backend
    stamps = {f: f.stat().st_mtime_ns for f in _files(cache)}
    assert any(f.suffix == ".onnx" for f in stamps)
    r2 = run.invoke(app, [*args, str(tmp_path / "b.json")])
    assert r2.exit_code == 0 and {f: f.stat().st_mtime_ns for f in _files(cache)} == stamps
    r3 = run.invoke(app, [*args, str(tmp_path / "c.json"), "--backend", "torch"])
    assert r3.exit_code == 0 and "torch)" in r3.output
    a, c = (json.loads((tmp_path / f).read_text())[0]["faces"][0] for f in ("a.json", "c.json"))
    assert abs(a["age"] - c["age"]) < 0.1 and a["gender"] == c["gender"]
    assert np.allclose(a["box"], c["box"])
