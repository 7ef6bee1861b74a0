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

A person's body input (MiVOLO's second crop) is :func:`body_crop`: the person box letterboxed, other
people blacked out, under the reference implementation's rules (:func:`body_crop_problem`).
Training (the body cache), evaluation and prediction all call it.
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
           "body_crop", "body_crop_problem", "body_visible_mask", "MIN_BODY_SIDE", "MIN_BODY_VISIBLE", "EDGE_SNAP",
           "BODY_RULES", "visible_fraction", "row_person_boxes"]

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


# -- body crops (MiVOLO's face+body input) ---------------------------------------------------------------
# The reference implementation's rules: other people inside a body crop are blacked out; a mask box that
# comes within EDGE_SNAP of the crop's border is extended to it (a sliver of someone else left at the edge
# is still someone else); a body crop under MIN_BODY_SIDE px on a side, or less than MIN_BODY_VISIBLE of
# it left after masking, is not used.
MIN_BODY_SIDE = 50
MIN_BODY_VISIBLE = 0.4
EDGE_SNAP = 0.3
BODY_RULES = [MIN_BODY_SIDE, MIN_BODY_VISIBLE, EDGE_SNAP]  # in body cache keys: changed rules rebuild


def _int_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A float xyxy box as whole pixels inside the image (floor the start, ceil the end)."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    return (int(np.clip(np.floor(x0), 0, width)), int(np.clip(np.floor(y0), 0, height)),
            int(np.clip(np.ceil(x1), 0, width)), int(np.clip(np.ceil(y1), 0, height)))


def body_visible_mask(person_box, mask_boxes, width: int, height: int) -> np.ndarray:
    """(h, w) bool over the person box's pixels: True where nothing is masked (the reference's edge rule)."""
    x0, y0, x1, y1 = _int_box(person_box, width, height)
    h, w = y1 - y0, x1 - x0
    visible = np.ones((max(h, 0), max(w, 0)), dtype=bool)
    if not visible.size:
        return visible
    for box in [] if mask_boxes is None else np.asarray(mask_boxes, dtype=np.float64).reshape(-1, 4):
        ox0, oy0, ox1, oy1 = _int_box(box, width, height)
        ox0, oy0, ox1, oy1 = max(ox0 - x0, 0), max(oy0 - y0, 0), min(ox1 - x0, w), min(oy1 - y0, h)
        if ox1 <= ox0 or oy1 <= oy0:
            continue  # does not reach into this person's box
        oy0 = 0 if oy0 / h < EDGE_SNAP else oy0
        oy1 = h if (h - oy1) / h < EDGE_SNAP else oy1
        ox0 = 0 if ox0 / w < EDGE_SNAP else ox0
        ox1 = w if (w - ox1) / w < EDGE_SNAP else ox1
        visible[oy0:oy1, ox0:ox1] = False
    return visible


def body_crop_problem(rgb_shape: tuple[int, ...], person_box, mask_boxes=None) -> str | None:
    """Why this person's body crop is not used (too small, too little visible), or None when it is usable."""
    height, width = rgb_shape[:2]
    x0, y0, x1, y1 = _int_box(person_box, width, height)
    if min(x1 - x0, y1 - y0) < MIN_BODY_SIDE:
        return f"body crop under {MIN_BODY_SIDE} px ({x1 - x0}x{y1 - y0})"
    visible = visible_fraction(person_box, mask_boxes, width, height)
    if visible < MIN_BODY_VISIBLE:
        return f"body {visible:.0%} visible after masking other people (< {MIN_BODY_VISIBLE:.0%})"
    return None


def visible_fraction(person_box, mask_boxes=None, width: int | None = None, height: int | None = None) -> float:
    """Share of ``person_box``'s pixels that :func:`body_crop` leaves visible (edge rule included) in a
    ``width`` x ``height`` image (default: just large enough to hold the box)."""
    box = np.asarray(person_box, dtype=np.float64).reshape(4)
    width = int(np.ceil(box[2])) if width is None else width
    height = int(np.ceil(box[3])) if height is None else height
    visible = body_visible_mask(box, mask_boxes, width, height)
    return float(visible.mean()) if visible.size else 0.0


def body_crop(img: np.ndarray, person_box, size: int, mask_boxes=None) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8 body chip: the person box with ``mask_boxes`` (other people) blacked out,
    scaled to fit with its aspect ratio kept and centred on black (letterbox), so a standing person is
    not squashed. The usability rules are :func:`body_crop_problem`'s; this only makes the pixels."""
    rgb = np.asarray(img)
    height, width = rgb.shape[:2]
    box = np.asarray(person_box, dtype=np.float64).reshape(4)
    if not np.isfinite(box).all():
        raise CropError(f"person box {box.tolist()} is not four finite numbers")
    x0, y0, x1, y1 = _int_box(box, width, height)
    if x1 <= x0 or y1 <= y0:
        raise CropError(f"person box {np.round(box, 1).tolist()} is empty: it lies outside the {width}x{height} image")
    crop = np.array(rgb[y0:y1, x0:x1, :3], dtype=np.uint8)
    if mask_boxes is not None:  # a mask box with a missing coordinate (NaN) masks nothing
        mask_boxes = [m for m in np.asarray(mask_boxes, dtype=np.float64).reshape(-1, 4) if np.isfinite(m).all()]
    crop[~body_visible_mask(box, mask_boxes, width, height)] = 0
    return letterbox(crop, size)


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
