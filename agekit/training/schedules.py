"""Learning-rate schedules: linear warmup + cosine decay, OneCycle, or constant."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

__all__ = ["build_scheduler", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.01) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_scheduler(opt: torch.optim.Optimizer, kind: str, total_steps: int | float, epochs: int,
                    warmup_epochs: float) -> LRScheduler | None:
    total = max(1, int(total_steps))
    warmup = int(round(total * warmup_epochs / max(1, epochs)))
    if kind == "constant":
        return None
    if kind == "cosine":
        return LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    if kind == "onecycle":
        return OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
                          pct_start=max(0.05, min(0.5, warmup / total)))
    raise ValueError(f"unknown schedule {kind!r}")
