"""Bring your own data: a folder of images plus a CSV of labels.

Columns: ``file`` (relative to the folder, or absolute) and ``age`` are required (or, for age-group labels,
``age_lo`` and ``age_hi``: an inclusive range of whole years, ``age`` then empty on those rows); ``gender``
(M/F, male/female, or 0/1 in agekit's convention 0 = male, 1 = female; empty or -1 = unknown),
``race``, ``subject_id`` and the box columns (``face_x0`` .. ``person_y1``, -1 or empty = absent)
are optional. The label parsers here are shared with the LAGENDA adapter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..manifest import FACE_BOX, PERSON_BOX, new_manifest
from . import register_adapter

GENDERS = {"m": 0, "male": 0, "0": 0, "f": 1, "female": 1, "1": 1}
UNKNOWN = {"", "-1", "nan", "na", "none", "unknown"}
MAX_AGE = 130


class LabelFileError(ValueError):
    """A label CSV that cannot be used; the message names the file and line."""


def read_label_csv(path: Path, required: list[str]) -> pd.DataFrame:
    """All cells as stripped strings, with ``line`` = the line number in the file (header = 1)."""
    if not path.is_file():
        raise FileNotFoundError(f"label CSV not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise LabelFileError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LabelFileError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    df = df.fillna("").apply(lambda s: s.str.strip())
    df.insert(0, "line", np.arange(2, len(df) + 2))
    return df[(df.drop(columns="line") != "").any(axis=1)].reset_index(drop=True)


def _fail(path: Path, df: pd.DataFrame, bad: pd.Series, problem: str) -> None:
    """Raise naming the first bad row's line (and how many rows are bad)."""
    i = int(np.flatnonzero(bad.to_numpy())[0])
    raise LabelFileError(f"{path}:{df['line'].iat[i]}: {problem} ({int(bad.sum())} bad row(s))")


def _check(path: Path, df: pd.DataFrame, bad: pd.Series, col: str, problem: str) -> None:
    if bad.any():
        value = df[col].iat[int(np.flatnonzero(bad.to_numpy())[0])]
        _fail(path, df, bad, f"{col} is empty" if value == "" else f"{col} {value!r} {problem}")


def parse_ages(path: Path, df: pd.DataFrame, col: str = "age", unknown_ok: bool = False) -> pd.Series:
    """Float ages; empty/-1 are NaN when ``unknown_ok`` (LAGENDA), else an error."""
    raw = df[col]
    age = pd.to_numeric(raw, errors="coerce")
    unknown = raw.str.lower().isin(UNKNOWN) if unknown_ok else raw.eq("")
    if not unknown_ok:
        _check(path, df, unknown, col, "is missing")
    _check(path, df, age.isna() & ~unknown, col, "is not a number")
    _check(path, df, ~unknown & (age < 0), col, "is negative")
    _check(path, df, ~unknown & (age > MAX_AGE), col, f"is above {MAX_AGE}")
    return age.where(~unknown).astype("float64")


