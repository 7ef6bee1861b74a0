"""Remove byte-identical images before any split, so no image sits in both train and test."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["content_hash", "deduplicate"]


def content_hash(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def deduplicate(df: pd.DataFrame, conflict: str = "drop") -> tuple[pd.DataFrame, dict]:
    """Keep one row per content hash (per content hash and box, when one image has several faces).

    ``conflict`` says what to do with a group of copies whose labels (age or gender) disagree:
    ``"drop"`` removes the whole group (we cannot know which label is right: agekit's default),
    ``"median"`` keeps one copy with the median age and the majority gender (copies whose age groups,
    ``age_lo``/``age_hi``, disagree keep the smallest range holding all of them).
    Returns the deduplicated frame and a report of what was removed.
    """
    if conflict not in ("drop", "median"):
        raise ValueError(f"conflict must be 'drop' or 'median', got {conflict!r}")
    from .manifest import resolve_paths

    df = df.copy()
    if "content_hash" not in df.columns or df["content_hash"].isna().any():
        df["content_hash"] = [content_hash(p) for p in resolve_paths(df)]
    # Rows of one file with different boxes are different faces (LAGENDA), not copies: key on the
    # boxes too. With one row per image (boxes all NaN or equal) this is exactly the content hash.
    from .manifest import BOX_COLUMNS

    keys = ["content_hash"] + [c for c in BOX_COLUMNS if c in df.columns]
    gid = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    groups = df.groupby(gid, sort=False)
    sizes = groups["path"].transform("size")
    n_age = groups["age"].transform("nunique")
    n_gender = groups["gender"].transform("nunique", dropna=False)  # builtin: a lambda per group is slow
    from .manifest import INTERVAL_COLUMNS

    intervals = [c for c in INTERVAL_COLUMNS if c in df.columns]
    n_group = sum((groups[c].transform("nunique", dropna=False) for c in intervals), pd.Series(0, index=df.index))
    is_dup = sizes > 1
    conflicting = is_dup & ((n_age > 1) | (n_gender > 1) | (n_group > len(intervals)))
    report = {
        "rows_in": int(len(df)),
        "duplicate_groups": int(len(np.unique(gid[is_dup.to_numpy()]))),
        "conflicting_groups": int(len(np.unique(gid[conflicting.to_numpy()]))),
        "conflict_policy": conflict,
    }
    if conflict == "drop":
        keep = ~conflicting.to_numpy()
        out, gid = df[keep], gid[keep]
    else:
        med = groups["age"].transform("median")
        sub = df.loc[conflicting, "gender"]  # the mode only where needed: a lambda per group is slow
        gmode = sub.groupby(gid[conflicting.to_numpy()], sort=False).transform(
            lambda s: s.mode(dropna=True).iloc[0] if s.notna().any() else pd.NA)
        df.loc[conflicting, "age"] = med[conflicting]
        df.loc[conflicting, "gender"] = gmode
        if intervals:  # the hull of the copies' groups and ages: the one range true for every copy's label
            lo = df["age_lo"].fillna(df["age"]).groupby(gid, sort=False).transform("min")
            hi = df["age_hi"].fillna(df["age"]).groupby(gid, sort=False).transform("max")
            df.loc[conflicting, "age_lo"] = lo[conflicting]
            df.loc[conflicting, "age_hi"] = hi[conflicting]
        out = df
    out = out[~pd.Series(gid).duplicated(keep="first").to_numpy()].reset_index(drop=True)
    report["rows_out"] = int(len(out))
    out.attrs.update(df.attrs)
    return out, report
