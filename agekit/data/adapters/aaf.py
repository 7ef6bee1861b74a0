"""All-Age-Faces (AAF): 13,322 aligned faces aged 2-80, mostly Asian; labels in names and lists.

``aglined faces/%05dA%02d.jpg`` (serial, age; the folder name is misspelt in the release). Gender
comes from two sources that should agree: the serial range (00000-07380 female, 07381-13321 male)
and ``image sets/{train,val}.txt`` lines ``name gender`` where 1 = male (the opposite of agekit's
1 = female). Where both exist and disagree, the gender is set to unknown (NA) and the file is
reported, since neither source is more trustworthy; the age is still used.

When the lists exist they give the official split: ``val.txt`` becomes ``test`` and a
deterministic ``val_frac`` of ``train.txt`` (seeded) becomes ``val``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..manifest import new_manifest
from . import register_adapter

_NAME = re.compile(r"^(?P<serial>\d{5})A(?P<age>\d{2})\.jpe?g$", re.IGNORECASE)
LAST_FEMALE, LAST_MALE = 7380, 13321
FACE_DIRS = ("aglined faces", "aligned faces")


class AAFError(ValueError):
    """A bad AAF name or list line; the message names the file and line."""


def parse_aaf_name(name: str) -> dict | None:
    """Serial, age and the gender implied by the serial range (NA outside it)."""
    m = _NAME.match(Path(name).name)
    if m is None:
        return None
    serial = int(m.group("serial"))
    gender = 1 if serial <= LAST_FEMALE else 0 if serial <= LAST_MALE else pd.NA
    return {"serial": serial, "age": float(m.group("age")), "gender": gender}


def read_image_set(path: Path) -> pd.DataFrame:
    """``name gender`` lines of one list as (name, gender in agekit's 0 = male / 1 = female)."""
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise AAFError(f"{path}:{i}: expected 'name gender' with gender 0 or 1 (1 = male), got {line.strip()!r}")
        name = Path(fields[0].replace("\\", "/")).name
        if parse_aaf_name(name) is None:
            raise AAFError(f"{path}:{i}: {name!r} does not follow %05dA%02d.jpg")
        rows.append((name, 1 - int(fields[1])))  # AAF 1 = male -> agekit 0 = male
    return pd.DataFrame(rows, columns=["name", "gender"])


def _faces_dir(root: Path) -> Path:
    for d in FACE_DIRS:
        if (root / d).is_dir():
            return root / d
    raise FileNotFoundError(f"AAF aligned-faces folder not found: {root / FACE_DIRS[0]}")


@register_adapter("aaf")
def aaf_manifest(root: str | Path, val_frac: float = 0.1, seed: int = 0, **_: object) -> pd.DataFrame:
    """Manifest of an AAF folder; a ``split`` column when ``image sets/`` holds the official lists."""
    root = Path(root)
    faces = _faces_dir(root)
    rows = []
    for p in sorted(faces.iterdir()):
        if not p.is_file() or p.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        labels = parse_aaf_name(p.name)
        if labels is None:
            raise AAFError(f"{p}: name does not follow %05dA%02d.jpg (serial, age)")
        rows.append({"path": str(p.resolve()), "name": p.name, **labels})  # "mostly Asian": no per-image race
    if not rows:
        raise AAFError(f"{faces}: no images found")
    table = pd.DataFrame(rows)
    notes: list[str] = []
    lists = {s: root / "image sets" / f"{s}.txt" for s in ("train", "val")}
    if all(p.is_file() for p in lists.values()):
        table, notes = _apply_lists(table, lists, val_frac, seed)
    elif any(p.is_file() for p in lists.values()):
        missing = [str(p) for p in lists.values() if not p.is_file()]
        raise FileNotFoundError(f"AAF image set list not found: {missing[0]}")
    df = new_manifest(table.drop(columns=["name", "serial"]).to_dict("records"), source="aaf")
    df.attrs["notes"] = notes
    df.attrs["gender_disagreements"] = table.attrs.get("gender_disagreements", [])
    return df


def _apply_lists(table: pd.DataFrame, lists: dict[str, Path], val_frac: float, seed: int):
    """Cross-check gender with the official lists and attach the official split."""
    sets = pd.concat([read_image_set(p).assign(official=s) for s, p in lists.items()], ignore_index=True)
    dup = sets["name"].duplicated(keep=False)
    if dup.any():
        raise AAFError(f"{lists['train'].parent}: {sets.loc[dup, 'name'].iat[0]} is listed more than once")
    merged = table.merge(sets.rename(columns={"gender": "list_gender"}), on="name", how="left")
    absent = sorted(set(sets["name"]) - set(table["name"]))
    listed = merged["list_gender"].notna()
    serial_known = merged["gender"].notna()
    differs = merged["gender"].astype("Int64") != merged["list_gender"].astype("Int64")
    disagree = (listed & serial_known & differs.fillna(False)).astype(bool)
    merged["gender"] = merged["gender"].where(serial_known, merged["list_gender"]).astype("Int64")
    merged.loc[disagree, "gender"] = pd.NA
    train = np.flatnonzero((merged["official"] == "train").to_numpy())
    n_val = int(round(val_frac * len(train)))
    val = np.random.default_rng(seed).permutation(train)[:n_val]
    split = merged["official"].map({"train": "train", "val": "test"})
    split.iloc[val] = "val"
    merged["split"] = split
    notes = [f"official split: {len(train) - n_val} train, {n_val} val (carved from train.txt, seed {seed}), "
             f"{int((split == 'test').sum())} test (val.txt)"]
    if (~listed).any():
        notes.append(f"{int((~listed).sum())} images are in neither list (no split; dropped by --split default)")
    if absent:
        notes.append(f"{len(absent)} listed names have no image, e.g. {absent[0]}")
    if disagree.any():
        notes.append(f"{int(disagree.sum())} images whose list gender disagrees with the serial range: "
                     f"gender set to unknown, e.g. {merged.loc[disagree, 'name'].iat[0]}")
    out = merged.drop(columns=["list_gender", "official"])
    out.attrs["gender_disagreements"] = merged.loc[disagree, "name"].tolist()
    return out, notes
