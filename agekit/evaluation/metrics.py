"""Age metrics as torchmetrics (for training loops) and numpy functions with bootstrap CIs (for reports)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torchmetrics import Metric

__all__ = ["CumulativeScore", "mae", "cs_at_k", "bootstrap_ci", "Estimate", "estimate", "gender_accuracy",
           "AGE_BIN_EDGES", "age_bin_labels", "age_bin_names"]


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


def gender_accuracy(prob_female: np.ndarray, gender: np.ndarray) -> float:
    """Share of rows where P(female) > 0.5 matches the label (0 male, 1 female); rows with gender < 0 are ignored."""
    prob_female, gender = np.asarray(prob_female, dtype=np.float64), np.asarray(gender)
    known = gender >= 0
    return float(np.mean((prob_female[known] > 0.5) == (gender[known] == 1))) if known.any() else float("nan")


_BOOT_CELLS = 20_000_000  # resample indices held in memory at once (~160 MB of int64)


def bootstrap_ci(values: np.ndarray, stat=np.mean, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap over per-sample values (e.g. absolute errors).

    Resamples are drawn in chunks so that large test sets do not need an (n_boot x n) index array.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CELLS // len(values))
    boots = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(values), size=(min(chunk, n_boot - start), len(values)))
        boots.append(stat(values[idx], axis=1))
    lo, hi = np.quantile(np.concatenate(boots), [alpha / 2, 1 - alpha / 2])
    return float(stat(values)), float(lo), float(hi)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile-bootstrap confidence interval and the sample count behind it."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def estimate(values: np.ndarray, stat: Callable = np.mean, n_boot: int = 1000, alpha: float = 0.05,
             seed: int = 0) -> Estimate:
    """:func:`bootstrap_ci` as an :class:`Estimate` (keeps n next to the interval for reports)."""
    v, lo, hi = bootstrap_ci(values, stat, n_boot=n_boot, alpha=alpha, seed=seed)
    return Estimate(v, lo, hi, int(len(np.asarray(values))))


AGE_BIN_EDGES: tuple[int, ...] = (0, 10, 20, 30, 40, 50, 60, 70)  # last bin is open: 70+


def age_bin_names(edges: tuple[int, ...] = AGE_BIN_EDGES) -> list[str]:
    """The bin labels in order: '0-9', ..., '60-69', '70+'."""
    return [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]


def age_bin_labels(ages: np.ndarray, edges: tuple[int, ...] = AGE_BIN_EDGES) -> np.ndarray:
    """Decade labels ('0-9', ..., '60-69', '70+') for true ages; the open last bin keeps small old-age groups together."""
    ages = np.asarray(ages, dtype=np.float64)
    names = age_bin_names(edges)
    pos = np.clip(np.searchsorted(np.asarray(edges), ages, side="right") - 1, 0, len(edges) - 1)
    return np.asarray(names, dtype=object)[pos]
