"""The manifest: one table format that every dataset is turned into.

Columns (CSV or Parquet):
    path                    image file (absolute, or relative to the manifest's own folder)
    age                     float years: the exact age; NaN when unknown (unlabelled prediction sets) or when
                            the row is labelled by an age group only (age_lo/age_hi)
    gender                  0 = male, 1 = female, <NA> unknown
    race                    group label when known (UTKFace: White/Black/Asian/Indian/Others)
    subject_id              identity, when known (enables subject-exclusive splits)
    face_x0..face_y1        face box in pixels, NaN when the image is already a face crop/absent
    person_x0..person_y1    person (body) box, NaN when absent
    lm_x0, lm_y0..lm_y4     optional: five face landmarks in pixels (left eye, right eye, nose tip,
                            left mouth corner, right mouth corner, as seen in the image), NaN when
                            absent; rows with them are aligned to the chip template (agekit.data.crops)
    age_lo, age_hi          optional: an age-group label as an inclusive range of whole years [lo, hi]
                            (PETA's "16-30" is 16, 30; an open top such as "over 60" is 61, AGE_MAX). Rows
                            with an exact age leave them NaN (or set lo = hi = age); see :func:`age_bounds`
    source                  dataset name
    split                   optional: train/val/test or fold index, filled by a splitter
    content_hash            optional: sha1 of the file bytes, filled by deduplication
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["MANIFEST_COLUMNS", "BOX_COLUMNS", "LANDMARK_COLUMNS", "INTERVAL_COLUMNS", "AGE_MAX", "ManifestError",
           "new_manifest", "validate_manifest", "read_manifest", "write_manifest", "resolve_paths", "landmarks_array",
           "with_landmarks", "age_bounds", "interval_rows", "has_intervals", "interval_name"]

FACE_BOX = ["face_x0", "face_y0", "face_x1", "face_y1"]
PERSON_BOX = ["person_x0", "person_y0", "person_x1", "person_y1"]
BOX_COLUMNS = FACE_BOX + PERSON_BOX
MANIFEST_COLUMNS = ["path", "age", "gender", "race", "subject_id", *BOX_COLUMNS, "source"]
LANDMARK_COLUMNS = [f"lm_{axis}{i}" for i in range(5) for axis in "xy"]  # lm_x0, lm_y0, ..., lm_y4
INTERVAL_COLUMNS = ["age_lo", "age_hi"]
OPTIONAL_COLUMNS = [*INTERVAL_COLUMNS, *LANDMARK_COLUMNS, "split", "content_hash"]
AGE_MAX = 130.0  # oldest valid age label; also the top of an open-ended group ("over 60" = [61, AGE_MAX])


class ManifestError(ValueError):
    """A manifest is missing columns or holds labels that make no sense."""


def new_manifest(rows: Iterable[dict], source: str) -> pd.DataFrame:
    """Build a manifest from dict rows, filling absent columns with NA and fixing dtypes."""
    df = pd.DataFrame(list(rows))
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["source"] = df["source"].fillna(source) if df["source"].notna().any() else source
    return _coerce(df[MANIFEST_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in df.columns]])


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["path"] = df["path"].astype(str)
    df["age"] = pd.to_numeric(df["age"], errors="raise").astype("float64")
    df["gender"] = pd.to_numeric(df["gender"], errors="raise").astype("Int64")
    for col in BOX_COLUMNS + [c for c in INTERVAL_COLUMNS + LANDMARK_COLUMNS if c in df.columns]:
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    for col in ("race", "subject_id", "source"):
        df[col] = df[col].astype("string")
    if "split" in df.columns:
        df["split"] = df["split"].astype("string")
    return df


def validate_manifest(df: pd.DataFrame, require_age: bool = True) -> pd.DataFrame:
    """Check columns and labels; raise :class:`ManifestError` naming the first bad row."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest lacks columns: {', '.join(missing)}")
    try:
        df = _coerce(df)
    except (ValueError, TypeError) as e:
        raise ManifestError(f"manifest has a non-numeric label: {e}") from None
    _check_intervals(df)
    unlabelled = df["age"].isna() & ~interval_rows(df)
    if require_age and unlabelled.any():
        i = int(np.flatnonzero(unlabelled.to_numpy())[0])
        raise ManifestError(f"row {i} ({df['path'].iat[i]}): age is missing (neither an age nor age_lo/age_hi)")
    bad_age = df["age"].notna() & ((df["age"] < 0) | (df["age"] > AGE_MAX))
    if bad_age.any():
        i = int(np.flatnonzero(bad_age.to_numpy())[0])
        raise ManifestError(f"row {i} ({df['path'].iat[i]}): age {df['age'].iat[i]} is outside 0-{AGE_MAX:g}")
    bad_gender = df["gender"].notna() & ~df["gender"].isin([0, 1])
    if bad_gender.any():
        i = int(np.flatnonzero(bad_gender.to_numpy())[0])
        raise ManifestError(f"row {i} ({df['path'].iat[i]}): gender {df['gender'].iat[i]} is not 0 (male) or 1 (female)")
    present_lm = [c for c in LANDMARK_COLUMNS if c in df.columns]
    if present_lm and len(present_lm) != len(LANDMARK_COLUMNS):
        missing_lm = [c for c in LANDMARK_COLUMNS if c not in df.columns]
        raise ManifestError(f"manifest has some landmark columns but lacks {', '.join(missing_lm)}")
    if present_lm:
        finite = np.isfinite(df[LANDMARK_COLUMNS].to_numpy())
        partial = finite.any(axis=1) & ~finite.all(axis=1)
        if partial.any():
            i = int(np.flatnonzero(partial)[0])
            raise ManifestError(f"row {i} ({df['path'].iat[i]}): landmarks must be all ten lm_* values or none")
    for box in (FACE_BOX, PERSON_BOX):
        b = df[box].to_numpy()
        present = ~np.isnan(b).any(axis=1)
        flipped = present & ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
        if flipped.any():
            i = int(np.flatnonzero(flipped)[0])
            raise ManifestError(f"row {i} ({df['path'].iat[i]}): box {box[0][:-3]} has x1<=x0 or y1<=y0")
    return df


