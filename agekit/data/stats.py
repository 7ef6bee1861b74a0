"""What is in a manifest: counts, the age distribution and the label groups, as a plain dict.

Kept separate from the CLI so that notebooks, reports and tests get the same numbers that
`agekit data stats` prints (and can write them as JSON).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["manifest_stats", "age_histogram", "group_table", "age_group_table"]

GENDER_NAMES = {0: "male", 1: "female"}


def _num(x) -> float | None:
    """A JSON-safe float (None for NaN/NA)."""
    return None if x is None or pd.isna(x) else round(float(x), 4)


def group_table(df: pd.DataFrame, key: pd.Series) -> list[dict]:
    """Rows and mean age per group of ``key`` (NA grouped as ``unknown``), largest first."""
    key = key.astype("string").fillna("unknown")
    g = df.assign(_k=key.to_numpy()).groupby("_k", sort=False)["age"]
    out = [{"group": str(k), "count": int(n), "mean_age": _num(m)}
           for k, n, m in zip(g.size().index, g.size().to_numpy(), g.mean().reindex(g.size().index).to_numpy())]
    return sorted(out, key=lambda r: (-r["count"], r["group"]))


def age_histogram(ages: np.ndarray, bin_width: int = 5, weights: np.ndarray | None = None) -> list[dict]:
    """Counts per ``[lo, lo + bin_width)`` bin from the youngest to the oldest bin, empty bins included."""
    ages = np.asarray(ages, dtype=np.float64)
    ages = ages[~np.isnan(ages)]
    if bin_width < 1:
        raise ValueError(f"bin width must be >= 1, got {bin_width}")
    if len(ages) == 0:
        return []
    lo = int(math.floor(ages.min() / bin_width) * bin_width)
    hi = int(math.floor(ages.max() / bin_width) * bin_width) + bin_width
    edges = np.arange(lo, hi + bin_width, bin_width)
    counts, _ = np.histogram(ages, bins=edges)
    bins = [{"lo": int(a), "hi": int(a + bin_width), "count": int(c)} for a, c in zip(edges[:-1], counts)]
    if weights is not None:
        idx = np.clip(((ages - lo) // bin_width).astype(int), 0, len(bins) - 1)
        for i, b in enumerate(bins):
            b["mean_weight"] = _num(weights[idx == i].mean()) if (idx == i).any() else None
    return bins


def age_group_table(df: pd.DataFrame) -> list[dict]:
    """Rows labelled by an age group only (``age_lo``/``age_hi``): images and people per group, overall and
    per split, youngest group first. People are distinct ``subject_id`` values (NA when a row has none)."""
    from .manifest import interval_name, interval_rows

    sub = df[interval_rows(df).to_numpy()]
    if sub.empty:
        return []
    has_split = "split" in sub.columns
    out = []
    for (lo, hi), g in sub.groupby(["age_lo", "age_hi"], sort=True):
        row = {"group": interval_name(lo, hi), "lo": float(lo), "hi": float(hi), "images": int(len(g)),
               "people": _people(g)}
        if has_split:
            row["by_split"] = {str(k): {"images": int(len(s)), "people": _people(s)}
                               for k, s in g.groupby(g["split"].astype("string").fillna("none"), sort=True)}
        out.append(row)
    return out


def _people(df: pd.DataFrame) -> int | None:
    ids = df["subject_id"]
    return None if ids.isna().any() else int(ids.nunique())


def manifest_stats(df: pd.DataFrame, bin_width: int = 5, lds: bool = False, **lds_kwargs) -> dict:
    """Summary of a manifest; with ``lds`` also the LDS weight range (on the train split when there is one)."""
    from .manifest import interval_rows

    ages = df["age"].to_numpy(dtype=np.float64, na_value=np.nan)
    known = ages[~np.isnan(ages)]
    n_groups = int(interval_rows(df).sum())  # labelled by an age group only: not "missing"
    splits = group_table(df, df["split"]) if "split" in df.columns else []
    for r in splits:  # people per split (distinct subject ids), when every row of the split has one
        r["people"] = _people(df[df["split"].astype("string").fillna("unknown") == r["group"]])
    out: dict = {
        "rows": int(len(df)),
        "splits": splits,
        "sources": group_table(df, df["source"]),
        "age": {"count": int(len(known)), "missing": int(len(ages) - len(known)) - n_groups, "age_group_only": n_groups,
                "min": _num(known.min()) if len(known) else None, "max": _num(known.max()) if len(known) else None,
                "mean": _num(known.mean()) if len(known) else None,
                "median": _num(np.median(known)) if len(known) else None,
                "std": _num(known.std()) if len(known) else None},
        "gender": group_table(df, df["gender"].map(GENDER_NAMES, na_action="ignore")),
        "race": group_table(df, df["race"]),
        "age_bin_width": int(bin_width),
        "age_groups": age_group_table(df),
    }
    weights, use = None, None
    if lds:
        from .lds import lds_weights

        train = df["split"].eq("train").fillna(False).to_numpy(bool) if "split" in df.columns else np.zeros(len(df), bool)
        use = (train if train.any() else np.ones(len(df), bool)) & ~np.isnan(ages)
        if use.any():
            weights = lds_weights(ages[use], **lds_kwargs)
            out["lds"] = {"computed_on": "train split" if train.any() else "all rows", "rows": int(use.sum()),
                          "min": _num(weights.min()), "max": _num(weights.max()),
                          "max_over_min": _num(weights.max() / weights.min()), "mean": _num(weights.mean()),
                          **lds_kwargs}
    out["age_histogram"] = age_histogram(ages, bin_width)
    if weights is not None:  # every row is counted; the mean LDS weight per bin is over the rows LDS saw
        per_bin = {b["lo"]: b["mean_weight"] for b in age_histogram(ages[use], bin_width, weights)}
        for b in out["age_histogram"]:
            b["mean_weight"] = per_bin.get(b["lo"])
    return out
