"""UTKFace ("Aligned & Cropped Faces"): labels live in file names.

``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``. Quirks handled (see shared/README.md): a space
before ``.jpg``, a missing dot before ``jpg``, and three files with no race field.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..manifest import new_manifest
from . import register_adapter

RACES = ("White", "Black", "Asian", "Indian", "Others")
_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?:(?P<race>[0-4])_)?(?P<stamp>\d{8,})\s*\.?jpg", re.IGNORECASE)


def parse_utkface_name(name: str) -> dict | None:
    """Labels from one file name, or None when the name does not follow the pattern."""
    m = _NAME.match(name)
    if m is None:
        return None
    race = m.group("race")
    return {"age": float(m.group("age")), "gender": int(m.group("gender")),
            "race": RACES[int(race)] if race is not None else pd.NA}


@register_adapter("utkface")
def utkface_manifest(root: str | Path, **_: object) -> pd.DataFrame:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"UTKFace folder not found: {root}")
    rows, skipped = [], []
    for p in sorted(root.iterdir()):
        if not p.is_file() or not p.name.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        labels = parse_utkface_name(p.name)
        if labels is None:
            skipped.append(p.name)
            continue
        rows.append({"path": str(p.resolve()), **labels})
    df = new_manifest(rows, source="utkface")
    df.attrs["skipped"] = skipped
    return df
