"""The one crop path: how a face in an image becomes the model's input chip.

Training, ``agekit eval``, export parity and prediction must all show the model the same framing,
or evaluation scores a different distribution than prediction sees (a box crop with a margin
scored MAE 11.0 on raw photos where the aligned chips of ``agekit predict`` scored 6.0). So there
is one specification, :class:`CropSpec`, with two ways to make a chip:

- ``"align"``: five-point similarity alignment onto the UTKFace-chip template
  (:func:`agekit.data.align.align_face`), for photos with landmarks (dataset points, or the
  detector's, stored once by ``agekit data prepare``; prediction aligns its detections the same way);
- ``"chip"``: the image already is an aligned chip (UTKFace) and is used as it is.

``"auto"`` decides per row: landmarks -> align, no landmarks and no face box -> chip. A row with a
face box but no landmarks is an error: a box alone does not say how to align the face, and
cropping it some other way is exactly the mismatch this module removes. Resizing the chip to the
model's input size stays :func:`agekit.data.transforms.resize_crop` (``crops_to_batch``).

A body (face+body models, MiVOLO) becomes model input through :func:`body_crop`: the person box cut out of
the photo, other people inside it blacked out, and letterboxed (aspect kept) to the model's input size.
Training (the crop cache), evaluation and prediction all call it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .align import CHIP_SIZE, TEMPLATE, align_face
from .manifest import FACE_BOX, PERSON_BOX, landmarks_array
from .transforms import letterbox, resize_crop

__all__ = ["CropSpec", "CropError", "CropMode", "CROP_MODES", "row_crop_modes", "rows_needing_landmarks", "PREPARE_HINT",
           "body_crop", "visible_fraction", "row_person_boxes"]

CropMode = Literal["auto", "chip", "align"]
CROP_MODES = ("auto", "chip", "align")
PREPARE_HINT = ("run `agekit data prepare FORMAT ROOT --out manifest.csv` once: it detects the faces and stores "
                "their five landmarks in the manifest")


class CropError(ValueError):
    """A face cannot be cropped under the requested spec (e.g. a face box without landmarks)."""


@dataclass(frozen=True)
class CropSpec:
    """How a face becomes a ``size`` x ``size`` chip (see the module docstring).

    ``template``: the five target points for a 200 px chip (scaled for other sizes); a tuple so that
    the spec is hashable and can key the crop cache.
    """

    mode: CropMode = "auto"
    size: int = CHIP_SIZE
    template: tuple[tuple[float, float], ...] = tuple(map(tuple, TEMPLATE.tolist()))

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {', '.join(CROP_MODES)}, got {self.mode!r}")
        if self.size < 1 or len(self.template) != 5:
            raise ValueError(f"bad CropSpec: size {self.size}, {len(self.template)} template points")

    def key(self) -> list:
        """What identifies this spec in a cache key."""
        return [self.mode, self.size, np.round(np.asarray(self.template, dtype=np.float64), 3).tolist()]

    def crop(self, rgb: np.ndarray, landmarks5: np.ndarray | None = None) -> np.ndarray:
        """``size`` x ``size`` x 3 uint8 chip of ``rgb``.

        ``align`` needs ``landmarks5`` (5, 2); ``chip`` ignores them; ``auto`` aligns when they are
        given and finite, else takes the image as a chip. Raises :class:`CropError` (a ValueError)
        when alignment is asked for without usable landmarks.
        """
        lm = None if landmarks5 is None else np.asarray(landmarks5, dtype=np.float64).reshape(-1, 2)
        has_lm = lm is not None and lm.shape == (5, 2) and bool(np.isfinite(lm).all())
        if self.mode == "chip" or (self.mode == "auto" and not has_lm):
            return resize_crop(np.asarray(rgb), self.size)
        if not has_lm:
            raise CropError("crop mode 'align' needs five finite landmarks for every face")
        try:
            return align_face(rgb, lm, self.size, np.asarray(self.template, dtype=np.float64))
        except ValueError as e:
            raise CropError(str(e)) from None


def rows_needing_landmarks(df: pd.DataFrame) -> np.ndarray:
    """Rows with a face box and no five finite landmarks: what ``auto`` cannot crop until
    ``agekit data prepare`` detects their points (:func:`agekit.inference.landmarks.detect_landmarks`)."""
    face_box = ~np.isnan(df[FACE_BOX].to_numpy(dtype=np.float64)).any(axis=1)
    return face_box & ~np.isfinite(landmarks_array(df)).all(axis=(1, 2))


def row_crop_modes(df: pd.DataFrame, spec: CropSpec) -> tuple[np.ndarray, np.ndarray]:
    """(mode per row: ``"align"``/``"chip"``/``""`` = no face to crop, (N, 5, 2) landmarks).

    Raises :class:`CropError` naming ``agekit data prepare`` when rows need landmarks they lack:
    under ``auto``, rows with a face box; under ``align``, every row. Rows with only a person box
    (LAGENDA bodies whose face is not visible) have no face: they get ``""`` and are skipped.
    """
    lm = landmarks_array(df)
    has_lm = np.isfinite(lm).all(axis=(1, 2))
    face_box = ~np.isnan(df[FACE_BOX].to_numpy(dtype=np.float64)).any(axis=1)
    person_box = ~np.isnan(df[PERSON_BOX].to_numpy(dtype=np.float64)).any(axis=1)
    modes = np.full(len(df), "chip", dtype=object)
    if spec.mode == "chip":
        return modes, lm
    modes[has_lm] = "align"
    if spec.mode == "align":
        need = ~has_lm
    else:
        need = rows_needing_landmarks(df)
        modes[~has_lm & ~face_box & person_box] = ""  # a body without a face: nothing to crop
    if need.any():
        i = int(np.flatnonzero(need)[0])
        what = "have a face box but no five-point landmarks" if spec.mode == "auto" else "have no five-point landmarks"
        raise CropError(f"{int(need.sum())} of {len(df)} rows {what} (e.g. {df['path'].iat[i]}); {PREPARE_HINT}")
    return modes, lm


def _clip_box(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds of ``box`` (x0, y0, x1, y1) inside a w x h image (x1/y1 exclusive)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.floor(y0), 0, h)),
            int(np.clip(np.ceil(x1), 0, w)), int(np.clip(np.ceil(y1), 0, h)))


def body_crop(img: np.ndarray, person_box, size: int, mask_boxes=None) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8 body crop: ``person_box`` (x0, y0, x1, y1, pixels) of ``img``, with every
    box of ``mask_boxes`` (other people) blacked out inside it, letterboxed with its aspect ratio kept
    (:func:`agekit.data.transforms.letterbox`).

    The box is clipped to the image; :class:`CropError` when nothing of it is inside. As in MiVOLO's
    reference, other people are set to 0 so the crop shows one person; whether what is left is worth
    feeding (MiVOLO drops crops under 50 px or less than 40% visible) is the caller's rule
    (:func:`visible_fraction`).
    """
    img = np.asarray(img)
    h, w = img.shape[:2]
    box = np.asarray(person_box, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        raise CropError(f"person box {box.tolist()} is not four finite numbers")
    x0, y0, x1, y1 = _clip_box(box, w, h)
    if x1 <= x0 or y1 <= y0:
        raise CropError(f"person box {np.round(box, 1).tolist()} lies outside the {w}x{h} image")
    crop = np.array(img[y0:y1, x0:x1, :3], dtype=np.uint8)
    for m in ([] if mask_boxes is None else np.asarray(mask_boxes, dtype=np.float64).reshape(-1, 4)):
        if not np.isfinite(m).all():
            continue
        mx0, my0, mx1, my1 = _clip_box(m, w, h)
        mx0, my0, mx1, my1 = max(mx0, x0), max(my0, y0), min(mx1, x1), min(my1, y1)
        if mx1 > mx0 and my1 > my0:
            crop[my0 - y0:my1 - y0, mx0 - x0:mx1 - x0] = 0
    return letterbox(crop, size)


def visible_fraction(person_box, mask_boxes=None) -> float:
    """Share of ``person_box``'s area not covered by any of ``mask_boxes`` (what :func:`body_crop` leaves)."""
    box = np.asarray(person_box, dtype=np.float64).reshape(4)
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    if area <= 0:
        return 0.0
    masks = [] if mask_boxes is None else np.asarray(mask_boxes, dtype=np.float64).reshape(-1, 4)
    # exact area of the union of the clipped masks, by coordinate compression (few boxes per person)
    clipped = [(max(m[0], x0), max(m[1], y0), min(m[2], x1), min(m[3], y1)) for m in masks if np.isfinite(m).all()]
    clipped = [c for c in clipped if c[2] > c[0] and c[3] > c[1]]
    if not clipped:
        return 1.0
    xs = sorted({v for c in clipped for v in (c[0], c[2])})
    ys = sorted({v for c in clipped for v in (c[1], c[3])})
    covered = 0.0
    for xa, xb in zip(xs, xs[1:]):
        for ya, yb in zip(ys, ys[1:]):
            if any(c[0] <= xa and xb <= c[2] and c[1] <= ya and yb <= c[3] for c in clipped):
                covered += (xb - xa) * (yb - ya)
    return float(1.0 - covered / area)


def row_person_boxes(df: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """((N, 4) person box per row, NaN when none; per row the person boxes of the *other* rows of the same
    image, to black out in its body crop). Rows of one image share a ``path`` (LAGENDA: one row per person)."""
    boxes = df[PERSON_BOX].to_numpy(dtype=np.float64)
    has = ~np.isnan(boxes).any(axis=1)
    paths = df["path"].astype(str).to_numpy()
    by_path: dict[str, list[int]] = {}
    for i in np.flatnonzero(has):
        by_path.setdefault(paths[i], []).append(int(i))
    others = []
    for i in range(len(df)):
        rows = [j for j in by_path.get(paths[i], []) if j != i] if has[i] else []
        others.append(boxes[rows] if rows else np.zeros((0, 4)))
    return boxes, others
