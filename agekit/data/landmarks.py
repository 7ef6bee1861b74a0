"""Five alignment points from a dataset's own landmark scheme (pure numpy).

Alignment (agekit.data.align) needs five points in RetinaFace's order: left eye, right eye, nose
tip, left mouth corner, right mouth corner, *as seen in the image* (the subject's right eye is the
image's left eye). Datasets ship denser schemes:

- **68-point iBUG/300-W** (FG-NET ``.pts``): jaw 0-16, brows 17-26, nose bridge 27-30 (30 = tip),
  nostrils 31-35, eyes 36-41 (image-left) and 42-47, outer lips 48-59 (48 and 54 = corners),
  inner lips 60-67. Five points: eye centres = mean of 36-41 and 42-47, nose tip 30, corners 48, 54.
- **49-point inner face** (AAF ``key points/*.txt``): the 68-point scheme without the 17 jaw points
  *and* without the two inner-mouth corners 60 and 64 (IntraFace's 49 points), so 68-index
  17-59 map to 49-index 0-42 and 61-63, 65-67 to 43-48. Five points: eye centres = mean of 19-24
  and 25-30, nose tip 13, mouth corners 31 and 37.

How the 49-point mapping was verified on ../shared/data/AAF (10,137 files, every one 49 ``x y``
lines): in ``00000A02.txt`` points 0-4 and 5-9 are two rows of five at y~155 spanning the brows;
10-13 run straight down x~127-129 from y 187 to 224 (bridge; 13 lowest = tip); 14-18 a row of
five at y~235 below it (nostril base); 19-24 and 25-30 two closed rings of six at y~172-191 on
either side (eyes, 19-24 on the image left); 31-42 a ring of 12 around y 251-271 whose extreme
x points are 31 (x 103) and 37 (x 155) (outer lips); 43-48 a ring of six strictly inside it whose
x range (115-142) stops well short of the outer corners, so the inner corners 60/64 are absent.
RetinaFace (agekit.inference.detectors, score >= 0.5, 640 px) on 300 AAF originals sampled with
numpy.random.default_rng(0) found a face in all 300; the five derived points lay a median 3.8 px
from its five landmarks (per point 3.3, 3.4, 5.0, 4.0, 3.5 px; median inter-ocular distance 73 px,
so ~5% of it; RetinaFace's nose point sits ~3 px lower on average, a convention difference). For
every RetinaFace point the nearest single 49-point index was checked too: nose 13 (5.0 px, next
best 12.0), mouth corners 31 (4.0 px, next 11.5) and 37 (3.5 px, next 11.9), eyes in the rings
19-24 / 25-30. tests/test_data_landmarks.py repeats the comparison when ../shared is present.
"""
from __future__ import annotations

import numpy as np

__all__ = ["five_from_68", "five_from_49", "five_points", "SCHEMES"]


def _as_points(pts: np.ndarray, n: int) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape != (n, 2):
        raise ValueError(f"expected {n} (x, y) landmarks, got an array of shape {pts.shape}")
    return pts


def five_from_68(pts: np.ndarray) -> np.ndarray:
    """(5, 2) alignment points from 68 iBUG points (see the module docstring)."""
    p = _as_points(pts, 68)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def five_from_49(pts: np.ndarray) -> np.ndarray:
    """(5, 2) alignment points from the 49-point inner-face scheme (AAF key points)."""
    p = _as_points(pts, 49)
    return np.stack([p[19:25].mean(0), p[25:31].mean(0), p[13], p[31], p[37]])


SCHEMES = {68: five_from_68, 49: five_from_49, 5: lambda p: _as_points(p, 5).copy()}


def five_points(pts: np.ndarray) -> np.ndarray:
    """(5, 2) alignment points from a 68-, 49- or 5-point set (chosen by the number of points)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    try:
        return SCHEMES[len(pts)](pts)
    except KeyError:
        raise ValueError(f"no five-point mapping for a {len(pts)}-point landmark scheme "
                         f"(known: {', '.join(map(str, sorted(SCHEMES)))})") from None
