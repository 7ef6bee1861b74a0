"""ONNX export: metadata, dynamic batch, and parity with PyTorch on random inputs and real crops, for an
untrained model and for the bundled trained one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agekit.evaluation.parity import check_parity, parity_inputs
from agekit.export.formats import EXPORT_FORMATS, ExportError, export_model, get_format
from agekit.export.onnx import cfg_from_metadata, export_onnx, read_onnx_metadata
from agekit.models import get_model_cfg, load_model
from agekit.runtime import Runner, load_runner
from agekit.runtime.onnx import cached_onnx


@pytest.fixture(scope="module")
def onnx_file(random_model_file: Path, tmp_path_factory) -> Path:
    res = export_model(random_model_file, "onnx", tmp_path_factory.mktemp("onnx") / "lite0.onnx")
    assert res.format == "onnx" and res.size_bytes > 1_000_000
    return res.path


@pytest.fixture(scope="module")
def torch_ref(random_model_file: Path) -> Runner:
    return load_runner(random_model_file)


def test_onnx_graph_interface(onnx_file: Path):
    import onnx

    proto = onnx.load(str(onnx_file))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["age", "gender_logit"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 128]
    assert not list(onnx_file.parent.glob("*.data"))  # weights inside the one file


def test_onnx_metadata_makes_file_self_describing(onnx_file: Path):
    m = load_runner(onnx_file, threads=1)
    ref = get_model_cfg("mobileagenet_lite0")
    assert m.cfg.name == "mobileagenet_lite0"
    assert m.cfg.input_size == ref.input_size and m.cfg.mean == ref.mean and m.cfg.std == ref.std
    assert m.cfg.age_range == ref.age_range
    md = read_onnx_metadata(onnx_file)
    assert json.loads(md["input_size"]) == [3, 128, 128]
    # an unregistered model name still yields a usable cfg from the file alone
    cfg = cfg_from_metadata({**md, "model_name": "someone_elses_model"})
    assert cfg.name == "someone_elses_model" and cfg.input_size == (3, 128, 128) and cfg.mean == ref.mean
    with pytest.raises(ValueError, match="no agekit metadata"):
        cfg_from_metadata({})


def test_onnx_parity_random_inputs_and_dynamic_batch(onnx_file: Path, torch_ref: Runner):
    runner = load_runner(onnx_file, threads=1)
    x = np.random.default_rng(0).standard_normal((7, 3, 128, 128)).astype(np.float32)
    rep = check_parity(torch_ref, runner, x, "random", age_tolerance=1e-3, prob_tolerance=1e-4, batch_size=7)
    assert rep.passed and rep.max_age_diff < 1e-3, rep
    one = runner(x[:1])
    assert one["age"].shape == (1,) and abs(float(one["age"][0]) - float(runner(x)["age"][0])) < 1e-3
    tta = runner.predict(x, tta_flip=True)
    ref = torch_ref.predict(x, tta_flip=True)
    np.testing.assert_allclose(tta["age"], ref["age"], atol=1e-3)
    np.testing.assert_allclose(tta["p_female"], ref["p_female"], atol=1e-5)


@pytest.mark.realdata
def test_onnx_parity_on_real_chips(onnx_file: Path, torch_ref: Runner, utkface_subset: Path):
    x, source = parity_inputs(utkface_subset, torch_ref.cfg, n=32)
    assert len(x) == 32 and "images from" in source
    rep = check_parity(torch_ref, load_runner(onnx_file, threads=1), x, source, age_tolerance=1e-3)
    assert rep.passed and rep.max_age_diff < 1e-3 and rep.max_p_female_diff < 1e-4, rep


@pytest.mark.realdata
def test_onnx_backend_evaluation_matches_torch(onnx_file: Path, random_model_file: Path, utkface_subset: Path,
                                               tmp_path: Path):
    from agekit.data.adapters.utkface import utkface_manifest
    from agekit.data.manifest import write_manifest
    from agekit.evaluation.evaluate import evaluate

    df = utkface_manifest(utkface_subset).assign(split="test")
    man = write_manifest(df, tmp_path / "m.csv")
    kw = dict(data=man, cache_dir=tmp_path / "cache", n_boot=50)
    a = evaluate(random_model_file, **kw)
    b = evaluate(onnx_file, **kw)
    assert b.results["model"]["backend"] == "onnx"
    pd.testing.assert_series_equal(a.predictions["path"], b.predictions["path"])
    np.testing.assert_allclose(a.predictions["pred"], b.predictions["pred"], atol=1e-3)
    assert abs(a.results["metrics"]["mae"]["value"] - b.results["metrics"]["mae"]["value"]) < 1e-3


def test_legacy_opset_export(random_model_file: Path, torch_ref: Runner, tmp_path: Path):
    """Older runtimes need opset < 18, which only the TorchScript exporter still writes."""
    import onnx

    model, cfg, meta = load_model(random_model_file)
    path = export_onnx(model, cfg, tmp_path / "m17.onnx", opset=17, metadata=meta)
    assert onnx.load(str(path)).opset_import[0].version == 17
    x = np.random.default_rng(1).standard_normal((3, 3, 128, 128)).astype(np.float32)
    assert check_parity(torch_ref, load_runner(path, threads=1), x, age_tolerance=1e-3).passed


def test_format_table():
    assert {"torch", "onnx", "tflite"} <= set(EXPORT_FORMATS)
    assert get_format("ONNX").suffix == ".onnx" and get_format("onnx").implemented
    torch_row = get_format("torch")  # torch is a format like the others: a runner, nothing to export
    assert torch_row.suffixes == (".safetensors", ".ckpt") and not torch_row.implemented and torch_row.runner
    assert get_format("tflite").suffix == ".tflite" and "litert-torch" in get_format("tflite").requirements
    with pytest.raises(ExportError, match="unknown export format 'coreml'.*onnx"):
        get_format("coreml")


def test_export_model_errors(random_model_file: Path, tmp_path: Path, monkeypatch):
    from agekit.export import formats

    monkeypatch.setitem(formats.EXPORT_FORMATS, "future", formats.ExportFormat("future", ".fut", None, ()))
    with pytest.raises(ExportError, match="not implemented yet"):
        export_model(random_model_file, "future")
    with pytest.raises(ExportError, match="'torch' has no export step: it is the model file itself"):
        export_model(random_model_file, "torch")
    monkeypatch.setitem(formats.EXPORT_FORMATS, "needy", formats.ExportFormat(
        "needy", ".x", "agekit.export.onnx:export_onnx", ("surely-not-an-installed-dist",)))
    with pytest.raises(ExportError, match="pip install surely-not-an-installed-dist"):
        export_model(random_model_file, "needy")
    with pytest.raises(ExportError, match="model file not found"):
        export_model(tmp_path / "missing.safetensors", "onnx")
    with pytest.raises(ExportError, match="does not take option"):
        export_model(random_model_file, "onnx", tmp_path / "x.onnx", quantize=True)


# -- the bundled trained model: what users run must match in ONNX -----------------------------------
@pytest.fixture(scope="session")
def bundled_runners(bundled_model_file: Path, tmp_path_factory) -> tuple[Runner, Runner]:
    """PyTorch and ONNX runners of the bundled model; the export (~2 s) is made once per session."""
    cache = tmp_path_factory.mktemp("bundled_onnx")
    onnx_path = cached_onnx(bundled_model_file, cache)
    return load_runner(bundled_model_file, "torch"), load_runner(onnx_path, threads=1)


def _assert_bundled_parity(ref: Runner, cand: Runner, x: np.ndarray, source: str) -> None:
    rep = check_parity(ref, cand, x, source, age_tolerance=0.1, prob_tolerance=0.01)
    assert rep.n == len(x) and rep.passed, rep
    assert rep.max_age_diff < 0.1 and rep.max_p_female_diff < 0.01, rep
    a, b = ref.predict(x), cand.predict(x)  # and what users get: flip TTA, P(female)
    assert np.abs(a["age"] - b["age"]).max() < 0.1 and np.abs(a["p_female"] - b["p_female"]).max() < 0.01


def test_bundled_model_onnx_parity_on_the_example_photo_face(bundled_runners):
    """The aligned face of the bundled photo (the predictor's own crop): parity, and the known answer."""
    import agekit
    from agekit.data.imageio import load_rgb
    from agekit.inference.defaults import example_photo_path

    ref, cand = bundled_runners
    pred = agekit.Predictor(ref.path, threads=1)
    rgb = load_rgb(example_photo_path())
    crops, _ = pred.align(rgb, pred.detect(rgb))
    assert len(crops) == 1
    x = pred.preprocess(crops)
    _assert_bundled_parity(ref, cand, x, "astronaut.jpg")
    out = cand.predict(x)  # the ONNX file gives the bundled model's known answer for this face
    assert out["age"][0] == pytest.approx(29.91, abs=0.05) and out["p_female"][0] == pytest.approx(0.149, abs=0.005)


@pytest.mark.realdata
def test_bundled_model_onnx_parity_on_real_utkface_chips(bundled_runners, utkface_subset: Path):
    ref, cand = bundled_runners
    x, source = parity_inputs(utkface_subset, ref.cfg, n=60)
    assert len(x) == 60
    _assert_bundled_parity(ref, cand, x, source)


def test_export_never_imports_runtime_evaluation_or_inference():
    """runtime -> export, never back: the table names runners only as "module:Class" strings."""
    import ast

    import agekit.export

    bad = []
    for f in Path(agekit.export.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad += [f"{f.name}: {n}" for n in names
                    if any(n.startswith(p) for p in ("..runtime", "..evaluation", "..inference", "agekit.runtime",
                                                     "agekit.evaluation", "agekit.inference"))]
    assert not bad
