"""FG-NET: 1,002 raw photos of 82 subjects aged 0-69, labels in the file names.

``images/{subject:03d}A{age:02d}[a|b].JPG`` with 68-point landmarks in ``points/{stem lower}.pts``.
The photos are not face crops: the five alignment points (agekit.data.landmarks.five_from_68) are
stored in the manifest's ``lm_*`` columns, so training and ``agekit eval`` align each face onto
the chip template exactly as ``agekit predict`` aligns its detections. The face box (the points'
extent, raised at the top to take in the forehead, which the 68 points stop short of) is kept
for drawing and statistics. Without a ``.pts`` the box and points stay NaN and the image counts
as a chip; FG-NET ships a ``.pts`` for every photo. FG-NET has no gender labels.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..landmarks import five_from_68
from ..manifest import LANDMARK_COLUMNS, new_manifest
from . import register_adapter

_NAME = re.compile(r"^(?P<subject>\d{3})A(?P<age>\d{2})(?P<suffix>[ab]?)$", re.IGNORECASE)
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
FOREHEAD = 0.25  # fraction of the landmark box height added above the brows


class FGNetError(ValueError):
    """An FG-NET file or label that cannot be read; the message names the file (and line)."""


def parse_fgnet_name(name: str) -> dict | None:
    """Subject id and age from ``001A02.JPG``-style names; None when the stem does not match."""
    m = _NAME.match(Path(name).stem)
    if m is None:
        return None
    return {"subject_id": m.group("subject"), "age": float(m.group("age"))}


def read_pts(path: str | Path) -> np.ndarray:
    """The (n, 2) points of an IBUG ``.pts`` file (``version``, ``n_points``, ``{``, x y lines, ``}``)."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    n = None
    for i, line in enumerate(lines, 1):
        if line.strip().lower().startswith("n_points"):
            try:
                n = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise FGNetError(f"{path}:{i}: bad n_points line {line.strip()!r}") from None
        if line.strip() == "{":
            start = i
            break
    else:
        raise FGNetError(f"{path}: no '{{' line opening the points")
    if n is None:
        raise FGNetError(f"{path}: no n_points header")
    pts = []
    for j, line in enumerate(lines[start:start + n], start + 1):
        if line.strip() == "}":
            break
        try:
            x, y = (float(v) for v in line.split())
        except ValueError:
            raise FGNetError(f"{path}:{j}: expected 'x y', got {line.strip()!r}") from None
        pts.append((x, y))
    if len(pts) != n or len(lines) <= start + n or lines[start + n].strip() != "}":
        raise FGNetError(f"{path}: expected {n} points followed by '}}', found {len(pts)} points")
    return np.asarray(pts, dtype=np.float64)


def landmark_box(pts: np.ndarray, size: tuple[int, int] | None = None, forehead: float = FOREHEAD) -> list[float]:
    """Face box [x0, y0, x1, y1] around 68 landmarks, extended upwards by ``forehead`` of its height."""
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    y0 -= forehead * (y1 - y0)
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    if size is not None:
        x1, y1 = min(x1, size[0]), min(y1, size[1])
    return [float(x0), float(y0), float(x1), float(y1)]


def _pts_for(points: Path, stem: str) -> Path | None:
    for cand in (points / f"{stem.lower()}.pts", points / f"{stem}.pts"):
        if cand.is_file():
            return cand
    return None


@register_adapter("fgnet")
def fgnet_manifest(root: str | Path, forehead: float = FOREHEAD, **_: object) -> pd.DataFrame:
    """Manifest of an FG-NET folder (``root/images``, optional ``root/points``)."""
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"FG-NET images folder not found: {images}")
    points = root / "points"
    rows, no_pts = [], []
    for p in sorted(images.iterdir()):
        if not p.is_file() or p.suffix.lower() not in _IMAGE_EXT:
            continue
        labels = parse_fgnet_name(p.name)
        if labels is None:
            raise FGNetError(f"{p}: name does not follow {{subject:03d}}A{{age:02d}}[a|b].JPG")
        row = {"path": str(p.resolve()), **labels}
        pts_file = _pts_for(points, p.stem) if points.is_dir() else None
        if pts_file is None:
            no_pts.append(p.name)
        else:
            pts = read_pts(pts_file)
            try:
                with Image.open(p) as im:  # header only: the size, to clip the box
                    size = im.size
            except OSError:
                raise FGNetError(f"{p}: not a readable image") from None
            if len(pts) != 68:
                raise FGNetError(f"{pts_file}: expected 68 points (iBUG scheme), found {len(pts)}")
            row.update(zip(("face_x0", "face_y0", "face_x1", "face_y1"), landmark_box(pts, size, forehead)))
            row.update(zip(LANDMARK_COLUMNS, five_from_68(pts).ravel().tolist()))
        rows.append(row)
    if not rows:
        raise FGNetError(f"{images}: no images found")
    df = new_manifest(rows, source="fgnet")
    df.attrs["notes"] = [f"{len(no_pts)} images without landmarks: used as face chips (no box)"] if no_pts else []
    df.attrs["no_landmarks"] = no_pts
    return df
