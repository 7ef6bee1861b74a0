"""All-Age-Faces (AAF): head-and-shoulders photos aged 2-80, mostly Asian, with 49 key points each.

Layout (as the release unpacks; ../shared/data/AAF holds the official ``train_`` part):

- ``original images/%05dA%02d.jpg`` (serial, age), about 300x340 px, one person per photo;
- ``key points/<stem>.txt``: 49 ``x y`` lines, the inner-face points of the 68-point scheme, in the
  photo's pixels. The five alignment points (agekit.data.landmarks.five_from_49) go into the
  manifest's ``lm_*`` columns, so every consumer aligns the face onto the chip template exactly as
  ``agekit predict`` does. Photos without a key-point file are left out (and counted in the notes):
  without points they could only be cropped some other way;
- ``image sets/train_.txt`` (and ``val_.txt`` when present): lines ``name gender``, 1 = male.

The person box (face+body models, MiVOLO) is the whole photo: AAF photos are head-and-shoulders portraits of
one person, which is what a person detector finds in such a photo at prediction time (the box covers the
visible person: head and shoulders). Rows keep their landmarks, so the face task still aligns their faces.

Gender comes from two sources that should agree: the serial range (00000-07380 female,
07381-13321 male) and the lists (1 = male, the opposite of agekit's 1 = female). Where both exist
and disagree, the gender is set to unknown (NA) and the file is reported, since neither source is
more trustworthy; the age is still used. Each photo shows a different person, so the serial is the
subject id. The split is the shipped ``agekit/data/splits/aaf_v1.csv`` (random 80/10/10, seed 0,
made by ``agekit data prepare aaf ROOT --split random --seed 0``); the official ``val_`` part is
kept back by the dataset's authors. The release's ``aglined faces/`` crops are not read: their
framing is AAF's own, not the chip geometry the models see at prediction time.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..imageio import ImageLoadError, image_size
from ..landmarks import five_from_49
from ..manifest import LANDMARK_COLUMNS, PERSON_BOX, new_manifest
from . import register_adapter

_NAME = re.compile(r"^(?P<serial>\d{5})A(?P<age>\d{2})\.jpe?g$", re.IGNORECASE)
LAST_FEMALE, LAST_MALE = 7380, 13321
IMAGES_DIR, POINTS_DIR, SETS_DIR = "original images", "key points", "image sets"
LISTS = ("train_.txt", "val_.txt")
N_POINTS = 49


class AAFError(ValueError):
    """A bad AAF name, list line or key-point file; the message names the file and line."""


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


def read_key_points(path: Path) -> np.ndarray:
    """The (49, 2) points of one ``key points/*.txt`` file."""
    pts = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            x, y = (float(v) for v in line.split())
        except ValueError:
            raise AAFError(f"{path}:{i}: expected 'x y', got {line.strip()!r}") from None
        pts.append((x, y))
    if len(pts) != N_POINTS:
        raise AAFError(f"{path}: expected {N_POINTS} 'x y' lines (AAF's inner-face points), found {len(pts)}")
    return np.asarray(pts, dtype=np.float64)


@register_adapter("aaf")
def aaf_manifest(root: str | Path, **_: object) -> pd.DataFrame:
    """Manifest of an AAF folder (``original images/``, ``key points/``, optional ``image sets/``)."""
    root = Path(root)
    images = root / IMAGES_DIR
    if not images.is_dir():
        raise FileNotFoundError(f"AAF photos folder not found: {images}")
    points = root / POINTS_DIR
    rows, no_points = [], []
    for p in sorted(images.iterdir()):
        if not p.is_file() or p.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        labels = parse_aaf_name(p.name)
        if labels is None:
            raise AAFError(f"{p}: name does not follow %05dA%02d.jpg (serial, age)")
        kp = points / f"{p.stem}.txt"
        if not kp.is_file():
            no_points.append(p.name)
            continue
        five = five_from_49(read_key_points(kp))
        try:
            w, h = image_size(p)
        except ImageLoadError:  # unreadable: no person box; the crop cache reports the file
            w = h = float("nan")
        rows.append({"path": str(p.resolve()), "name": p.name, **labels, "subject_id": f"{labels['serial']:05d}",
                     **dict(zip(LANDMARK_COLUMNS, five.ravel().tolist())),  # "mostly Asian": no per-image race
                     **dict(zip(PERSON_BOX, (0.0, 0.0, float(w), float(h))))})
    if not rows:
        raise AAFError(f"{images}: no images with key points found" + (f" (no {points})" if not points.is_dir() else ""))
    table = pd.DataFrame(rows)
    notes: list[str] = []
    if no_points:
        notes.append(f"{len(no_points)} photos without a key-point file left out, e.g. {no_points[0]}")
    lists = [root / SETS_DIR / name for name in LISTS if (root / SETS_DIR / name).is_file()]
    if lists:
        table, list_notes = _check_lists(table, lists)
        notes += list_notes
    df = new_manifest(table.drop(columns=["name", "serial"]).to_dict("records"), source="aaf")
    df.attrs["notes"] = notes
    df.attrs["gender_disagreements"] = table.attrs.get("gender_disagreements", [])
    df.attrs["no_key_points"] = no_points
    return df


def _check_lists(table: pd.DataFrame, lists: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """Cross-check the serial-range gender with the lists' gender; disagreements become NA."""
    sets = pd.concat([read_image_set(p) for p in lists], ignore_index=True)
    dup = sets["name"].duplicated(keep=False)
    if dup.any():
        raise AAFError(f"{lists[0].parent}: {sets.loc[dup, 'name'].iat[0]} is listed more than once")
    merged = table.merge(sets.rename(columns={"gender": "list_gender"}), on="name", how="left")
    absent = sorted(set(sets["name"]) - set(table["name"]))
    listed = merged["list_gender"].notna()
    serial_known = merged["gender"].notna()
    differs = merged["gender"].astype("Int64") != merged["list_gender"].astype("Int64")
    disagree = (listed & serial_known & differs.fillna(False)).astype(bool)
    merged["gender"] = merged["gender"].where(serial_known, merged["list_gender"]).astype("Int64")
    merged.loc[disagree, "gender"] = pd.NA
    notes = []
    if (~listed).any():
        notes.append(f"{int((~listed).sum())} photos are in no image-set list (gender from the serial range only)")
    if absent:
        notes.append(f"{len(absent)} listed names have no photo with key points, e.g. {absent[0]}")
    if disagree.any():
        notes.append(f"{int(disagree.sum())} images whose list gender disagrees with the serial range: "
                     f"gender set to unknown, e.g. {merged.loc[disagree, 'name'].iat[0]}")
    out = merged.drop(columns=["list_gender"])
    out.attrs["gender_disagreements"] = merged.loc[disagree, "name"].tolist()
    return out, notes
