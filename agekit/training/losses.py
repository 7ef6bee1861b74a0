"""Age losses: L1, MSE, the hybrid paper's adaptive loss, and LDS-weighted MSE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptive_loss", "age_loss", "gender_loss"]


def adaptive_loss(pred: torch.Tensor, target: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``1 + sigma * mean((y - y_hat)^2 / (|y - y_hat| + sigma))`` (ConvNeXt-ViT paper).

    Quadratic for errors well below sigma, linear (L1-like) for large ones: robust to label noise.
    """
    d = target - pred
    return 1.0 + sigma * torch.mean(d * d / (d.abs() + sigma))


def age_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             sigma: float = 2.0) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "adaptive":
        return adaptive_loss(pred, target, sigma)
    if kind == "weighted_mse":
        if weight is None:
            raise ValueError("weighted_mse needs LDS weights")
        return torch.sum(weight * (pred - target) ** 2) / weight.sum().clamp_min(1e-8)
    raise ValueError(f"unknown age loss {kind!r}")


def gender_loss(logit: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
    """BCE over rows with a known gender (gender < 0 means unknown)."""
    known = gender >= 0
    if not bool(known.any()):
        return logit.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logit[known], gender[known].float())
