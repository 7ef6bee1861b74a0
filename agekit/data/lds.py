"""Label distribution smoothing (Yang et al., 2021): per-sample weights from a smoothed age histogram."""
from __future__ import annotations

import numpy as np

__all__ = ["lds_weights"]


def _triang(m: int) -> np.ndarray:
    """The triangular window of ``scipy.signal.windows.triang(m)`` (no zero end points), in numpy."""
    n = np.arange(1, (m + 1) // 2 + 1, dtype=np.float64)
    if m % 2:
        w = 2 * n / (m + 1)
        return np.concatenate([w, w[-2::-1]])
    w = (2 * n - 1) / m
    return np.concatenate([w, w[::-1]])


def _convolve_same(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.convolve1d(x, k, mode="constant")``: zero padding, centred at ``len(k) // 2``."""
    start = len(k) // 2
    return np.convolve(x, k, mode="full")[start:start + len(x)]


def _kernel(kind: str, ks: int, sigma: float) -> np.ndarray:
    half = (ks - 1) // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    if kind == "gaussian":
        k = np.exp(-(x**2) / (2 * sigma**2))
    elif kind == "triang":
        k = _triang(ks)
    elif kind == "laplace":
        k = np.exp(-np.abs(x) / sigma)
    else:
        raise ValueError(f"unknown LDS kernel {kind!r}")
    return k / k.max()


def lds_weights(ages: np.ndarray, kind: str = "gaussian", ks: int = 5, sigma: float = 2.0,
                max_age: int = 120, reweight: str = "sqrt_inv") -> np.ndarray:
    """Inverse of the kernel-smoothed label density of each sample's integer age, scaled to mean 1.

    ``reweight`` follows the reference implementation (YyzHarry/imbalanced-regression): ``sqrt_inv``
    smooths the square roots of the counts, ``inverse`` the counts clipped to [5, 1000]. Plain inverse
    counts span a factor of about 870 on UTKFace, enough to let a few rare-age samples dominate MSE.
    """
    ages = np.asarray(ages, dtype=np.float64)
    if np.isnan(ages).any():
        raise ValueError("LDS weights need an age on every row")
    bins = np.clip(np.round(ages).astype(int), 0, max_age)
    counts = np.bincount(bins, minlength=max_age + 1).astype(np.float64)
    if reweight == "sqrt_inv":
        counts = np.sqrt(counts)
    elif reweight == "inverse":
        counts = np.clip(counts, 5, 1000)
    else:
        raise ValueError(f"unknown LDS reweighting {reweight!r}: use sqrt_inv or inverse")
    smoothed = _convolve_same(counts, _kernel(kind, ks, sigma))
    w = 1.0 / np.maximum(smoothed[bins], 1e-6)
    return (w * len(w) / w.sum()).astype(np.float32)
