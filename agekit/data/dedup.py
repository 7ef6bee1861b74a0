"""Remove byte-identical images before any split, so no image sits in both train and test."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

__all__ = ["content_hash", "deduplicate"]


def content_hash(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def deduplicate(df: pd.DataFrame, conflict: str = "drop") -> tuple[pd.DataFrame, dict]:
    """Keep one row per content hash.

    ``conflict`` says what to do with a group of copies whose labels (age or gender) disagree:
    ``"drop"`` removes the whole group (we cannot know which label is right: agekit's default),
    ``"median"`` keeps one copy with the median age and the majority gender.
    Returns the deduplicated frame and a report of what was removed.
    """
    if conflict not in ("drop", "median"):
        raise ValueError(f"conflict must be 'drop' or 'median', got {conflict!r}")
    from .manifest import resolve_paths

    df = df.copy()
    if "content_hash" not in df.columns or df["content_hash"].isna().any():
        df["content_hash"] = [content_hash(p) for p in resolve_paths(df)]
    groups = df.groupby("content_hash", sort=False)
    sizes = groups["path"].transform("size")
    n_age = groups["age"].transform("nunique")
    n_gender = groups["gender"].transform(lambda s: s.nunique(dropna=False))
    is_dup = sizes > 1
    conflicting = is_dup & ((n_age > 1) | (n_gender > 1))
    report = {
        "rows_in": int(len(df)),
        "duplicate_groups": int(df.loc[is_dup, "content_hash"].nunique()),
        "conflicting_groups": int(df.loc[conflicting, "content_hash"].nunique()),
        "conflict_policy": conflict,
    }
    if conflict == "drop":
        out = df[~conflicting]
    else:
        med = groups["age"].transform("median")
        gmode = groups["gender"].transform(lambda s: s.mode(dropna=True).iloc[0] if s.notna().any() else pd.NA)
        df.loc[conflicting, "age"] = med[conflicting]
        df.loc[conflicting, "gender"] = gmode[conflicting]
        out = df
    out = out.drop_duplicates("content_hash", keep="first").reset_index(drop=True)
    report["rows_out"] = int(len(out))
    out.attrs.update(df.attrs)
    return out, report