def parse_age_groups(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """``age`` (optional column), ``age_lo``, ``age_hi``: each row needs an age or both ends of its group."""
    if "age" not in df.columns:
        df = df.assign(age="")
    out = pd.DataFrame({c: parse_ages(path, df, c, unknown_ok=True) for c in ("age", "age_lo", "age_hi")})
    half = out["age_lo"].isna() != out["age_hi"].isna()
    if half.any():
        _fail(path, df, half, "age_lo and age_hi must both be set or both be empty")
    unlabelled = out["age"].isna() & out["age_lo"].isna()
    if unlabelled.any():
        _fail(path, df, unlabelled, "no age and no age_lo/age_hi")
    flipped = out["age_hi"] < out["age_lo"]
    if flipped.any():
        _fail(path, df, flipped, "age_hi is below age_lo")
    outside = out["age"].notna() & out["age_lo"].notna() & ((out["age"] < out["age_lo"]) | (out["age"] > out["age_hi"]))
    if outside.any():
        _fail(path, df, outside, "age is outside [age_lo, age_hi]")
    return out


def parse_genders(path: Path, df: pd.DataFrame, col: str = "gender") -> pd.Series:
    """agekit genders (0 male, 1 female, NA unknown) from M/F, male/female, 0/1 (case-insensitive)."""
    key = df[col].str.lower().str.replace(r"^([01])\.0*$", r"\1", regex=True)
    gender = key.map(GENDERS)
    _check(path, df, gender.isna() & ~key.isin(UNKNOWN), col, "is not M/F, male/female or 0/1 (0 = male)")
    return gender.astype("Int64")


def parse_boxes(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Numeric box columns present in ``df``; a box that is all -1 (or empty) is absent (NaN)."""
    out = pd.DataFrame(index=df.index)
    for box in (FACE_BOX, PERSON_BOX):
        if not all(c in df.columns for c in box):
            continue
        vals = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in box})
        for c in box:
            _check(path, df, vals[c].isna() & df[c].ne(""), c, "is not a number")
        absent = (vals.eq(-1) | vals.isna()).all(axis=1)
        out[box] = vals.mask(absent)
        present = ~absent & vals.notna().all(axis=1)
        flipped = present & ((vals[box[2]] <= vals[box[0]]) | (vals[box[3]] <= vals[box[1]]))
        if flipped.any():
            _fail(path, df, flipped, f"{box[0][:-3]} box has x1<=x0 or y1<=y0")
    return out


def find_labels(root: Path, labels: str | Path | None) -> Path:
    """The label CSV: ``labels`` if given (relative to cwd or ``root``), else the one CSV in ``root``."""
    if labels is not None:
        p = Path(labels)
        return root / p if not p.is_file() and (root / p).is_file() else p
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) != 1:
        raise FileNotFoundError(f"{root}: expected exactly one label .csv in the folder, found {len(csvs)}; pass labels= (--labels)")
    return csvs[0]


def resolve_images(path: Path, root: Path, df: pd.DataFrame, col: str, allow_missing: bool) -> tuple[pd.DataFrame, list[str]]:
    """Absolute image paths; missing files are an error naming the line, or dropped if allowed."""
    files = df[col].map(lambda f: (root / f).resolve() if not Path(f).is_absolute() else Path(f))
    exists = files.map(Path.is_file)
    _check(path, df, df[col].eq(""), col, "is empty")
    missing = df.loc[~exists, col].drop_duplicates().tolist()
    if missing and not allow_missing:
        _check(path, df, ~exists, col, f"not found under {root}")
    df = df.assign(path=files.map(str))[exists.to_numpy()].reset_index(drop=True)
    return df, missing


@register_adapter("folder")
def folder_manifest(root: str | Path, labels: str | Path | None = None, allow_missing: bool = False,
                    source: str = "folder", **_: object) -> pd.DataFrame:
    """Manifest of ``root`` (images) and its label CSV (``file, age[, gender, race, subject_id, boxes]``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    path = find_labels(root, labels)
    df = read_label_csv(path, ["file"])
    groups = {"age_lo", "age_hi"} <= set(df.columns)
    if not groups and "age" not in df.columns:
        raise LabelFileError(f"{path}: missing column(s) age (or age_lo and age_hi) (has: {', '.join(df.columns[1:])})")
    if df.empty:
        raise LabelFileError(f"{path}: no rows")
    table = parse_age_groups(path, df) if groups else pd.DataFrame({"age": parse_ages(path, df)})
    if "gender" in df.columns:
        table["gender"] = parse_genders(path, df)
    for col in ("race", "subject_id"):
        if col in df.columns:
            table[col] = df[col].replace("", pd.NA)
    table = pd.concat([table, parse_boxes(path, df)], axis=1)
    df, missing = resolve_images(path, root, pd.concat([df[["line", "file"]], table], axis=1), "file", allow_missing)
    out = new_manifest(df.drop(columns=["line", "file"]).to_dict("records"), source=source)
    out.attrs["notes"] = [f"{len(missing)} listed images not found (skipped), e.g. {missing[0]}"] if missing else []
    return out
