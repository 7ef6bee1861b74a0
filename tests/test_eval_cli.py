"""`agekit eval` end to end on real UTKFace chips with an untrained model (numbers are checked for
consistency, not quality)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.adapters.utkface import utkface_manifest
from agekit.data.imageio import load_rgb
from agekit.data.manifest import write_manifest
from agekit.data.transforms import crops_to_batch
from agekit.models import load_model

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def utk_manifest(utkface_subset: Path, tmp_path_factory) -> Path:
    df = utkface_manifest(utkface_subset)
    df["split"] = pd.array(np.array(["train", "val", "test", "test"])[np.arange(len(df)) % 4], dtype="string")
    return write_manifest(df, tmp_path_factory.mktemp("manifest") / "utk.csv")


@pytest.fixture(scope="module")
def eval_run(random_model_file: Path, utk_manifest: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("eval")
    res = CliRunner().invoke(app, ["eval", str(random_model_file), "--data", str(utk_manifest), "--out", str(out),
                                   "--cache-dir", str(out / "cache"), "--cs-k", "5"])
    return out, res


def test_eval_writes_consistent_results(eval_run, utk_manifest: Path):
    out, res = eval_run
    assert res.exit_code == 0, res.output
    assert "MAE" in res.output
    r = json.loads((out / "results.json").read_text())
    for key in ("model", "data", "settings", "metrics", "by_age_bin", "by_gender", "by_race", "timing", "files"):
        assert key in r
    for key in ("mae", "cs", "gender_acc", "bias"):
        assert {"value", "ci_low", "ci_high", "n"} <= set(r["metrics"][key])
    n_test = int((pd.read_csv(utk_manifest)["split"] == "test").sum())
    assert r["data"]["n"] == n_test and r["data"]["split"] == "test" and r["model"]["tta_flip"] is True
    assert r["settings"]["n_boot"] == 1000

    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns[:7]) == ["path", "age", "pred", "gender", "p_female", "pred_gender", "gender_prob"]
    assert len(pred) == n_test
    # one meaning of gender_prob everywhere: the probability of the reported gender, as in `agekit predict`
    female = pred["p_female"] > 0.5
    assert (pred["pred_gender"] == np.where(female, "female", "male")).all()
    np.testing.assert_allclose(pred["gender_prob"], np.where(female, pred["p_female"], 1 - pred["p_female"]))
    err = np.abs(pred["pred"] - pred["age"])
    m = r["metrics"]
    assert m["mae"]["value"] == pytest.approx(err.mean(), abs=1e-9)
    assert m["cs"]["value"] == pytest.approx((err <= 5).mean()) and m["cs"]["k"] == 5
    assert m["gender_acc"]["value"] == pytest.approx(((pred["p_female"] > 0.5) == (pred["gender"] == 1)).mean())
    for key in ("mae", "cs", "gender_acc"):
        assert m[key]["ci_low"] <= m[key]["value"] <= m[key]["ci_high"]
        assert m[key]["ci_low"] < m[key]["ci_high"]
    assert sum(g["n"] for g in r["by_age_bin"]) == n_test
    assert sum(g["n"] for g in r["by_gender"]) == n_test
    for g in r["by_age_bin"] + r["by_gender"] + r["by_race"]:
        assert g["mae"]["ci_low"] <= g["mae"]["value"] <= g["mae"]["ci_high"]


def test_eval_report_files(eval_run):
    out, _ = eval_run
    for name in ("scatter.png", "mae_by_age.png"):
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 200
    md = (out / "report.md").read_text()
    assert "| MAE (years) |" in md and "## By age" in md and "## By race" in md and "scatter.png" in md


def test_eval_predictions_are_the_model_with_flip_tta(eval_run, random_model_file: Path):
    """The cache path gives what the model says on the decoded image, averaged with its mirror."""
    out, _ = eval_run
    pred = pd.read_csv(out / "predictions.csv").head(4)
    model, cfg, _ = load_model(random_model_file)
    x = crops_to_batch([load_rgb(p) for p in pred["path"]], cfg)
    with torch.inference_mode():
        a, b = model(x), model(torch.flip(x, dims=[3]))
    age = ((a["age"] + b["age"]) / 2).numpy()
    prob = torch.sigmoid((a["gender_logit"] + b["gender_logit"]) / 2).numpy()
    np.testing.assert_allclose(pred["pred"], age, atol=1e-3)
    np.testing.assert_allclose(pred["p_female"], prob, atol=1e-5)


def test_eval_no_tta_and_errors(random_model_file: Path, utk_manifest: Path, tmp_path: Path):
    r = CliRunner().invoke(app, ["eval", str(random_model_file), "--data", str(utk_manifest), "--out", str(tmp_path),
                                 "--cache-dir", str(tmp_path / "cache"), "--no-tta", "--split", "train", "--n-boot", "100"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model"]["tta_flip"] is False and res["data"]["split"] == "train"
    bad = CliRunner().invoke(app, ["eval", str(random_model_file), "--data", str(utk_manifest), "--split", "nope",
                                   "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "cache")])
    assert bad.exit_code != 0 and "split 'nope'" in bad.output
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "none.safetensors"), "--data", str(utk_manifest)])
    assert missing.exit_code != 0 and "model file not found" in missing.output


def test_eval_matches_training_module_test_metrics(utk_manifest: Path, tmp_path: Path):
    """`agekit eval` must report what the training run's test step reports for the same weights and data."""
    from torchmetrics import MeanAbsoluteError

    from agekit.evaluation.evaluate import evaluate
    from agekit.evaluation.metrics import CumulativeScore
    from agekit.models import save_weights
    from agekit.config.train import load_config
    from agekit.data.datamodule import AgeDataModule
    from agekit.training.module import TaskModule

    cfg = load_config(None, [f"data.manifest={utk_manifest}", f"data.cache_dir={tmp_path / 'cache'}",
                             "model.pretrained=false", "data.batch_size=16"])
    torch.manual_seed(1)
    module = TaskModule(cfg.model_dump()).eval()
    dm = AgeDataModule(cfg, module.model_cfg)
    dm.setup("test")
    mae, cs = MeanAbsoluteError(), CumulativeScore(5)
    with torch.inference_mode():
        for x, age, _, _ in dm.test_dataloader():
            out = module(x, tta_flip=cfg.eval.tta_flip)
            mae.update(out["age"], age)
            cs.update(out["age"], age)
    weights = save_weights(module.model, tmp_path / "m.safetensors", {"model_name": cfg.model.name, "model_kwargs": {}})
    res = evaluate(weights, utk_manifest, "test", cache_dir=tmp_path / "cache", n_boot=50)
    assert res.results["data"]["n"] == len(dm.idx["test"])
    assert res.results["metrics"]["mae"]["value"] == pytest.approx(float(mae.compute()), abs=1e-3)
    assert res.results["metrics"]["cs"]["value"] == pytest.approx(float(cs.compute()), abs=1e-6)


def test_eval_defaults_to_the_bundled_model(bundled_model_file: Path, utk_manifest: Path, tmp_path: Path):
    r = CliRunner().invoke(app, ["eval", "--data", str(utk_manifest), "--out", str(tmp_path), "--limit", "4",
                                 "--n-boot", "10", "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model"]["path"] == str(bundled_model_file) and res["model"]["backend"] == "torch"
    bad = CliRunner().invoke(app, ["eval", "--data", str(utk_manifest), "--backend", "tf"])
    assert bad.exit_code != 0 and "choose one of torch, onnx, onnx-int8, tflite, tflite-int8" in bad.output
