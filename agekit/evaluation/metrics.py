"""Age metrics as torchmetrics (for training loops) and numpy functions with bootstrap CIs (for reports)."""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

__all__ = ["CumulativeScore", "mae", "cs_at_k", "bootstrap_ci"]


class CumulativeScore(Metric):
    """CS@k: the share of predictions within k years of the truth. torchmetrics has no such metric."""

    full_state_update = False

    def __init__(self, k: float = 5.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.hits += ((preds - target).abs() <= self.k).sum().float()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        return self.hits / self.total.clamp_min(1)


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def cs_at_k(pred: np.ndarray, true: np.ndarray, k: float = 5.0) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true)) <= k))


def bootstrap_ci(values: np.ndarray, stat=np.mean, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap over per-sample values (e.g. absolute errors)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    boots = stat(values[idx], axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(stat(values)), float(lo), float(hi)
