"""Warp a detected face to the geometry of a UTKFace "aligned & cropped" chip.

The age model is trained on UTKFace chips (200x200, dlib 68-point alignment with a margin: chin,
hair and some background visible). A face from a raw photo must reach the model framed the same
way, or it sees a different distribution than in training. We cannot rerun UTKFace's dlib recipe,
so the target geometry is *measured*: where our own detector puts its five landmarks on real chips.
A similarity transform (rotation + uniform scale + shift) maps a face's five landmarks onto those
positions, then the photo is warped to a 200x200 chip.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CHIP_SIZE", "TEMPLATE", "similarity_transform", "align_face", "transform_points"]

CHIP_SIZE = 200

# Five-point template in 200x200 UTKFace-chip coordinates (continuous pixel coords, pixel i spans
# [i, i+1)): left eye, right eye, nose tip, left mouth corner, right mouth corner, as seen in the
# image. Computed by scripts/derive_alignment_template.py: the RetinaFace detector
# (agekit.inference.detectors, score >= 0.5) ran on 500 UTKFace chips sampled with
# numpy.random.default_rng(0) from ../shared/data/UTKFace, each chip padded with 100 px of grey
# so that the face is seen in context as in a raw photo (500/500 chips had a face). The
# per-coordinate median of the landmarks, shifted back into chip coordinates, was
#   [[58.26, 59.20], [137.75, 60.18], [95.11, 107.01], [64.24, 135.61], [132.97, 136.94]];
# least-squares similarity fits of the chips onto it had a median scale of 0.985 (medians of
# jittered points and fits of noisy landmarks both shrink), so the template below is that median
# mapped through the inverse of the median chip->template similarity: the typical chip, detected
# and aligned by this pipeline, now maps onto itself (median scale 1.000, angle 0.0, shift 0.0).
# Individual chips sit ~3 px (mean abs) from it after a similarity fit: UTKFace's dlib alignment is
# not a 5-point similarity, and training augmentation (+-5% shift, +-10% scale, +-10 deg) covers that.
TEMPLATE = np.array([
    [57.46, 58.58],
    [138.20, 59.45],
    [94.98, 107.08],
    [63.67, 136.18],
    [133.48, 137.42],
], dtype=np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking points ``src`` to ``dst``.

    cv2.estimateAffinePartial2D with an all-accepting RANSAC threshold keeps all five points and its
    Levenberg-Marquardt refinement then minimises the squared error over all of them (the same fit
    as Umeyama's method, which skimage's SimilarityTransform uses).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2 or not np.isfinite(src).all():
        raise ValueError(f"need matching finite point sets, got {src.shape} and {dst.shape}")
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e6, maxIters=1, refineIters=50)
    if m is None:
        raise ValueError("landmarks are degenerate (all in one place); cannot align this face")
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
               template: np.ndarray = TEMPLATE) -> np.ndarray:
    """Return a ``size`` x ``size`` RGB chip of the face whose five landmarks are given.

    Landmarks and template are in continuous pixel coordinates; warpAffine works on pixel centres,
    hence the half-pixel shifts. Large faces are first shrunk with INTER_AREA (warpAffine's bilinear
    sampling would alias when it downsamples by more than ~2x); borders are replicated as the
    chips' own alignment did at image edges.
    """
    rgb = np.ascontiguousarray(rgb)
    tpl = np.asarray(template, dtype=np.float64) * (size / CHIP_SIZE)
    m = similarity_transform(np.asarray(landmarks, dtype=np.float64) - 0.5, tpl - 0.5)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        rgb, m = _shrink_roi(rgb, m, size, scale)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _shrink_roi(rgb: np.ndarray, m: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut the region the chip covers, shrink it by ~``scale`` with INTER_AREA, adjust ``m`` to match."""
    h, w = rgb.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    x0, y0 = np.clip(np.floor(corners.min(0)) - 2, 0, [w, h]).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(0)) + 2, 0, [w, h]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:  # face entirely off-image: nothing to shrink
        return rgb, m
    roi = rgb[y0:y1, x0:x1]
    nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
    kx, ky = nw / (x1 - x0), nh / (y1 - y0)
    # pixel centre q in `small` <- source pixel centre p: p = (q + 0.5) / k - 0.5 + offset
    back = np.array([[1 / kx, 0, 0.5 / kx - 0.5 + x0], [0, 1 / ky, 0.5 / ky - 0.5 + y0], [0, 0, 1]])
    return small, (np.vstack([m, [0, 0, 1]]) @ back)[:2]
