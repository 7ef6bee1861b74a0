"""Deterministic splits, written to files so that every model is scored on the same images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["random_split", "subject_split", "kfold_split", "apply_split_file", "write_split_file"]


def _check_fracs(fracs: tuple[float, float, float]) -> None:
    if len(fracs) != 3 or any(f < 0 for f in fracs) or abs(sum(fracs) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fracs}")


def _assign(n: int, fracs: tuple[float, float, float]) -> np.ndarray:
    n_train = int(round(fracs[0] * n))
    n_val = min(int(round(fracs[1] * n)), n - n_train)  # rounding both up must not overrun n
    return np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val), dtype=object)


def _image_groups(df: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Group code per row: rows of one image (same content hash, else same path) share a code.

    Several rows can describe one image (one per face, as in LAGENDA); they must land in the
    same split. Codes follow first appearance, so with one row per image the code is the row
    number and the splits below are exactly what they were before grouping existed.
    """
    key = df["content_hash"] if "content_hash" in df.columns and df["content_hash"].notna().all() else df["path"]
    codes, uniques = pd.factorize(key, sort=False)
    return codes, len(uniques)


def random_split(df: pd.DataFrame, fracs=(0.8, 0.1, 0.1), seed: int = 0) -> pd.DataFrame:
    """Shuffle images with ``seed`` and cut train/val/test. Deduplicate first (agekit.data.dedup)."""
    _check_fracs(fracs)
    codes, n = _image_groups(df)
    order = np.random.default_rng(seed).permutation(n)
    split = np.empty(n, dtype=object)
    split[order] = _assign(n, fracs)
    return df.assign(split=pd.array(split[codes], dtype="string"))


def subject_split(df: pd.DataFrame, fracs=(0.8, 0.1, 0.1), seed: int = 0) -> pd.DataFrame:
    """Every image of one subject goes to the same split (needs ``subject_id``)."""
    _check_fracs(fracs)
    if df["subject_id"].isna().any():
        raise ValueError("subject-exclusive split needs a subject_id on every row")
    subjects = np.array(sorted(df["subject_id"].unique()))
    subjects = subjects[np.random.default_rng(seed).permutation(len(subjects))]
    by_subject = dict(zip(subjects, _assign(len(subjects), fracs)))
    return df.assign(split=pd.array(df["subject_id"].map(by_subject), dtype="string"))


def kfold_split(df: pd.DataFrame, k: int = 5, seed: int = 0, by_subject: bool = False) -> pd.DataFrame:
    """``split`` becomes the fold index ``"0".."k-1"``; subjects stay within one fold if asked."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    rng = np.random.default_rng(seed)
    if by_subject:
        if df["subject_id"].isna().any():
            raise ValueError("subject k-fold needs a subject_id on every row")
        subjects = np.array(sorted(df["subject_id"].unique()))
        subjects = subjects[rng.permutation(len(subjects))]
        fold = {s: str(i % k) for i, s in enumerate(subjects)}
        return df.assign(split=pd.array(df["subject_id"].map(fold), dtype="string"))
    codes, n = _image_groups(df)
    order = rng.permutation(n)
    folds = np.empty(n, dtype=object)
    folds[order] = [str(i % k) for i in range(n)]
    return df.assign(split=pd.array(folds[codes], dtype="string"))


def write_split_file(df: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write ``file,split`` with paths relative to ``root`` (file lists only, no images)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = df["path"].astype(str)
    if root is not None:
        root = Path(root).resolve()
        files = files.map(lambda p: _relative(p, root))
    pd.DataFrame({"file": files, "split": df["split"]}).sort_values("file").to_csv(path, index=False)
    return path


def _relative(p: str, root: Path) -> str:
    """``p`` relative to ``root`` as a posix path; kept absolute when it lies outside ``root``."""
    if not Path(p).is_absolute():
        return p
    try:
        return Path(p).resolve().relative_to(root).as_posix()
    except ValueError:
        return p


def apply_split_file(df: pd.DataFrame, split_file: str | Path) -> pd.DataFrame:
    """Attach the splits of a split file (matched on file name relative to the dataset root).

    A listed ``file`` matches a row whose path ends with the same path components, so
    ``a/001.jpg`` and ``b/001.jpg`` stay apart while flat lists (UTKFace) match on the name.
    Rows that the split file does not list (e.g. removed duplicates) are dropped, so a shipped
    split gives the same test set everywhere.
    """
    sf = pd.read_csv(split_file, dtype=str)
    if list(sf.columns[:2]) != ["file", "split"]:
        raise ValueError(f"split file {split_file} must have columns file,split")
    listed = sf["file"].map(lambda p: Path(p.replace("\\", "/")).parts)
    mapping = dict(zip(listed.map("/".join), sf["split"]))
    parts = df["path"].map(lambda p: Path(p).parts)
    split = pd.Series(pd.NA, index=df.index, dtype="string")
    for depth in sorted(set(listed.map(len)), reverse=True):  # deepest (most specific) match first
        key = parts.map(lambda t: "/".join(t[-depth:]) if len(t) >= depth else None)
        split = split.fillna(key.map(mapping).astype("string"))
    out = df.assign(split=split)
    return out[out["split"].notna()].reset_index(drop=True)
