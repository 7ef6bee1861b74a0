"""PETA: whole-body pedestrian crops with five age groups and gender (body only: faces tiny or turned away).

Layout (as PETA unpacks; ../shared/data/PETA holds the GRID and MIT subsets):

- ``<SUBSET>/archive/``: the images of one subset plus ``Label.txt``, one line per person:
  ``ID attribute attribute ...``. The ID is the file-name prefix before the first ``_``
  (``GRID/archive/0001_1_25004_107_32_106_221.jpeg`` and ``MIT/archive/00001_male_back.jpg``); one person
  can have several images. Every ``*/archive/Label.txt`` under the root is read, so the full ten-subset
  release works too; a root that is itself one subset (``archive/Label.txt``) or one ``archive`` folder
  also works.
- Age is one of ``personalLess15`` / ``Less30`` / ``Less45`` / ``Less60`` / ``Larger60``. It becomes an
  interval label (manifest ``age_lo``/``age_hi``, ``age`` NaN): [0, 15], [16, 30], [31, 45], [46, 60] and
  [61, AGE_MAX] (open top). Gender is ``personalMale`` / ``personalFemale``.

Rows: the person box is the whole image (the crops are already one person), no face box, no landmarks.
``subject_id`` is ``<SUBSET>/<ID>`` because IDs restart in every subset (GRID 0001 and MIT 00001 are
different people). Decided here, where the data is silent:

- People whose line has no age group (2 in GRID) are left out and counted in the notes: they have no age
  label at all. A line with two age groups, or both genders, is an error naming the file and line.
- MIT file names repeat a gender (``00001_male_back.jpg``); for 49 MIT people it disagrees with Label.txt.
  As for All-Age-Faces, neither source is more trustworthy (looking at the images, each is wrong on some),
  so those people get gender unknown (NA) and are reported; their age group is kept.
- Images whose ID has no Label.txt line are skipped and reported, as are Label.txt IDs without images.

Split: the shipped ``agekit/data/splits/peta_v1.csv``, subject-exclusive (every image of a person in
one split) 80/10/10 over people, seed 0; ``agekit data prepare peta ROOT --split subject --seed 0``
reproduces it. Licence: research only, not for commercial use; cite Deng, Luo, Loy and Tang,
"Pedestrian attribute recognition at far distance", ACM MM 2014.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from ..manifest import AGE_MAX, new_manifest
from . import register_adapter

AGE_GROUPS: dict[str, tuple[float, float]] = {
    "personalLess15": (0.0, 15.0),
    "personalLess30": (16.0, 30.0),
    "personalLess45": (31.0, 45.0),
    "personalLess60": (46.0, 60.0),
    "personalLarger60": (61.0, AGE_MAX),
}
GENDERS = {"personalMale": 0, "personalFemale": 1}
LABEL_FILE = "Label.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAME_GENDERS = {"male": 0, "female": 1}  # MIT names: <ID>_<male|female>_<back|fore>.jpg


class PETAError(ValueError):
    """A PETA label file that cannot be used; the message names the file and line."""


def person_id(name: str) -> str:
    """The person ID of an image file name: the prefix before the first ``_`` (the stem when there is none)."""
    return Path(name).stem.split("_", 1)[0]


def read_labels(path: Path) -> pd.DataFrame:
    """One row per Label.txt line: id, age_lo, age_hi (NaN without an age group), gender (NA unknown), line."""
    rows, seen = [], {}
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        pid, attrs = fields[0], set(fields[1:])
        if pid in seen:
            raise PETAError(f"{path}:{i}: person {pid} is already labelled on line {seen[pid]}")
        seen[pid] = i
        ages = sorted(attrs & AGE_GROUPS.keys())
        genders = sorted(attrs & GENDERS.keys())
        if len(ages) > 1:
            raise PETAError(f"{path}:{i}: person {pid} has more than one age group ({', '.join(ages)})")
        if len(genders) > 1:
            raise PETAError(f"{path}:{i}: person {pid} is labelled both personalMale and personalFemale")
        lo, hi = AGE_GROUPS[ages[0]] if ages else (float("nan"), float("nan"))
        rows.append({"id": pid, "age_lo": lo, "age_hi": hi, "gender": GENDERS[genders[0]] if genders else pd.NA,
                     "line": i})
    if not rows:
        raise PETAError(f"{path}: no label lines")
    return pd.DataFrame(rows)


def _subsets(root: Path) -> list[tuple[str, Path]]:
    """(subset name, archive folder) for every Label.txt PETA-style under ``root``."""
    if (root / LABEL_FILE).is_file():  # an archive folder itself
        name = root.parent.name if root.name == "archive" else root.name
        return [(name, root)]
    if (root / "archive" / LABEL_FILE).is_file():  # one subset folder
        return [(root.name, root / "archive")]
    return [(p.parent.parent.name, p.parent) for p in sorted(root.glob(f"*/archive/{LABEL_FILE}"))]


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; an unreadable file is an error naming it."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, Image.DecompressionBombError) as e:
        raise PETAError(f"{path}: not a readable image ({e})") from None


def _subset_rows(subset: str, folder: Path, notes: list[str], report: dict[str, list[str]]) -> list[dict]:
    labels = read_labels(folder / LABEL_FILE).set_index("id")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    ids = [person_id(p.name) for p in images]
    unlabelled = sorted({i for i in ids if i not in labels.index})
    unused = sorted(set(labels.index) - set(ids))
    no_age = labels.index[labels["age_lo"].isna()].tolist()
    rows, disagree = [], set()
    for p, pid in zip(images, ids):
        if pid not in labels.index or pid in no_age:
            continue
        lab = labels.loc[pid]
        gender = lab["gender"]
        parts = p.stem.split("_")
        name_gender = NAME_GENDERS.get(parts[1].lower()) if len(parts) > 1 else None
        if name_gender is not None and not pd.isna(gender) and name_gender != gender:
            disagree.add(pid)
            gender = pd.NA
        w, h = _image_size(p)
        rows.append({"path": str(p.resolve()), "subject_id": f"{subset}/{pid}", "gender": gender,
                     "age_lo": float(lab["age_lo"]), "age_hi": float(lab["age_hi"]),
                     "person_x0": 0.0, "person_y0": 0.0, "person_x1": float(w), "person_y1": float(h)})
    if no_age:
        notes.append(f"{subset}: {len(no_age)} people without an age group left out, e.g. {no_age[0]}")
    if unlabelled:
        notes.append(f"{subset}: {len(unlabelled)} people with images but no Label.txt line skipped, "
                     f"e.g. {unlabelled[0]}")
    if unused:
        notes.append(f"{subset}: {len(unused)} Label.txt people have no image, e.g. {unused[0]}")
    if disagree:
        first = sorted(disagree)[0]
        notes.append(f"{subset}: {len(disagree)} people whose file-name gender disagrees with Label.txt: "
                     f"gender set to unknown, e.g. {first}")
    report["gender_disagreements"] += [f"{subset}/{d}" for d in sorted(disagree)]
    report["no_age_group"] += [f"{subset}/{d}" for d in no_age]
    return rows


@register_adapter("peta")
def peta_manifest(root: str | Path, **_: object) -> pd.DataFrame:
    """Manifest of a PETA folder (``<SUBSET>/archive/`` with ``Label.txt``): body crops, age groups, gender."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"PETA folder not found: {root}")
    subsets = _subsets(root)
    if not subsets:
        raise PETAError(f"{root}: no PETA subset found (expected <SUBSET>/archive/{LABEL_FILE})")
    notes: list[str] = []
    report: dict[str, list[str]] = {"gender_disagreements": [], "no_age_group": []}
    rows = [r for name, folder in subsets for r in _subset_rows(name, folder, notes, report)]
    if not rows:
        raise PETAError(f"{root}: no labelled images found")
    df = new_manifest(rows, source="peta")
    df.attrs["notes"] = notes
    df.attrs.update(report)
    return df
