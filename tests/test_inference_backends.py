"""The one runtime: torch / ONNX runners agree, flip TTA and P(female) live in Runner.predict only,
the format table drives load_runner, cached ONNX export, checkpoints, clear errors for bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agekit.export import formats
from agekit.export.onnx import export_onnx
from agekit.runtime import RUNNERS, ModelFileError, Runner, load_runner
from agekit.runtime.onnx import OnnxRunner, cached_onnx
from agekit.runtime.runner import reported_gender, sigmoid
from agekit.runtime.tflite import collect_outputs, output_order
from agekit.runtime.torch import TorchRunner


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def runners(random_model_file, cache_dir):
    return load_runner(random_model_file), load_runner(random_model_file, "onnx", threads=1, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def x(runners) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(7, *runners[0].cfg.input_size)).astype(np.float32)


def test_backend_from_suffix_and_name(runners):
    torch_r, onnx_r = runners
    assert type(torch_r) is TorchRunner and torch_r.backend == "torch"
    assert type(onnx_r) is OnnxRunner and onnx_r.backend == "onnx"
    assert set(RUNNERS) == {"torch", "onnx", "onnx-int8", "tflite", "tflite-int8"}
    assert RUNNERS["onnx"] == "agekit.runtime.onnx:OnnxRunner"


def test_onnx_matches_torch(runners, x):
    torch_r, onnx_r = runners
    assert onnx_r.cfg == torch_r.cfg and onnx_r.output_names == torch_r.output_names == ("age", "gender_logit")
    a, b = torch_r(x), onnx_r(x)
    assert a["age"].shape == b["age"].shape == (7,) and b["age"].dtype == np.float32
    np.testing.assert_allclose(a["age"], b["age"], atol=1e-3)
    np.testing.assert_allclose(a["gender_logit"], b["gender_logit"], atol=1e-4)
    assert onnx_r.cfg.input_size == torch_r.cfg.input_size and onnx_r.cfg.mean == torch_r.cfg.mean


@pytest.mark.parametrize("which", [0, 1], ids=["torch", "onnx"])
def test_flip_tta_and_p_female_are_computed_in_predict(runners, x, which):
    """Runner.predict = mean of __call__ on x and its mirror, plus sigmoid of the averaged gender logit."""
    r = runners[which]
    plain, mirror = r(x), r(np.ascontiguousarray(x[..., ::-1]))
    tta = r.predict(x, tta_flip=True)
    np.testing.assert_allclose(tta["age"], (plain["age"] + mirror["age"]) / 2, atol=1e-4)
    logit = (plain["gender_logit"] + mirror["gender_logit"]) / 2
    np.testing.assert_allclose(tta["gender_logit"], logit, atol=1e-4)
    np.testing.assert_allclose(tta["p_female"], 1 / (1 + np.exp(-logit.astype(np.float64))), atol=1e-5)
    # without TTA: the raw outputs, and P(female) from them
    no = r.predict(x, tta_flip=False)
    np.testing.assert_allclose(no["age"], plain["age"], atol=1e-5)
    np.testing.assert_allclose(no["p_female"], sigmoid(plain["gender_logit"]), atol=1e-6)
    assert not np.allclose(tta["age"], no["age"], atol=1e-4)  # the mirror changes something
    assert "p_female" not in plain  # __call__ is raw outputs only


def test_reported_gender_is_the_probability_of_the_reported_label():
    label, prob = reported_gender(np.array([0.9, 0.2, 0.5, np.nan]))
    assert list(label) == ["female", "male", "male", None]
    np.testing.assert_allclose(prob[:3], [0.9, 0.8, 0.5])
    assert np.isnan(prob[3])


def test_predictor_postprocess_uses_p_female():
    from agekit.inference.predictor import Predictor

    rows = Predictor.postprocess(None, {"age": np.array([30.0, 41.5]), "p_female": np.array([0.25, 0.75])}, 2)
    assert rows == [(30.0, "male", 0.75), (41.5, "female", 0.75)]
    assert Predictor.postprocess(None, {"age": np.array([7.0])}, 1) == [(7.0, None, None)]


def test_onnx_export_is_cached_and_self_describing(random_model_file, cache_dir, runners):
    _, onnx_r = runners
    files = list((cache_dir / "onnx").glob("*.onnx"))
    assert files == [onnx_r.path] and onnx_r.source_path == random_model_file
    mtime = onnx_r.path.stat().st_mtime_ns
    again = load_runner(random_model_file, "onnx", threads=1, cache_dir=cache_dir)
    assert again.path == onnx_r.path and again.path.stat().st_mtime_ns == mtime  # reused, not re-exported
    assert cached_onnx(random_model_file, cache_dir) == onnx_r.path
    direct = load_runner(onnx_r.path, threads=1)  # the .onnx file on its own, backend from the suffix
    assert json.loads(direct.metadata["agekit_cfg"])["name"] == "mobileagenet_lite0" and direct.cfg == onnx_r.cfg
    assert direct.info()["path"] == str(onnx_r.path) and onnx_r.info()["exported_onnx"] == str(onnx_r.path)


def test_lightning_checkpoint_loads_like_the_safetensors_file(random_model_file, runners, x, tmp_path):
    """A .ckpt (torch.load weights_only) gives the same model as the exported weights file."""
    from agekit.models import load_model

    model, _, _ = load_model(random_model_file)
    ckpt = {"hyper_parameters": {"config": {"model": {"name": "mobileagenet_lite0", "kwargs": {}},
                                            "data": {"batch_size": 32}}},
            "state_dict": {**{f"model.{k}": v for k, v in model.state_dict().items()},
                           "criterion.weight": torch.ones(3)},  # module state that is not the model's
            "epoch": 4}
    torch.save(ckpt, tmp_path / "last.ckpt")
    r = load_runner(tmp_path / "last.ckpt")
    assert r.backend == "torch" and r.meta["epoch"] == 4 and r.meta["train_config"]["data"]["batch_size"] == 32
    np.testing.assert_allclose(r(x)["age"], runners[0](x)["age"], atol=1e-5)


def test_export_onnx_writes_dynamic_batch(random_model_file, tmp_path):
    from agekit.models import load_model

    model, cfg, _ = load_model(random_model_file)
    path = export_onnx(model, cfg, tmp_path / "sub" / "m.onnx", opset=17)
    r = OnnxRunner(path, threads=1)
    for n in (1, 3):
        assert r(np.zeros((n, *cfg.input_size), np.float32))["age"].shape == (n,)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.onnx"]  # no temp files left


def test_bad_model_files_give_one_line_errors(tmp_path, random_model_file):
    with pytest.raises(ModelFileError, match="model file not found: .*nope.safetensors"):
        load_runner(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="model file not found"):
        load_runner(tmp_path / "nope.onnx", "onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="cannot load ONNX model") as e:
        load_runner(junk, "onnx")
    assert "\n" not in str(e.value)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="cannot read weights file"):
        load_runner(junk_st, "torch")
    junk_ckpt = tmp_path / "junk.ckpt"
    junk_ckpt.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="cannot read checkpoint") as e:
        load_runner(junk_ckpt)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="is a onnx file; use backend='onnx'"):
        load_runner(junk, "torch")
    with pytest.raises(ModelFileError, match="use backend='torch'.*--format onnx-int8"):
        load_runner(random_model_file, "onnx-int8")  # int8 needs calibration crops: not converted on the fly
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        load_runner(random_model_file, "tf")
    odd = tmp_path / "m.pb"
    odd.write_bytes(b"x")
    with pytest.raises(ModelFileError, match=r"unknown model file type '\.pb'.*\.safetensors"):
        load_runner(odd)


def test_onnx_without_agekit_metadata_is_rejected(random_model_file, tmp_path):
    import onnx

    from agekit.models import load_model

    model, cfg, _ = load_model(random_model_file)
    path = export_onnx(model, cfg, tmp_path / "m.onnx", opset=17)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="no agekit metadata"):
        load_runner(path, threads=1)


# -- one row in the format table is all a new format needs ------------------------------------------
class FakeRunner(Runner):
    """A 'format' whose file holds one number: the age it predicts for every face."""

    backend = "fake"

    def __init__(self, path, device="cpu", threads=None, **_):
        from agekit.models import get_model_cfg

        self.path, self.meta, self.cfg = Path(path), {}, get_model_cfg("mobileagenet_lite0")
        self.age = float(Path(path).read_text())
        self.output_names = ("age", "gender_logit")

    def __call__(self, x):
        n = len(x)
        # the logit depends on the image, so flip TTA has something to average
        return {"age": np.full(n, self.age, np.float32), "gender_logit": x[:, 0, 0, 0].astype(np.float32)}


def test_a_new_table_row_reaches_load_runner_and_predict(monkeypatch, tmp_path):
    monkeypatch.setitem(formats.EXPORT_FORMATS, "fake", formats.ExportFormat(
        "fake", ".fake", None, (), runner=f"{__name__}:FakeRunner", description="test format"))
    f = tmp_path / "m.fake"
    f.write_text("42.5")
    assert "fake" in RUNNERS and "fake" in formats.runner_formats()
    for r in (load_runner(f), load_runner(f, "fake")):  # by suffix and by name
        assert isinstance(r, FakeRunner)
    x = np.zeros((2, 3, 128, 128), np.float32)
    x[0, 0, 0, 0], x[0, 0, 0, -1] = 2.0, 0.0  # mirror of sample 0 has 0 at [0, 0, 0]
    out = r.predict(x, tta_flip=True)
    np.testing.assert_allclose(out["age"], [42.5, 42.5])
    np.testing.assert_allclose(out["p_female"], sigmoid(np.array([1.0, 0.0])))  # logit (2 + 0) / 2
    # and `agekit predict --backend` takes it from the table as well
    from typer.testing import CliRunner

    from agekit.cli.main import app

    res = CliRunner().invoke(app, ["predict", str(tmp_path / "none.jpg"), "--backend", "nope"])
    assert res.exit_code != 0 and "choose one of torch, onnx, onnx-int8, tflite, tflite-int8, fake" in res.output


# -- TFLite: whole outputs, not element [0] ---------------------------------------------------------
def test_tflite_output_collection_keeps_whole_outputs():
    per_image = [[np.array([[31.0]]), np.array([[0.5]]), np.array([[1.0, 2.0, 3.0]])],
                 [np.array([[45.0]]), np.array([[-1.0]]), np.array([[4.0, 5.0, 6.0]])]]
    out = collect_outputs(per_image, ["age", "gender_logit", "logits"])
    np.testing.assert_array_equal(out["age"], [31.0, 45.0])
    np.testing.assert_array_equal(out["gender_logit"], [0.5, -1.0])
    assert out["logits"].shape == (2, 3)
    np.testing.assert_array_equal(out["logits"], [[1, 2, 3], [4, 5, 6]])
    assert collect_outputs([], ["age"])["age"].shape == (0,)


def test_tflite_outputs_in_signature_order():
    details = [{"name": f"StatefulPartitionedCall:{i}", "index": 100 + i} for i in (10, 2, 0, 1)]
    assert output_order(details) == [100, 101, 102, 110]  # numeric, not string, order


def test_bundled_model_is_the_default(bundled_model_file):
    r = load_runner()
    assert r.path == bundled_model_file and r.backend == "torch" and r.cfg.name == "mobileagenet_lite0"
