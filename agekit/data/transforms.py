"""Preprocessing shared by training, evaluation and prediction, driven by the model's cfg.

Training decodes every face crop once into a uint8 cache (agekit.data.cache) and augments whole
batches (agekit.data.batch_augment) instead of running timm's per-image PIL pipeline, which would
decode and resize each JPEG again every epoch on our two CPU cores.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..models.registry import AgeModelCfg

__all__ = ["resize_crop", "letterbox", "normalize", "crops_to_batch", "face_body_batch"]


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an aligned face crop (HxWx3 uint8) to ``size``; the one resize used everywhere."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` copy of ``rgb`` with its aspect ratio kept: scaled to fit, centred on black.

    A body is tall and narrow; stretching it square (``resize_crop``) would change its proportions, which
    carry age (a child's head-to-body ratio). Same interpolation rule as :func:`resize_crop`.
    """
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = rgb if (nh, nw) == (h, w) else cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def normalize(x_uint8: torch.Tensor, cfg: AgeModelCfg) -> torch.Tensor:
    """(B,3,H,W) uint8 -> float32 normalised with the model's mean/std, on ``x_uint8``'s device."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x_uint8.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x_uint8.device).view(1, 3, 1, 1) * 255.0
    return (x_uint8.float() - mean) / std


def crops_to_batch(crops: list[np.ndarray], cfg: AgeModelCfg) -> torch.Tensor:
    """Aligned crops (any size, HxWx3 uint8 RGB) -> normalised model input batch."""
    size = cfg.input_size[-1]
    arr = np.stack([resize_crop(c, size) for c in crops])
    return normalize(torch.from_numpy(arr).permute(0, 3, 1, 2), cfg)


def face_body_batch(faces: list[np.ndarray | None], bodies: list[np.ndarray | None],
                    cfg: AgeModelCfg) -> dict[str, np.ndarray]:
    """Pairs of face chip and body crop (HxWx3 uint8 RGB, ``None`` = missing) -> a face+body model's inputs.

    ``face``/``body``: float32 NCHW normalised with the model's mean/std (faces resized as
    :func:`crops_to_batch` does, bodies letterboxed); a missing crop is an all-zero input. ``face_mask``/
    ``body_mask``: float32 (B,), 1 present, 0 missing. A pair with neither crop is a ValueError.
    """
    if len(faces) != len(bodies):
        raise ValueError(f"got {len(faces)} face crops but {len(bodies)} body crops; pass one of each per person "
                         "(None where missing)")
    size = cfg.input_size[-1]
    for i, (f, b) in enumerate(zip(faces, bodies)):
        if f is None and b is None:
            raise ValueError(f"pair {i} has neither a face nor a body crop")
    fm = np.array([f is not None for f in faces], dtype=np.float32)
    bm = np.array([b is not None for b in bodies], dtype=np.float32)
    blank = np.zeros((size, size, 3), np.uint8)
    face = crops_to_batch([blank if f is None else np.asarray(f) for f in faces], cfg).numpy() if len(faces) else \
        np.zeros((0, 3, size, size), np.float32)
    body = (normalize(torch.from_numpy(np.stack([blank if b is None else letterbox(np.asarray(b), size) for b in bodies]))
                      .permute(0, 3, 1, 2), cfg).numpy() if len(bodies) else np.zeros((0, 3, size, size), np.float32))
    face[fm == 0] = 0.0
    body[bm == 0] = 0.0
    return {"face": np.ascontiguousarray(face), "body": np.ascontiguousarray(body), "face_mask": fm, "body_mask": bm}
