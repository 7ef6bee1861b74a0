"""Lightning module and data module for the classification models (``cfg.task == "classification"``).

The counterpart of :class:`agekit.training.module.AgeModule` / ``AgeDataModule`` with the same config,
checkpointing and runner: cross-entropy (optional label smoothing), top-1 accuracy from torchmetrics,
the checkpoint chosen by validation accuracy, the gates of inserted attention logged every epoch.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..data.classification import (
    CLASSIFICATION_DATASETS,
    ClassificationDataset,
    build_classification_augment,
    holdout_split,
    load_classification,
)
from ..data.transforms import normalize
from ..models.freezing import regime_param_groups
from ..models.registry import AgeModelCfg
from .module import ConfiguredModule
from ..config.train import ConfigError, DataSection, TrainConfig
from .schedules import build_scheduler

__all__ = ["VAL_FRACTION", "ClassificationDataModule", "ClassificationModule", "evaluate_classifier", "with_num_classes"]

VAL_FRACTION = 0.1  # share of train held out for checkpoint selection (attention paper)
_SPLIT_SEED = 0  # fixed: every training seed selects on the same validation images


def with_num_classes(cfg: TrainConfig) -> TrainConfig:
    """The config with ``model.kwargs.num_classes`` set from the dataset, so saved models rebuild alone."""
    n = CLASSIFICATION_DATASETS.get(cfg.data.dataset)
    if n is None:
        raise ConfigError(f"model {cfg.model.name} is a classifier; data.dataset must be one of "
                         f"{', '.join(CLASSIFICATION_DATASETS)}, got {cfg.data.dataset!r}")
    given = cfg.model.kwargs.get("num_classes")
    if given is not None and int(given) != n:
        raise ConfigError(f"model.kwargs.num_classes={given} but {cfg.data.dataset} has {n} classes")
    raw = cfg.model_dump()
    raw["model"]["kwargs"]["num_classes"] = n
    return TrainConfig.model_validate(raw)


class ClassificationModule(ConfiguredModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        m = self.cfg.model
        n = int(m.kwargs.get("num_classes") or CLASSIFICATION_DATASETS[self.cfg.data.dataset])
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")

    def forward(self, x_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(self.prepare_input(x_uint8))

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.loss.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)["logits"]
        loss = self._loss(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.detach().argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)["logits"]
        self.log("val/loss", self._loss(logits, y), sync_dist=True)
        self.val_acc.update(logits, y)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)["logits"]
        self.log("test/loss", self._loss(logits, y), sync_dist=True)
        self.test_acc.update(logits, y)
        self.test_acc5.update(logits, y)
        self.log("test/acc", self.test_acc)
        self.log("test/acc5", self.test_acc5)

    def on_train_epoch_end(self) -> None:
        for name, p in self.model.named_parameters():
            if name.endswith("gate") and p.numel() == 1:
                self.log(f"gate/{name}", p.detach().float().item())

    def configure_optimizers(self):
        o, ft = self.cfg.optim, self.cfg.finetune
        if ft.regime == "two_stage":  # same groups as AgeModule: head at lr, backbone at lr * ratio
            bb_ids = {id(p) for p in self.model.backbone.parameters()}
            groups = [{"params": [p for p in self.model.parameters() if id(p) not in bb_ids], "lr": o.lr, "name": "head"},
                      {"params": list(self.model.backbone.parameters()), "lr": o.lr * o.backbone_lr_ratio,
                       "name": "backbone"}]
        else:
            groups = regime_param_groups(self.model, ft.regime, o.lr, o.backbone_lr_ratio)
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        sched = build_scheduler(opt, o.schedule, self.trainer.estimated_stepping_batches, self.trainer.max_epochs,
                                o.warmup_epochs)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClassificationDataModule(L.LightningDataModule):
    """Fashion-MNIST / CIFAR-100 arrays -> train (90%), val (10% held out), test (official) loaders."""

    def __init__(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> None:
        super().__init__()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.data = None

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        d = self.cfg.data
        root = None if d.root == DataSection.model_fields["root"].default else d.root  # the age default: not ours
        self.data = load_classification(d.dataset, root)
        train_idx, val_idx = holdout_split(self.data.train_y, VAL_FRACTION, _SPLIT_SEED)
        rng = np.random.default_rng(self.cfg.trainer.seed)

        def limit(idx: np.ndarray, n: int | None) -> np.ndarray:
            return np.sort(rng.choice(idx, n, replace=False)) if n is not None and n < len(idx) else idx

        self.idx = {"train": limit(train_idx, d.limit_train), "val": limit(val_idx, d.limit_val),
                    "test": limit(np.arange(len(self.data.test_y)), d.limit_test)}
        if len(self.idx["train"]) == 0 or len(self.idx["val"]) == 0:
            raise ValueError(f"{d.dataset}: too few images for a train set and a {VAL_FRACTION:.0%} validation set")

    def _loader(self, split: str) -> DataLoader:
        size = self.model_cfg.input_size[-1]
        x, y = (self.data.train_x, self.data.train_y) if split != "test" else (self.data.test_x, self.data.test_y)
        aug = build_classification_augment(size, self.cfg.data.augment) if split == "train" else None
        ds = ClassificationDataset(x, y, self.idx[split], size, aug)
        w, bs, shuffle = self.cfg.data.num_workers, self.cfg.data.batch_size, split == "train"
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=w, persistent_workers=w > 0,
                          drop_last=shuffle and len(ds) > bs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


@torch.no_grad()
def evaluate_classifier(model_path: str, dataset: str, root: str | None = None, split: str = "test",
                        batch_size: int = 256, limit: int | None = None, seed: int = 0,
                        n_boot: int = 1000) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (top-1 with a 95% bootstrap CI) and per-class top-1 of a saved classifier.

    ``split``: ``test`` (official test set), ``val`` (the held-out 10% of train used for checkpoint
    selection) or ``train`` (the other 90%).
    """
    from ..evaluation.metrics import bootstrap_ci
    from ..runtime import load_runner

    runner = load_runner(model_path)  # .safetensors, a Lightning .ckpt, or an exported file
    cfg = runner.cfg
    if cfg.task != "classification":
        raise ValueError(f"{cfg.name} is an age model; it cannot be scored on {dataset} (use --data utkface or a manifest)")
    data = load_classification(dataset, root)
    if split == "test":
        x, y, idx = data.test_x, data.test_y, np.arange(len(data.test_y))
    elif split in ("train", "val"):
        tr, va = holdout_split(data.train_y, VAL_FRACTION, _SPLIT_SEED)
        x, y, idx = data.train_x, data.train_y, (tr if split == "train" else va)
    else:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    n = data.num_classes
    top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
    per_class = MulticlassAccuracy(num_classes=n, average=None)
    correct = []
    loader = DataLoader(ClassificationDataset(x, y, idx, cfg.input_size[-1]), batch_size=batch_size)
    for xb, yb in loader:
        logits = torch.from_numpy(runner(normalize(xb, cfg).numpy())["logits"])
        if logits.shape[-1] != n:
            raise ValueError(f"the model predicts {logits.shape[-1]} classes but {dataset} has {n}")
        top5.update(logits, yb)
        per_class.update(logits, yb)
        correct.append((logits.argmax(1) == yb).numpy())
    hits = np.concatenate(correct).astype(np.float64)
    top1, lo, hi = bootstrap_ci(hits, n_boot=n_boot, seed=seed)
    return {"model": str(model_path), "model_name": cfg.name, "dataset": dataset, "split": split, "n": len(hits),
            "top1": top1, "top1_ci95": [lo, hi], "top5": float(top5.compute()),
            "per_class_top1": {c: float(a) for c, a in zip(data.classes, per_class.compute().tolist())}}
