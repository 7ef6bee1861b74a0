"""What prediction returns: one :class:`ImageResult` per input image, one :class:`FaceResult` per face,
or, in person mode, one :class:`PersonResult` per person.

Plain dataclasses of Python floats/strings so results print, compare and serialise (``to_dict``)
without numpy in the way. An image that could not be used keeps its place in the results with
``error`` set, so a batch run never loses track of an input.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FaceResult", "PersonResult", "ImageResult", "NO_FACE", "NO_PERSON", "INPUTS", "age_label", "NOBODY",
           "Observation", "TrackResult", "VideoResult"]

NO_FACE = "no face detected"
NO_PERSON = "no person detected"
INPUTS = ("face+body", "face", "body")  # what an estimate was made from


def interval_text(low: float | None, high: float | None) -> str | None:
    """``"24-37"``; None without an interval. The one interval text of tables and writers."""
    return None if low is None or high is None else f"{low:.0f}-{high:.0f}"


def age_label(age: float | None, low: float | None, high: float | None, gender: str | None,
              gender_prob: float | None) -> str:
    """``"34 F 0.97"``, ``"30 (24-37) F 0.94"`` with an interval; the one label of drawings and tables."""
    if age is None or age != age:  # None or NaN: no estimate
        return "-"
    text = f"{age:.0f}" + (f" ({low:.0f}-{high:.0f})" if low is not None and high is not None else "")
    return text if gender is None else f"{text} {gender[0].upper()} {gender_prob:.2f}"


@dataclass
class FaceResult:
    """``box`` xyxy and ``landmarks`` (5 x [x, y]) in original-image pixels (no landmarks for a given face
    chip, ``--crops face``: the box is then the whole chip).

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
        return interval_text(self.age_low, self.age_high)

    @property
    def label(self) -> str:
        """Short text for drawings, e.g. ``"34 F 0.97"``, or ``"30 (24-37) F 0.94"`` with an interval."""
        return age_label(self.age, self.age_low, self.age_high, self.gender, self.gender_prob)


@dataclass
class PersonResult:
    """One person (person mode): ``person_box`` and ``face_box`` xyxy in original-image pixels, either
    ``None`` when not seen (a face without a detected body; a body whose face is hidden or too small).

    ``inputs`` names the crops the estimate was made from: ``"face+body"``, ``"face"`` or ``"body"``.
    The interval widens as inputs drop (see :func:`agekit.runtime.runner.age_interval`). ``note`` says
    why an input was left out (e.g. a body crop under 50 px) or, when there is no estimate (``age`` is
    None, e.g. a body-only person and a face-only model), why not; ``inputs`` then names what was there. ``score``: the person detector's score (the face detector's for a
    face-only person; 1.0 for a given crop).
    """

    person_box: tuple[float, float, float, float] | None
    face_box: tuple[float, float, float, float] | None
    inputs: str
    score: float
    age: float | None = None
    age_low: float | None = None
    age_high: float | None = None
    gender: str | None = None
    gender_prob: float | None = None
    note: str | None = None

    @property
    def interval(self) -> str | None:
        """The calibrated interval as text, e.g. ``"24-37"`` (None when the model is not calibrated)."""
        return interval_text(self.age_low, self.age_high)

    @property
    def label(self) -> str:
        """``"30 (24-37) F 0.94 face+body"``; ``"- body: no model input for body"`` without an estimate."""
        if self.age is None:
            return f"- {self.inputs}: {self.note}" if self.note else f"- {self.inputs}"
        return f"{age_label(self.age, self.age_low, self.age_high, self.gender, self.gender_prob)} {self.inputs}"


@dataclass
class ImageResult:
    """Result for one input: its faces (or, in person mode, its ``persons``), or ``error`` saying in one
    line why it was skipped. ``persons`` is None outside person mode, and then not serialised, so the
    face-only output keeps its schema.

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
    persons: list[PersonResult] | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"no face detected"`` (``"no person detected"`` in person mode) or the error's reason
        (without the file path it starts with)."""
        if self.error is not None:
            prefix = f"{self.path}: "
            return self.error[len(prefix):] if self.path and self.error.startswith(prefix) else self.error
        if self.persons is not None:
            return "ok" if self.persons else NO_PERSON
        return "ok" if self.faces else NO_FACE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        if self.persons is None:
            d.pop("persons")
        else:
            d.pop("faces")  # person mode: every face is in a person
        d["status"] = self.status
        return d


# -- video ---------------------------------------------------------------------------------------------------
NOBODY = "nobody found"


@dataclass
class Observation:
    """One detection in one video frame, as tracking and per-track aggregation see it.

    The per-frame predictor output reduced to what any detection kind (a face today, a person with a
    face and a body later) has: a box, a score, the age with its calibrated interval and P(female).
    """

    frame: int
    time: float
    box: tuple[float, float, float, float]
    score: float
    age: float
    age_low: float | None = None
    age_high: float | None = None
    p_female: float | None = None


@dataclass
class TrackResult:
    """One tracked person: the aggregate over its frames and every frame's own observation.

    ``age`` is the winsorised mean of the frames' ages and ``age_low``/``age_high`` an interval that
    narrows with the evidence (``agekit.inference.aggregation``); ``effective_frames`` is how many
    independent looks the frames were worth. ``gender`` follows the mean P(female) over the frames;
    ``gender_prob`` is the probability of the reported gender.
    """

    id: int
    first_frame: int
    last_frame: int
    num_frames: int
    age: float
    age_low: float | None
    age_high: float | None
    gender: str | None
    gender_prob: float | None
    p_female: float | None
    effective_frames: float
    frames: list[Observation] = field(default_factory=list)

    @property
    def interval(self) -> str | None:
        """The calibrated interval as text, e.g. ``"24-37"`` (None when the model is not calibrated)."""
        return interval_text(self.age_low, self.age_high)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = self.interval
        return d


@dataclass
class VideoResult:
    """Result for one video: its tracks, or ``error`` saying in one line why it could not be used.

    ``frames_total`` counts decoded frames (``frames_expected``: what the header announced, when it says),
    ``frames_processed`` those the model looked at (every ``stride``-th); ``timings`` holds mean seconds per processed frame for each stage (decode, detect,
    align, preprocess, infer, postprocess, track, draw). ``corrupt_packets`` counts pieces of the
    stream the decoder rejected and skipped; ``stopped`` says why decoding ended early, if it did.
    """

    name: str
    path: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    stride: int = 1
    codec: str | None = None
    frames_total: int = 0
    frames_expected: int | None = None
    frames_processed: int = 0
    frames_failed: int = 0
    corrupt_packets: int = 0
    stopped: str | None = None
    tracks: list[TrackResult] = field(default_factory=list)
    error: str | None = None
    drawing: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``"ok"``, ``"nobody found"`` or the error's reason (without the file path it starts with)."""
        if self.error is not None:
            prefix = f"{self.path}: "
            return self.error[len(prefix):] if self.path and self.error.startswith(prefix) else self.error
        return "ok" if self.tracks else NOBODY

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tracks"] = [t.to_dict() for t in self.tracks]
        d["status"] = self.status
        return d
