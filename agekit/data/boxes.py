"""Overlap of xyxy boxes, written once: detection matching, NMS, face-person pairing and scoring use it."""
from __future__ import annotations

import numpy as np

__all__ = ["box_areas", "box_intersections", "box_iou"]


def _boxes(b) -> np.ndarray:
    return np.asarray(b, dtype=np.float64).reshape(-1, 4)


def box_areas(b) -> np.ndarray:
    """(N,) areas of xyxy boxes (0 for an inverted box)."""
    b = _boxes(b)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersections(a, b) -> np.ndarray:
    """(len(a), len(b)) intersection areas; a single box counts as a list of one."""
    a, b = _boxes(a), _boxes(b)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return ix * iy


def box_iou(a, b) -> np.ndarray:
    """(len(a), len(b)) intersection over union; 0 where both boxes are empty."""
    inter = box_intersections(a, b)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
