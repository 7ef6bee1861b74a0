"""`agekit data prepare` as a function: adapter -> dedup by content hash -> split -> manifest.

Duplicates are removed before splitting, so a byte-identical copy can never sit in train and
test at once; the split is then checked for exactly that.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .adapters import get_adapter
from .datasets import default_split_file
from .dedup import deduplicate
from .manifest import write_manifest
from .splits import apply_split_file, kfold_split, random_split, subject_split, write_split_file

__all__ = ["SPLIT_MODES", "prepare_manifest", "write_prepared", "split_leaks", "parquet_engine", "check_output"]

SPLIT_MODES = ("default", "random", "subject", "kfold", "none")


def parquet_engine() -> str | None:
    """The installed Parquet engine pandas can use, or None."""
    for mod in ("pyarrow", "fastparquet"):
        try:
            __import__(mod)
            return mod
        except ImportError:
            continue
    return None


def check_output(path: str | Path) -> None:
    """Fail early (before minutes of hashing) when the output format cannot be written."""
    path = Path(path)
    if path.suffix == ".parquet" and parquet_engine() is None:
        raise ValueError(f"{path}: writing .parquet needs pyarrow, which is not installed "
                         "(pip install pyarrow), or write a .csv manifest instead")
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: manifest must end in .csv or .parquet")


def split_leaks(df: pd.DataFrame) -> int:
    """How many content hashes appear in more than one split (must be 0)."""
    if "split" not in df.columns or "content_hash" not in df.columns or df["content_hash"].isna().any():
        return 0
    return int((df.groupby("content_hash")["split"].nunique() > 1).sum())


def _has_subjects(df: pd.DataFrame) -> bool:
    return bool(len(df)) and df["subject_id"].notna().all()


def _split(df: pd.DataFrame, fmt: str, mode: str, fracs, seed: int, k: int) -> tuple[pd.DataFrame, str]:
    """Apply ``mode``; returns the frame and a description of the split actually used."""
    if mode == "none":
        return df.drop(columns=["split"], errors="ignore"), "none"
    if mode == "default":
        shipped = default_split_file(fmt)
        if shipped is not None:
            return apply_split_file(df, shipped), f"shipped split file {shipped.name}"
        if "split" in df.columns and df["split"].notna().any():
            return df[df["split"].notna()].reset_index(drop=True), f"official {fmt} split"
        mode = "subject" if _has_subjects(df) else "random"
        how = f"no shipped split for {fmt}: "
    else:
        how = ""
    df = df.drop(columns=["split"], errors="ignore")
    if mode == "random":
        return random_split(df, fracs, seed), how + f"random {fracs} seed {seed}"
    if mode == "subject":
        if not _has_subjects(df):
            n = int(df["subject_id"].isna().sum())
            raise ValueError(f"--split subject needs a subject_id on every row; {fmt} has {n} rows without one")
        return subject_split(df, fracs, seed), how + f"subject-exclusive {fracs} seed {seed}"
    if mode == "kfold":
        by_subject = _has_subjects(df)
        return kfold_split(df, k, seed, by_subject=by_subject), f"{k}-fold by {'subject' if by_subject else 'image'}, seed {seed}"
    raise ValueError(f"unknown split mode {mode!r}; choose from {', '.join(SPLIT_MODES)}")


def prepare_manifest(fmt: str, root: str | Path, *, split: str = "default", seed: int = 0,
                     fracs: tuple[float, float, float] = (0.8, 0.1, 0.1), k: int = 5, dedup: bool = True,
                     conflict: str = "drop", **adapter_kwargs) -> tuple[pd.DataFrame, dict]:
    """Run the ``fmt`` adapter on ``root``, deduplicate, split; returns (manifest, report)."""
    if split not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {split!r}; choose from {', '.join(SPLIT_MODES)}")
    df = get_adapter(fmt)(root, seed=seed, **adapter_kwargs)
    report: dict = {"format": fmt, "root": str(root), "rows_read": int(len(df)),
                    "notes": list(df.attrs.get("notes", []))}
    if df.attrs.get("skipped"):
        report["notes"].append(f"{len(df.attrs['skipped'])} files skipped (names without labels)")
    if dedup:
        df, report["dedup"] = deduplicate(df, conflict=conflict)
    before = len(df)
    df, report["split"] = _split(df, fmt, split, fracs, seed, k)
    if len(df) < before:
        report["notes"].append(f"{before - len(df)} rows not in the split were dropped")
    report["rows_out"] = int(len(df))
    counts = df["split"].value_counts().to_dict() if "split" in df.columns else {}
    order = {"train": 0, "val": 1, "test": 2}
    report["split_counts"] = {k: int(counts[k]) for k in sorted(counts, key=lambda k: (order.get(k, 3), k))}
    report["leaks"] = split_leaks(df)
    return df, report


def write_prepared(df: pd.DataFrame, out: str | Path, root: str | Path, split_out: str | Path | None = None) -> dict:
    """Write the manifest and, when split, the ``file,split`` list next to it (or at ``split_out``)."""
    out = Path(out)
    check_output(out)
    written = {"manifest": str(write_manifest(df, out))}
    if "split" in df.columns:
        split_out = Path(split_out) if split_out else out.with_name(f"{out.stem}.split.csv")
        written["split_file"] = str(write_split_file(df.drop_duplicates("path"), split_out, root=root))
    return written
