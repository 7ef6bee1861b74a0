"""IMDB-clean / LAGENDA annotation CSVs in MiVOLO's layout: one row per person, boxes in pixels.

Columns ``img_name, age, gender, face_x0, face_y0, face_x1, face_y1`` and optionally
``person_x0 .. person_y1``; ``img_name`` is relative to the images root. As in MiVOLO, -1 marks
an absent box, an unknown age or an unknown gender. Gender is read as M/F (MiVOLO's own files);
0/1 is also accepted and read in agekit's convention (0 = male, 1 = female), so a CSV with any
other coding must be converted first. Rows are dropped (and counted) when the age is unknown
(agekit manifests are for age training) or when neither a face nor a person box is given.
Several rows may share an image; dedup and splits treat them as one image.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..manifest import FACE_BOX, new_manifest
from . import register_adapter
from .folder import LabelFileError, find_labels, parse_ages, parse_boxes, parse_genders, read_label_csv, resolve_images

REQUIRED = ["img_name", "age", "gender", *FACE_BOX]


@register_adapter("lagenda")
def lagenda_manifest(root: str | Path, labels: str | Path | None = None, allow_missing: bool = False,
                     source: str = "lagenda", **_: object) -> pd.DataFrame:
    """Manifest of a MiVOLO-style CSV (``labels``, default: the one CSV in ``root``) over ``root`` images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images root not found: {root}")
    path = find_labels(root, labels)
    df = read_label_csv(path, REQUIRED)
    if df.empty:
        raise LabelFileError(f"{path}: no rows")
    table = pd.concat([pd.DataFrame({"age": parse_ages(path, df, unknown_ok=True),
                                     "gender": parse_genders(path, df)}), parse_boxes(path, df)], axis=1)
    no_age = table["age"].isna()
    no_box = table.reindex(columns=[c for c in table.columns if c.startswith(("face_", "person_"))]).isna().all(axis=1)
    keep = (~no_age & ~no_box).to_numpy()
    df, missing = resolve_images(path, root, pd.concat([df[["line", "img_name"]], table], axis=1)[keep],
                                 "img_name", allow_missing)
    if df.empty:
        raise LabelFileError(f"{path}: no usable rows (every row lacks an age, a box or its image)")
    out = new_manifest(df.drop(columns=["line", "img_name"]).to_dict("records"), source=source)
    notes = []
    if no_age.any():
        notes.append(f"{int(no_age.sum())} rows with unknown age (-1) dropped")
    if (no_box & ~no_age).any():
        notes.append(f"{int((no_box & ~no_age).sum())} rows with neither face nor person box dropped")
    if missing:
        notes.append(f"{len(missing)} listed images not found (skipped), e.g. {missing[0]}")
    out.attrs["notes"] = notes
    return out
