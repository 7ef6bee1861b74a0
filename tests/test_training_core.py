"""Config validation, losses, schedules, and a real (tiny) Lightning training run with resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agekit.config.train import ConfigError, load_config
from agekit.tasks.age import adaptive_loss, age_loss, gender_loss
from agekit.training.schedules import warmup_cosine


def test_unknown_and_bad_config_keys_are_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  nme: x\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.nme'"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="unknown model"):
        load_config(None, ["model.name=resnet_nope"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    c = load_config(Path(__file__).parents[1] / "configs" / "mobileagenet_lite0_utkface.yaml", ["trainer.max_epochs=3"])
    assert c.trainer.max_epochs == 3 and c.model.name == "mobileagenet_lite0"


def test_adaptive_loss_matches_paper_formula():
    y, p = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([12.0, 20.0, 20.0])
    d = y - p
    expected = 1 + 2 * torch.mean(d**2 / (d.abs() + 2))
    assert torch.allclose(adaptive_loss(p, y, 2.0), expected)
    assert torch.allclose(age_loss("adaptive", p, y), expected)
    assert torch.allclose(age_loss("l1", p, y), torch.tensor(4.0))
    w = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(age_loss("weighted_mse", p, y, w), torch.tensor(4.0))


def test_gender_loss_ignores_unknown():
    logit = torch.tensor([5.0, -5.0, 100.0])
    g = torch.tensor([1, 0, -1])
    assert float(gender_loss(logit, g)) < 0.01
    assert float(gender_loss(logit, torch.tensor([-1, -1, -1]))) == 0.0


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0 and abs(lrs[10] - 1.0) < 1e-6 and lrs[-1] < 0.05


def _synthetic_utkface(root: Path, n: int = 48) -> Path:
    """UTKFace-named images: a bright disc whose size grows with age, so a model can learn something."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, gender = int(rng.integers(1, 90)), i % 2
        img = np.full((64, 64, 3), 40, np.uint8)
        yy, xx = np.mgrid[:64, :64]
        img[(yy - 32) ** 2 + (xx - 32) ** 2 < (4 + age / 4) ** 2] = 200 if gender else 120
        Image.fromarray(img).save(root / f"{age}_{gender}_0_2017010{i:010d}.jpg.chip.jpg")
    return root


def test_train_resume_and_export(tmp_path):
    from agekit.data.adapters import get_adapter
    from agekit.data.splits import random_split
    from agekit.data.manifest import write_manifest
    from agekit.models import load_model
    from agekit.training.runner import train

    df = random_split(get_adapter("utkface")(_synthetic_utkface(tmp_path / "utk")), fracs=(0.5, 0.25, 0.25))
    write_manifest(df, tmp_path / "m.csv")
    base = [f"data.manifest={tmp_path / 'm.csv'}", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=8",
            f"trainer.out_dir={tmp_path / 'run'}", "trainer.progress=none", "model.pretrained=false",
            "finetune.freeze_early_blocks=2", "trainer.log_every_n_steps=1"]
    res = train(load_config(None, base + ["trainer.max_epochs=1"]))
    assert Path(res["model_file"]).is_file() and "test" not in res  # test split only on request
    assert not [c for c in pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv").columns
                if c.startswith("test/")]
    ck1 = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    longer = load_config(None, base + ["trainer.max_epochs=2", "trainer.test=true"])
    with pytest.raises(ConfigError, match="max_epochs"):  # another config: refused unless asked
        train(longer)
    res2 = train(longer, allow_config_change=True)  # resumes from last.ckpt
    assert np.isfinite(res2["test"]["test/mae"])
    ck2 = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck2["global_step"] == 2 * ck1["global_step"] > 0

    first = pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    resumed = pd.read_csv(tmp_path / "run" / "logs" / "version_1" / "metrics.csv")
    assert {"val/mae", "train/loss"} <= set(first.columns)
    assert set(resumed.loc[resumed["train/loss"].notna(), "epoch"].astype(int)) == {1}  # only the new epoch trained
    model, cfg, meta = load_model(res2["model_file"])
    assert meta["model_name"] == "mobileagenet_lite0" and "test" in meta
    # the true config is saved (not the offline rebuild's), with its provenance
    assert meta["train_config"]["finetune"]["freeze_early_blocks"] == 2
    assert meta["provenance"] == {"imagenet_weights": None, "init_weights": None, "init_chain": [],
                                  "stages": [{"config": meta["train_config"]}]}
    assert json.loads((tmp_path / "run" / "results.json").read_text())["best_checkpoint"]


def test_two_stage_freezes_backbone_then_unfreezes(tmp_path):
    from agekit.models.freezing import Finetuning
    from agekit.training.module import TaskModule

    cfg = load_config(None, ["model.pretrained=false", "finetune.freeze_early_blocks=2", "finetune.head_epochs=1"])
    m = TaskModule(cfg.model_dump())
    cb = Finetuning("two_stage", 1)
    cb.freeze_before_training(m)
    assert not any(p.requires_grad for p in m.backbone.parameters() if p.ndim > 1)
    assert all(p.requires_grad for p in m.model.head.parameters())
    cb.finetune_function(m, 1, None)
    early = {id(p) for mod in m.early for p in mod.parameters()}
    assert all(p.requires_grad != (id(p) in early) for p in m.backbone.parameters())
    m.train()
    assert not m.early[0].training and m.model.head.training
