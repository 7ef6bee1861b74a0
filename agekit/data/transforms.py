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

__all__ = ["resize_crop", "normalize", "crops_to_batch"]


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an aligned face crop (HxWx3 uint8) to ``size``; the one resize used everywhere."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


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
