"""Scoring a saved classifier (the attention paper's Fashion-MNIST / CIFAR-100 models) on a split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..data.classification import SPLIT_SEED, VAL_FRACTION, ClassificationDataset, holdout_split, load_classification
from ..data.transforms import normalize
from .metrics import bootstrap_ci

__all__ = ["evaluate_classifier"]


@torch.no_grad()
def evaluate_classifier(model_path: str | Path, dataset: str, root: str | None = None, split: str = "test",
                        batch_size: int = 256, limit: int | None = None, seed: int = 0,
                        n_boot: int = 1000) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (top-1 with a 95% bootstrap CI) and per-class top-1 of a saved classifier.

    ``split``: ``test`` (official test set), ``val`` (the held-out 10% of train used for checkpoint
    selection) or ``train`` (the other 90%).
    """
    from ..runtime import load_runner

    runner = load_runner(model_path)  # .safetensors, a Lightning .ckpt, or an exported file
    cfg = runner.cfg
    if "logits" not in runner.output_names:
        raise ValueError(f"{cfg.name} is not a classifier; it cannot be scored on {dataset} (use --data utkface or a manifest)")
    data = load_classification(dataset, root)
    if split == "test":
        x, y, idx = data.test_x, data.test_y, np.arange(len(data.test_y))
    elif split in ("train", "val"):
        tr, va = holdout_split(data.train_y, VAL_FRACTION, SPLIT_SEED)
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

