"""What prediction returns: one :class:`ImageResult` per input image, one :class:`FaceResult` per face.

Plain dataclasses of Python floats/strings so results print, compare and serialise (``to_dict``)
without numpy in the way. An image that could not be used keeps its place in the results with
``error`` set, so a batch run never loses track of an input.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FaceResult", "ImageResult", "NO_FACE"]

NO_FACE = "no face detected"


@dataclass
class FaceResult:
    """``box`` xyxy and ``landmarks`` (5 x [x, y]) in original-image pixels.

    ``gender_prob`` is the probability of the reported ``gender`` (P(female) when female, else
    1 - P(female)), so it is at least 0.5; ``None`` for a model without a gender head.
    ``age_low``/``age_high``: the calibrated interval (90% by default, ``agekit calibrate``) around
    ``age``; ``None`` for a model without a calibration record.
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    score: float
    age: float
    gender: str | None
    gender_prob: float | None
    age_low: float | None = None
    age_high: float | None = None

    @property
    def interval(self) -> str | None:
        """The calibrated interval as text, e.g. ``"24-37"`` (None when the model is not calibrated)."""
        if self.age_low is None or self.age_high is None:
            return None
        return f"{self.age_low:.0f}-{self.age_high:.0f}"

    @property
    def label(self) -> str:
        """Short text for drawings, e.g. ``"34 F 0.97"``, or ``"30 (24-37) F 0.94"`` with an interval."""
        age = f"{self.age:.0f}" + (f" ({self.interval})" if self.interval else "")
        if self.gender is None:
            return age
        return f"{age} {self.gender[0].upper()} {self.gender_prob:.2f}"


@dataclass
class ImageResult:
    """Result for one input: its faces, or ``error`` saying in one line why it was skipped.

    ``timings`` holds seconds per stage (load, detect, align, preprocess, infer, postprocess); batched
    stages are shared out by face count. ``image`` is the decoded RGB array, kept only on request
    (e.g. for drawing) and never serialised.
    """

    name: str
    path: str | None = None
    width: int = 0
    height: int = 0
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"no face detected"`` or the error's reason (without the file path it starts with)."""
        if self.error is not None:
            prefix = f"{self.path}: "
            return self.error[len(prefix):] if self.path and self.error.startswith(prefix) else self.error
        return "ok" if self.faces else NO_FACE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        d["status"] = self.status
        return d
