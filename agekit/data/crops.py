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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .align import CHIP_SIZE, TEMPLATE, align_face
from .manifest import FACE_BOX, PERSON_BOX, landmarks_array
from .transforms import resize_crop

__all__ = ["CropSpec", "CropError", "CropMode", "CROP_MODES", "row_crop_modes", "rows_needing_landmarks", "PREPARE_HINT"]

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
