"""One age, gender and interval per tracked person, from the estimates of its frames.

**Age** (MiVOLO's reference rule): once a track has ``WINSOR_MIN_FRAMES`` (10) frames, every frame's age
is clipped to the median +- ``WINSOR_CLIP`` (6) years before averaging, so a few bad frames (motion blur,
a profile, a mis-aligned crop) cannot pull the estimate; shorter tracks use the plain mean.
**Gender**: the mean P(female) over the frames (a soft vote; ``gender_prob`` is the probability of the
reported gender).

**Interval.** Each frame's calibrated interval ``age +- h`` (split conformal, ``agekit calibrate``) covers
the true age for ``1 - alpha`` of single photos. Averaging frames removes only the part of the error that
changes from frame to frame; the part that belongs to the person (this face looks older than it is to
the model) is the same in every frame and never averages away. Write a frame's error as ``b + e_t``:
``b`` shared by all frames of the track, ``e_t`` frame noise, and the per-frame error sd
``sigma = h / z`` (``z`` the normal quantile of the calibrated level: 1.645 at 90%). The error of the
track mean then has variance ``rho sigma^2 + (1 - rho) sigma^2 / n_eff`` where

* ``(1 - rho) sigma^2`` is the frame noise variance, measured on the track itself: the spread ``s^2`` of
  its (winsorised) frame ages, whose true age does not change within a video, so
  ``rho = 1 - s^2 / sigma^2``; a track whose frames all agree gains nothing from having many;
* ``n_eff`` is the number of effectively independent frames: consecutive video frames repeat each other's
  noise, so ``n_eff = n (1 - r) / (1 + r)`` with ``r`` the lag-1 autocorrelation of the frame ages
  (the AR(1) effective sample size), between 1 and n;
* ``rho`` is never taken below ``FRAME_CORRELATION_FLOOR`` (0.5): however much a track's frames disagree,
  at most half of a frame's error variance is treated as noise that averaging removes. A wildly varying
  track is more likely a bad track (blur, an identity switch) than a well-measured one, and the person's
  own share of error cannot be measured with the data here (no dataset has several photos of one person
  at one age), so the guard is deliberately cautious; it is a parameter.

The half-width is ``h * sqrt(rho + (1 - rho) / n_eff)`` (equivalently ``sqrt(h^2 - z^2 s^2 (1 - 1/n_eff))``
above the floor): it equals the per-frame ``h`` for one frame, narrows as independent evidence
accumulates, and never gets below ``h * sqrt(FRAME_CORRELATION_FLOOR)`` (7.2 y for ``h`` = 10.2 y).
Below ``WINSOR_MIN_FRAMES`` frames the spread and the autocorrelation cannot be estimated, so the
interval stays the per-frame one. ``tests/test_video.py`` checks the coverage on simulated tracks (person
share 0.5-0.9, frame noise from independent to strongly autocorrelated). The rule inherits the per-frame
calibration: video frames that are harder than the calibration photos widen the true error for every rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from .results import Observation

__all__ = ["WINSOR_MIN_FRAMES", "WINSOR_CLIP", "FRAME_CORRELATION_FLOOR", "TrackEstimate", "winsorized_age",
           "effective_frames", "aggregate_track"]

WINSOR_MIN_FRAMES = 10
WINSOR_CLIP = 6.0
FRAME_CORRELATION_FLOOR = 0.5


@dataclass
class TrackEstimate:
    """The aggregate of a track's frames (see the module docstring for the rules)."""

    age: float
    age_low: float | None
    age_high: float | None
    p_female: float | None
    gender: str | None
    gender_prob: float | None
    effective_frames: float
    frame_correlation: float | None  # rho used for the interval (None without an interval)

    @property
    def label(self) -> str:
        """Short text for drawings: ``"31 (24-38) F"``."""
        text = f"{self.age:.0f}"
        if self.age_low is not None and self.age_high is not None:
            text += f" ({self.age_low:.0f}-{self.age_high:.0f})"
        if self.gender is not None:
            text += f" {self.gender[0].upper()}"
        return text


def _winsorized(ages: np.ndarray) -> np.ndarray:
    if len(ages) < WINSOR_MIN_FRAMES:
        return ages
    m = float(np.median(ages))
    return np.clip(ages, m - WINSOR_CLIP, m + WINSOR_CLIP)


def winsorized_age(ages: Sequence[float]) -> float:
    """Mean of the ages, each clipped to median +- 6 once there are 10 or more (MiVOLO's track vote)."""
    a = np.asarray(ages, dtype=np.float64)
    if not len(a):
        raise ValueError("no ages to aggregate")
    return float(_winsorized(a).mean())


def effective_frames(ages: Sequence[float]) -> float:
    """AR(1) effective sample size ``n (1 - r) / (1 + r)`` of a series, ``r`` its lag-1 autocorrelation (>= 0).

    A constant series (no frame-to-frame variation at all) counts as one frame.
    """
    x = np.asarray(ages, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float(n)
    d = x - x.mean()
    ss = float(d @ d)
    if ss <= 1e-12:
        return 1.0
    r = min(max(float(d[:-1] @ d[1:]) / ss, 0.0), 0.99)
    return float(min(max(n * (1 - r) / (1 + r), 1.0), n))


def aggregate_track(obs: Sequence[Observation], level: float = 0.9, age_range: tuple[float, float] = (0.0, 120.0),
                    correlation_floor: float = FRAME_CORRELATION_FLOOR) -> TrackEstimate:
    """Age, interval and gender of one track from its frames' observations (in frame order).

    ``level`` is the per-frame interval's coverage (``1 - alpha`` of the model's calibration record);
    ``age_range`` the model's age range, to which the interval is clipped.
    """
    if not obs:
        raise ValueError("a track needs at least one observation")
    if not 0.0 <= correlation_floor <= 1.0:
        raise ValueError(f"correlation_floor must be in [0, 1], got {correlation_floor}")
    ages = np.array([o.age for o in obs], dtype=np.float64)
    w = _winsorized(ages)
    age = float(w.mean())
    n = len(w)
    n_eff = effective_frames(w) if n >= WINSOR_MIN_FRAMES else 1.0

    lo = hi = rho = None
    halves = [max(o.age_high - o.age, o.age - o.age_low) for o in obs if o.age_low is not None and o.age_high is not None]
    if halves:
        h = float(np.median(halves))  # one width for "abs" calibration; the typical one for normalised scores
        if n >= WINSOR_MIN_FRAMES and h > 0 and math.isfinite(h):
            sigma = h / NormalDist().inv_cdf(0.5 + level / 2)
            s2 = float(np.var(w, ddof=1))
            rho = min(max(1.0 - s2 / sigma**2, correlation_floor), 1.0)
        else:
            rho = 1.0
        half = h * math.sqrt(rho + (1.0 - rho) / n_eff)
        lo, hi = max(age - half, age_range[0]), min(age + half, age_range[1])

    pf = [o.p_female for o in obs if o.p_female is not None and math.isfinite(o.p_female)]
    p_female = float(np.mean(pf)) if pf else None
    gender = None if p_female is None else ("female" if p_female > 0.5 else "male")
    gender_prob = None if p_female is None else (p_female if gender == "female" else 1.0 - p_female)
    return TrackEstimate(age=age, age_low=lo, age_high=hi, p_female=p_female, gender=gender, gender_prob=gender_prob,
                         effective_frames=n_eff, frame_correlation=rho)
