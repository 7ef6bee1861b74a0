"""Packing a training set's crop cache into shards and rebuilding it elsewhere (agekit data pack / unpack)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.config.train import load_config
from agekit.data.cache import build_crop_cache
from agekit.data.crops import CropSpec
from agekit.data.datamodule import sources_table
from agekit.data.shards import cache_name_for, pack_cache, unpack_cache

runner = CliRunner()


def _config(tmp_path: Path, root: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: mobileagenet_lite0, pretrained: false, kwargs: {{head_hidden: 16}}}}\n"
                   f"data: {{dataset: utkface, root: {root}, split_file: null, cache_dir: {tmp_path / 'cache'}, "
                   f"batch_size: 8}}\ntrainer: {{max_epochs: 1, channels_last: false, progress: none}}\n"
                   f"finetune: {{head_epochs: 0}}\neval: {{tta_flip: false}}\n")
    return cfg


def test_pack_unpack_train_elsewhere(tmp_path, monkeypatch):
    """Pack train+val here; in a fresh folder (no images, no cache) unpack and train the packed config:
    the run opens the rebuilt cache (no image is read), test rows were never shipped."""
    from test_research_experiments import _synthetic_utkface

    root = _synthetic_utkface(tmp_path / "utk", n=30)
    cfg = _config(tmp_path, root)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    r = runner.invoke(app, ["data", "pack", str(cfg), "data.cache_dir=cache", "--out", "pack", "--max-mb", "0.002"])
    assert r.exit_code == 0, r.output
    summary = json.loads(Path("pack/pack.json").read_text())
    assert len(summary["shards"]) >= 2  # the size limit split it
    assert summary["mean_abs_pixel_error"] < 4 and summary["config"] == "pack/train.yaml"
    table, _ = sources_table(load_config(cfg))
    assert summary["shipped"] == int(table["split"].isin(["train", "val"]).sum())

    # "another machine": a new working folder holding only the pack; the dataset is gone
    there = tmp_path / "there"
    shutil.copytree("pack", there / "pack")
    shutil.rmtree(root)
    monkeypatch.chdir(there)
    r = runner.invoke(app, ["data", "unpack", "pack/shards", "--config", "pack/train.yaml"])
    assert r.exit_code == 0, r.output
    arr = next(Path("cache").glob("crops_*.npy"))
    ok = np.array(json.loads(arr.with_suffix(".json").read_text())["ok"])
    assert ok.sum() == summary["shipped"] and not ok[table["split"].to_numpy() == "test"].any()
    r = runner.invoke(app, ["train", "pack/train.yaml", "trainer.out_dir=run"])
    assert r.exit_code == 0, r.output
    assert np.isfinite(json.loads(Path("run/results.json").read_text())["best_val_mae"])


def test_unpack_errors_and_rename(tmp_path):
    crops = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "crops_16_abc.npy", crops)
    (tmp_path / "crops_16_abc.json").write_text(json.dumps({"ok": [True] * 5 + [False], "errors": ["x"], "size": 16}))
    s = pack_cache(tmp_path / "crops_16_abc.npy", np.arange(6), tmp_path / "s", max_mb=0.0005, quality=95, fmt="jpeg")
    assert s["shipped"] == 5 and len(s["shards"]) > 1  # the not-ok row is never shipped
    path = unpack_cache([tmp_path / "s"], tmp_path / "c", name="crops_16_mine.npy")
    assert path.name == "crops_16_mine.npy" and np.load(path).shape == crops.shape
    (tmp_path / "s" / s["shards"][-1]).unlink()
    with pytest.raises(FileNotFoundError, match=s["shards"][-1]):
        unpack_cache([tmp_path / "s"], tmp_path / "c2")
    with pytest.raises(ValueError, match="unknown shard image format"):
        pack_cache(tmp_path / "crops_16_abc.npy", np.arange(2), tmp_path / "s3", fmt="gif")


def test_cache_name_is_what_a_run_opens(tmp_path):
    from test_research_experiments import _synthetic_utkface

    root = _synthetic_utkface(tmp_path / "utk", n=12)
    cfg = load_config(_config(tmp_path, root))
    table, _ = sources_table(cfg)
    crops, _, _ = build_crop_cache(table, 128, cfg.data.cache_dir, CropSpec(cfg.data.crop))
    assert Path(crops.filename).name == cache_name_for(cfg, 128)
