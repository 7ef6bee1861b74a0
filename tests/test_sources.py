"""Multi-dataset training (data.sources), results by source, fairness, and the cross-dataset table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agekit.config.train import ConfigError, TrainConfig, load_config
from test_data_adapters import AAF_FILES, make_aaf
from test_training_core import _synthetic_utkface

TWO = "data.sources=[{dataset: utkface, weight: 1}, {dataset: aaf, weight: 3}]"


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("overrides, message", [
    (["data.sources=[{dataset: utkface, wieght: 1}]"], "unknown config key 'data.sources.0.wieght'"),
    (["data.sources=[{dataset: utkface, weight: 0}]"], "data.sources.0.weight': Input should be greater than 0"),
    (["data.sources=[{dataset: utkface, weight: -2}]"], "greater than 0"),
    ([TWO, "data.dataset=aaf"], "data.sources replaces data.dataset; give either sources or dataset, not both"),
    ([TWO, "data.manifest=m.csv"], "data.sources replaces data.manifest"),
    (["data.sources=[{weight: 1}]"], "exactly one of dataset (a name) or manifest (a path)"),
    (["data.sources=[{dataset: aaf, manifest: m.csv}]"], "exactly one of dataset"),
    (["data.sources=[]"], "data.sources is empty"),
    ([TWO, "trainer.strategy=ddp"], "data.sources is not supported with DDP"),
])
def test_sources_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value) and "Value error" not in str(e.value)


def test_sources_config_round_trips_and_single_dataset_is_one_source():
    c = load_config(None, [TWO])
    assert [(s.name, s.weight) for s in c.data.source_list()] == [("utkface", 1.0), ("aaf", 3.0)]
    dumped = json.loads(c.model_dump_json())
    assert "dataset" not in dumped["data"] and "manifest" not in dumped["data"]  # replaced keys are not saved
    assert TrainConfig.model_validate(dumped).data.sources == c.data.sources  # a saved config loads again
    single = load_config(None, ["data.dataset=aaf"]).data.source_list()
    assert [(s.dataset, s.weight, s.split_file) for s in single] == [("aaf", 1.0, "default")]
    for p in ("configs/mobileagenet_lite0_aaf.yaml", "configs/mobileagenet_lite0_utk_aaf.yaml"):
        load_config(Path(__file__).parents[1] / p)


# ------------------------------------------------------------------------------- datamodule
def _aaf_files(n: int) -> list[str]:
    names = list(AAF_FILES)
    for i in range(n - len(names)):
        names.append(f"{9000 + i:05d}A{20 + i % 50:02d}.jpg")
    return names[:n]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> dict[str, Path]:
    from agekit.data.adapters import get_adapter
    from agekit.data.manifest import write_manifest
    from agekit.data.splits import random_split

    tmp = tmp_path_factory.mktemp("sources")
    utk = random_split(get_adapter("utkface")(_synthetic_utkface(tmp / "utk", n=40)), fracs=(0.5, 0.25, 0.25))
    make_aaf(tmp / "aaf", _aaf_files(16))
    aaf = random_split(get_adapter("aaf")(tmp / "aaf"), fracs=(0.5, 0.25, 0.25))
    return {"utk": write_manifest(utk, tmp / "utk.csv"), "aaf": write_manifest(aaf, tmp / "aaf.csv"), "tmp": tmp}


def test_two_sources_one_cache_and_draws_follow_weights(two_sources):
    from agekit.data.datamodule import SOURCE_INDEX, AgeDataModule
    from agekit.models import get_model_cfg

    tmp = two_sources["tmp"]
    cfg = load_config(None, [f"data.sources=[{{manifest: {two_sources['utk']}, weight: 1}}, "
                             f"{{manifest: {two_sources['aaf']}, weight: 3}}]",
                             f"data.cache_dir={tmp / 'cache'}", "data.batch_size=8", "model.pretrained=false"])
    dm = AgeDataModule(cfg, get_model_cfg("mobileagenet_lite0"))
    dm.prepare_data()
    dm.setup("fit")
    df = dm.df
    assert sorted(df["source"].unique()) == ["aaf", "utkface"] and set(df[SOURCE_INDEX]) == {0, 1}
    assert len(list((tmp / "cache").glob("*.npy"))) == 1  # ONE crop cache over both sources
    meta = json.loads(next((tmp / "cache").glob("*.json")).read_text())
    assert meta["modes"] == {"align": 16, "chip": 40}  # AAF aligned from its key points, UTKFace chips as they are
    assert dm.ok.all()
    for split in ("val", "test"):  # val and test keep every row of every source
        assert len(dm.idx[split]) == int((df["split"] == split).sum())
    train_src = df[SOURCE_INDEX].to_numpy()[dm.idx["train"]]
    n_utk, n_aaf = int((train_src == 0).sum()), int((train_src == 1).sum())
    assert n_utk > 2 * n_aaf  # UTKFace has far more rows, yet AAF must get 3/4 of the draws
    sampler = dm.train_sampler()
    assert len(sampler) == len(dm.idx["train"])  # an epoch counts draws, as many as training rows
    draws = np.concatenate([np.fromiter(iter(sampler), dtype=np.int64) for _ in range(100)])
    share_aaf = float((train_src[draws] == 1).mean())
    assert share_aaf == pytest.approx(0.75, abs=0.03)
    x, age, gender, w = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape[0] == 8
    # single-dataset configs keep plain shuffling
    single = load_config(None, [f"data.manifest={two_sources['utk']}", f"data.cache_dir={tmp / 'cache'}"])
    dm1 = AgeDataModule(single, get_model_cfg("mobileagenet_lite0"))
    dm1.setup("fit")
    assert dm1.train_sampler() is None


def test_source_draw_weights_are_weight_over_size():
    from agekit.data.datamodule import source_draw_weights

    w = source_draw_weights(np.array([0, 0, 0, 1]), [1.0, 3.0])
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 3.0])


# --------------------------------------------------------------------- by_source, fairness
def _hand_table() -> pd.DataFrame:
    """80 rows: utkface errors +2 (30 male, 10 female), aaf errors -4 (10 male, 30 female)."""
    age = np.arange(80, dtype=np.float64) % 60 + 10
    err = np.r_[np.full(40, 2.0), np.full(40, -4.0)]
    gender = np.r_[np.zeros(30), np.ones(10), np.zeros(10), np.ones(30)].astype(int)
    race = [*(["White"] * 20), *(["Black"] * 20), *([None] * 40)]
    return pd.DataFrame({"age": age, "pred": age + err, "gender": pd.array(gender, dtype="Int64"),
                         "p_female": gender.astype(float), "race": race, "source": ["utkface"] * 40 + ["aaf"] * 40})


def test_summarize_by_source_and_fairness_exact():
    from agekit.evaluation.evaluate import summarize

    s = summarize(_hand_table(), n_boot=20)
    assert s["metrics"]["mae"]["value"] == pytest.approx(3.0)
    src = {g["group"]: g for g in s["by_source"]}
    assert src["utkface"]["mae"]["value"] == pytest.approx(2.0) and src["utkface"]["bias"] == pytest.approx(2.0)
    assert src["aaf"]["mae"]["value"] == pytest.approx(4.0) and src["aaf"]["bias"] == pytest.approx(-4.0)
    assert src["aaf"]["n"] == 40 and src["aaf"]["gender_acc"] == pytest.approx(1.0)
    gen = {g["group"]: g["mae"]["value"] for g in s["by_gender"]}
    assert gen == pytest.approx({"male": 2.5, "female": 3.5})
    f = s["fairness"]
    assert f["worst_group"] == "source=aaf" and f["worst_mae"] == pytest.approx(4.0)
    assert f["overall_mae"] == pytest.approx(3.0) and f["ratio"] == pytest.approx(4 / 3)
    assert f["goal"] == 1.3 and f["met"] is False
    g = f["groupings"]
    assert set(g) == {"gender", "source"}  # race groups have 20 rows each: listed, not ranked (min_n 30)
    assert g["gender"]["worst_group"] == "female" and g["gender"]["ratio"] == pytest.approx(3.5 / 3)
    assert g["gender"]["met"] is True
    assert {r["group"] for r in s["by_race"]} == {"White", "Black"}
    small = summarize(_hand_table(), n_boot=20, fairness_min_n=1)["fairness"]["groupings"]
    assert small["race"]["ratio"] == pytest.approx(2 / 3) and small["race"]["met"] is True
    assert "age bins" in f["note"]


def test_report_shows_by_source_and_fairness_line():
    from agekit.evaluation.evaluate import summarize
    from agekit.evaluation.report import fairness_line, markdown_report

    s = summarize(_hand_table(), n_boot=20)
    line = fairness_line(s["fairness"])
    assert line == "worst group source=aaf: MAE 4.00 = 1.33x overall 3.00 (goal <= 1.3x: NOT met)"
    r = {**s, "model": {"path": "m", "backend": "torch", "input_size": [3, 8, 8], "tta_flip": True},
         "data": {"name": "x", "split": "test", "data": "x", "n": 80, "n_unreadable": 0},
         "settings": {"ci": "95%", "n_boot": 20, "seed": 0}, "agekit_version": "0", "created": "now"}
    md = markdown_report(r, {"predictions": "predictions.csv"})
    assert "## By source dataset" in md and "## Fairness" in md and line in md and "not a fairness group" in md


# -------------------------------------------------------------------------- cross-dataset
def test_cross_dataset_table_on_tiny_data(two_sources, tmp_path):
    from typer.testing import CliRunner

    from agekit.cli.main import app
    from agekit.experiments.cross_dataset import cross_dataset, train_set_of
    from agekit.evaluation.evaluate import evaluate
    from agekit.models import create_model, save_weights

    utk, aaf = str(two_sources["utk"]), str(two_sources["aaf"])
    torch.manual_seed(0)
    model = create_model("mobileagenet_lite0", pretrained=False)
    tc = json.loads(load_config(None, [f"data.manifest={utk}"]).model_dump_json())
    m = save_weights(model, tmp_path / "m.safetensors", {"model_name": "mobileagenet_lite0", "train_config": tc})
    assert train_set_of(m) == {"label": "utk", "datasets": ["utk"]}
    pending = tmp_path / "both.yaml"
    pending.write_text(f"data:\n  sources:\n    - {{manifest: {utk}, weight: 1}}\n    - {{dataset: aaf, weight: 2}}\n")
    kw = {"cache_dir": tmp_path / "cache", "n_boot": 20}
    table = cross_dataset([m], [utk, aaf], pending=[pending], **kw)
    row, todo = table["rows"]
    one = evaluate(m, aaf, "test", **kw).results["metrics"]["mae"]  # each cell is agekit eval's evaluate()
    cell = row["cells"][aaf]
    assert cell["mae"] == pytest.approx(one["value"]) and cell["ci_low"] == pytest.approx(one["ci_low"])
    assert cell["status"] == "measured" and cell["in_domain"] is False and cell["n"] == one["n"]
    assert todo["train_set"] == "utk+aaf(w=2)" and todo["cells"][aaf]["status"] == "not trained yet"
    pool = row["pooled"]  # both test sets together: the source grouping is ranked against the pooled MAE
    assert pool["n"] == row["cells"][utk]["n"] + cell["n"]
    assert {g["group"] for g in pool["by_source"]} == {"utkface", "aaf"}
    assert pool["fairness"]["goal"] == 1.3 and pool["fairness"]["groupings"] == {}  # tiny groups: not ranked

    out = tmp_path / "xd"
    r = CliRunner().invoke(app, ["experiment", "cross-dataset", str(m), "--data", f"{utk},{aaf}", "--pending",
                                 str(pending), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                                 "--n-boot", "20"])
    assert r.exit_code == 0, r.output
    md, js = (out.with_suffix(".md")).read_text(), json.loads(out.with_suffix(".json").read_text())
    assert f"{cell['mae']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]" in md and "not trained yet" in md
    assert js["rows"][0]["cells"][aaf]["mae"] == pytest.approx(cell["mae"])
    assert "experiment cross-dataset" in (js["command"] or "")
