"""Label distribution smoothing (Yang et al., 2021): per-sample weights from a smoothed age histogram."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d
from scipy.signal.windows import triang

__all__ = ["lds_weights"]


def _kernel(kind: str, ks: int, sigma: float) -> np.ndarray:
    half = (ks - 1) // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    if kind == "gaussian":
        k = np.exp(-(x**2) / (2 * sigma**2))
    elif kind == "triang":
        k = triang(ks)
    elif kind == "laplace":
        k = np.exp(-np.abs(x) / sigma)
    else:
        raise ValueError(f"unknown LDS kernel {kind!r}")
    return k / k.max()


def lds_weights(ages: np.ndarray, kind: str = "gaussian", ks: int = 5, sigma: float = 2.0,
                max_age: int = 120) -> np.ndarray:
    """Inverse of the kernel-smoothed density of each sample's integer age, scaled to mean 1."""
    ages = np.asarray(ages, dtype=np.float64)
    if np.isnan(ages).any():
        raise ValueError("LDS weights need an age on every row")
    bins = np.clip(np.round(ages).astype(int), 0, max_age)
    hist = np.bincount(bins, minlength=max_age + 1).astype(np.float64)
    smoothed = convolve1d(hist, _kernel(kind, ks, sigma), mode="constant")
    w = 1.0 / np.maximum(smoothed[bins], 1e-6)
    return (w * len(w) / w.sum()).astype(np.float32)
