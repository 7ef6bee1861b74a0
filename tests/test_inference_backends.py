"""Torch and ONNX backends: same numbers, cached export, clear errors for bad model files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agekit.export.onnx import export_onnx
from agekit.inference.backends import ModelFileError, OnnxBackend, TorchBackend, load_backend


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def backends(random_model_file, cache_dir):
    return TorchBackend(random_model_file), OnnxBackend(random_model_file, threads=1, cache_dir=cache_dir)


def test_onnx_matches_torch(backends):
    torch_b, onnx_b = backends
    assert onnx_b.cfg == torch_b.cfg and onnx_b.outputs == torch_b.outputs == ("age", "gender_logit")
    x = np.random.default_rng(0).normal(size=(7, *torch_b.cfg.input_size)).astype(np.float32)
    a, b = torch_b(x), onnx_b(x)
    assert a["age"].shape == b["age"].shape == (7,)
    np.testing.assert_allclose(a["age"], b["age"], atol=0.05)
    np.testing.assert_allclose(a["gender_logit"], b["gender_logit"], atol=1e-3)
    assert b["age"].dtype == np.float32


def test_onnx_export_is_cached_and_self_describing(random_model_file, cache_dir, backends):
    _, onnx_b = backends
    files = list((cache_dir / "onnx").glob("*.onnx"))
    assert files == [onnx_b.path]
    mtime = onnx_b.path.stat().st_mtime_ns
    again = OnnxBackend(random_model_file, threads=1, cache_dir=cache_dir)
    assert again.path == onnx_b.path and again.path.stat().st_mtime_ns == mtime  # reused, not re-exported
    direct = load_backend(onnx_b.path, "onnx", threads=1)  # the .onnx file on its own
    meta = direct.runner.metadata
    assert json.loads(meta["agekit_cfg"])["name"] == "mobileagenet_lite0" and direct.cfg == onnx_b.cfg


def test_export_onnx_writes_dynamic_batch(random_model_file, tmp_path):
    from agekit.models import load_model

    model, cfg, _ = load_model(random_model_file)
    path = export_onnx(model, cfg, tmp_path / "sub" / "m.onnx", opset=17)
    b = OnnxBackend(path, threads=1)
    for n in (1, 3):
        assert b(np.zeros((n, *cfg.input_size), np.float32))["age"].shape == (n,)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.onnx"]  # no temp files left


def test_bad_model_files_give_one_line_errors(tmp_path, random_model_file):
    with pytest.raises(ModelFileError, match="model file not found: .*nope.safetensors"):
        load_backend(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="model file not found"):
        load_backend(tmp_path / "nope.onnx", "onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="cannot load ONNX model") as e:
        load_backend(junk, "onnx")
    assert "\n" not in str(e.value)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="cannot read weights file"):
        load_backend(junk_st, "torch")
    with pytest.raises(ModelFileError, match="use backend='onnx'"):
        load_backend(junk, "torch")
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        load_backend(random_model_file, "tf")


def test_onnx_without_agekit_metadata_is_rejected(random_model_file, tmp_path):
    import onnx

    from agekit.models import load_model

    model, cfg, _ = load_model(random_model_file)
    path = export_onnx(model, cfg, tmp_path / "m.onnx", opset=17)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="no agekit metadata"):
        OnnxBackend(path, threads=1)