def _check_intervals(df: pd.DataFrame) -> None:
    """age_lo/age_hi: both columns or neither; per row both or neither, 0 <= lo <= hi <= AGE_MAX, age inside."""
    present = [c for c in INTERVAL_COLUMNS if c in df.columns]
    if not present:
        return
    if len(present) == 1:
        raise ManifestError(f"manifest has {present[0]} but not {(set(INTERVAL_COLUMNS) - set(present)).pop()}")
    lo, hi, age = (df[c].to_numpy(dtype=np.float64) for c in ("age_lo", "age_hi", "age"))
    checks = (
        (np.isnan(lo) != np.isnan(hi), "age_lo and age_hi must both be set or both be empty"),
        (~np.isnan(lo) & ((lo < 0) | (hi > AGE_MAX)), f"age group [{{lo:g}}, {{hi:g}}] is outside 0-{AGE_MAX:g}"),
        (~np.isnan(lo) & (hi < lo), "age group [{lo:g}, {hi:g}] has age_hi < age_lo"),
        (~np.isnan(lo) & ~np.isnan(age) & ((age < lo) | (age > hi)),
         "age {age:g} is outside its age group [{lo:g}, {hi:g}]"),
    )
    for bad, problem in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ManifestError(f"row {i} ({df['path'].iat[i]}): " + problem.format(lo=lo[i], hi=hi[i], age=age[i]))


def has_intervals(df: pd.DataFrame) -> bool:
    """Whether any row is labelled by an age group only (see :func:`interval_rows`)."""
    return bool(interval_rows(df).any())


def interval_rows(df: pd.DataFrame) -> pd.Series:
    """Rows labelled by an age group only: no exact age, and both age_lo and age_hi set."""
    if not all(c in df.columns for c in INTERVAL_COLUMNS):
        return pd.Series(False, index=df.index)
    return df["age"].isna() & df["age_lo"].notna() & df["age_hi"].notna()


def age_bounds(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float arrays, one pair per row, the one place labels become training/evaluation targets.

    An exact age gives lo = hi = age (it wins over a group on the same row); a group-only row gives its
    range; an unlabelled row gives NaN, NaN. Ranges are in whole years, inclusive: [16, 30] holds every
    age from 16.0 to 30.x, i.e. the continuous span [lo - 0.5, hi + 0.5) of the integer-age bins.
    """
    age = df["age"].to_numpy(dtype=np.float64, na_value=np.nan)
    lo, hi = age.copy(), age.copy()
    if all(c in df.columns for c in INTERVAL_COLUMNS):
        group = np.isnan(age)
        lo[group] = df["age_lo"].to_numpy(dtype=np.float64, na_value=np.nan)[group]
        hi[group] = df["age_hi"].to_numpy(dtype=np.float64, na_value=np.nan)[group]
    return lo, hi


def interval_name(lo: float, hi: float) -> str:
    """A group's label: '16-30', '61+' for an open top (hi = AGE_MAX), '25' for a one-year group."""
    if hi >= AGE_MAX:
        return f"{lo:g}+"
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def read_manifest(path: str | Path, require_age: bool = True) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"subject_id": "string", "race": "string"})
    df = validate_manifest(df, require_age=require_age)
    df.attrs["root"] = str(path.parent.resolve())
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def resolve_paths(df: pd.DataFrame) -> list[Path]:
    root = Path(df.attrs.get("root", "."))
    return [p if p.is_absolute() else root / p for p in map(Path, df["path"])]


def landmarks_array(df: pd.DataFrame) -> np.ndarray:
    """(N, 5, 2) float64 five-point landmarks per row; NaN rows (or a manifest without lm_* columns)."""
    if not all(c in df.columns for c in LANDMARK_COLUMNS):
        return np.full((len(df), 5, 2), np.nan)
    return df[LANDMARK_COLUMNS].to_numpy(dtype=np.float64).reshape(-1, 5, 2)


def with_landmarks(df: pd.DataFrame, pts: np.ndarray) -> pd.DataFrame:
    """A copy of ``df`` with the lm_* columns set from ``pts`` (N, 5, 2) (NaN = none), attrs kept."""
    pts = np.asarray(pts, dtype=np.float64).reshape(len(df), 10)
    out = df.copy()
    for j, col in enumerate(LANDMARK_COLUMNS):
        out[col] = pts[:, j]
    out.attrs.update(df.attrs)
    return out
