"""Age metrics as torchmetrics (for training loops) and numpy functions with bootstrap CIs (for reports)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torchmetrics import Metric

from ..data.manifest import interval_name

__all__ = ["CumulativeScore", "mae", "cs_at_k", "bootstrap_ci", "Estimate", "estimate", "gender_accuracy",
           "AGE_BIN_EDGES", "age_bin_labels", "age_bin_names", "range_error", "group_set", "assign_groups",
           "group_metrics"]


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


# -- age groups (interval labels, e.g. PETA's "16-30") ------------------------------------------------------
# A group [lo, hi] in whole years covers the continuous span [lo - 0.5, hi + 0.5), as in the interval-censored
# loss (agekit.tasks.age): a predicted 30.4 is inside "16-30", 30.6 inside "31-45". With contiguous groups, a
# prediction's MAE to the range is 0 exactly when its predicted group is right.
HALF_YEAR = 0.5


def range_error(pred: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance from each predicted age to its group [lo - 0.5, hi + 0.5]: 0 inside, else to the nearest end."""
    pred, lo, hi = (np.asarray(a, dtype=np.float64) for a in (pred, lo, hi))
    return np.maximum(lo - HALF_YEAR - pred, 0.0) + np.maximum(pred - hi - HALF_YEAR, 0.0)


def group_set(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The distinct groups as a (G, 2) array sorted by lo; raises if two of them overlap (no single group
    would then "contain" a predicted age)."""
    pairs = np.unique(np.column_stack([np.asarray(lo, np.float64), np.asarray(hi, np.float64)]), axis=0)
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    if len(pairs) > 1:
        clash = pairs[1:, 0] <= pairs[:-1, 1]
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise ValueError(f"age groups {pairs[i, 0]:g}-{pairs[i, 1]:g} and {pairs[i + 1, 0]:g}-{pairs[i + 1, 1]:g} "
                             "overlap: group accuracy needs disjoint groups")
    return pairs


def assign_groups(pred: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Index into ``groups`` (sorted, disjoint, from :func:`group_set`) of the group each predicted age falls in.

    Boundaries lie half-way between one group's top and the next group's bottom (hi + 0.5 for contiguous
    groups); ages below the first group or above the last go to that end group.
    """
    groups = np.asarray(groups, dtype=np.float64)
    edges = (groups[:-1, 1] + groups[1:, 0]) / 2.0
    return np.searchsorted(edges, np.asarray(pred, dtype=np.float64), side="right")


def group_metrics(pred: np.ndarray, lo: np.ndarray, hi: np.ndarray, groups: np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """Age-group evaluation of point predictions against interval labels.

    - ``accuracy``: share of rows whose predicted group (the group containing the predicted age) is the
      labelled one, with a 95% percentile-bootstrap CI;
    - ``majority``: the majority-class rate, the accuracy of always answering the most common group of these
      rows (the best constant answer on this very set: the strictest constant baseline); ``beats_majority``
      is true when the accuracy's CI lies wholly above it;
    - ``balanced_accuracy``: the mean per-group recall (the majority class cannot game it);
    - ``range_mae``: mean distance from the predicted age to the labelled range (0 inside), with a CI;
    - ``by_group`` rows and the ``confusion`` matrix (rows: labelled group, columns: predicted group).

    ``groups`` (G, 2) is the full set of groups of the data (so a group missing from this split can still be
    predicted); by default the groups of these rows.
    """
    pred, lo, hi = (np.asarray(a, dtype=np.float64) for a in (pred, lo, hi))
    groups = group_set(lo, hi) if groups is None else np.asarray(groups, dtype=np.float64)
    names = [interval_name(a, b) for a, b in groups]
    true_idx = np.array([_group_index(groups, a, b) for a, b in zip(lo, hi)], dtype=np.int64)
    pred_idx = assign_groups(pred, groups)
    correct = (pred_idx == true_idx).astype(np.float64)
    err = range_error(pred, lo, hi)
    counts = np.bincount(true_idx, minlength=len(groups))
    major = int(np.argmax(counts))
    acc = estimate(correct, n_boot=n_boot, seed=seed)
    majority_rate = float(counts[major] / max(len(pred), 1))
    confusion = np.zeros((len(groups), len(groups)), dtype=np.int64)
    np.add.at(confusion, (true_idx, pred_idx), 1)
    by_group = []
    for g, name in enumerate(names):
        m = true_idx == g
        by_group.append({"group": name, "lo": float(groups[g, 0]), "hi": float(groups[g, 1]), "n": int(m.sum()),
                         "recall": float(correct[m].mean()) if m.any() else None,
                         "range_mae": float(err[m].mean()) if m.any() else None,
                         "mean_pred": float(pred[m].mean()) if m.any() else None,
                         "predicted": int((pred_idx == g).sum())})
    recalls = [r["recall"] for r in by_group if r["recall"] is not None]
    return {
        "n": int(len(pred)),
        "accuracy": acc.to_dict(),
        "majority": {"group": names[major], "rate": majority_rate},
        "beats_majority": bool(acc.ci_low > majority_rate),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "range_mae": estimate(err, n_boot=n_boot, seed=seed).to_dict(),
        "by_group": by_group,
        "confusion": {"labels": names, "matrix": confusion.tolist()},
        "convention": "group [lo, hi] in whole years covers [lo - 0.5, hi + 0.5); predicted group = the group "
                      "containing the predicted age; range MAE = distance to that span (0 inside)",
    }


def _group_index(groups: np.ndarray, lo: float, hi: float) -> int:
    hit = np.flatnonzero((groups[:, 0] == lo) & (groups[:, 1] == hi))
    if len(hit) == 0:
        raise ValueError(f"age group {lo:g}-{hi:g} is not among the groups evaluated")
    return int(hit[0])
