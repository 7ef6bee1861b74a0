"""Freezing regimes for a model whose ``backbone`` is a timm ConvNeXt (attention paper, E1–E6).

* **F0**: the backbone is frozen throughout; only the inserted attention and the head train.
* **F1**: F0 for ``warmup_epochs``, then the last downsampling + stage 4 (+ the final LayerNorm that
  normalises stage 4's output, which sits in timm's ``head.norm``) train too, at the head's lr.
* **F2**: F0 for ``warmup_epochs``, then the whole backbone trains, at ``lr * backbone_lr_ratio``.

Everything outside ``model.backbone`` (attention modules, head, hybrid transformer) always trains.
All parameters sit in fixed optimizer groups from the start (see :func:`regime_param_groups`), so
unfreezing only flips ``requires_grad``: no param groups are added mid-run, and the lr schedule
covers every group. Frozen parameters get no gradient, and AdamW skips them.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

__all__ = ["REGIMES", "FreezingRegime", "apply_regime", "late_backbone_modules", "regime_param_groups"]

REGIMES = ("F0", "F1", "F2")


def _check(regime: str) -> None:
    if regime not in REGIMES:
        raise ValueError(f"unknown freezing regime {regime!r}; choose from {', '.join(REGIMES)}")


def late_backbone_modules(backbone: nn.Module) -> list[nn.Module]:
    """F1's set: the last stage (in timm's ConvNeXt it begins with the last downsampling) + final norm."""
    stages = getattr(backbone, "stages", None)
    if stages is None:
        raise TypeError(f"freezing regimes F1/F2 expect a timm ConvNeXt backbone, got {type(backbone).__name__}")
    mods: list[nn.Module] = [stages[-1]]
    for norm in (getattr(backbone, "norm_pre", None), getattr(getattr(backbone, "head", None), "norm", None)):
        if norm is not None and any(True for _ in norm.parameters()):
            mods.append(norm)
    return mods


def apply_regime(model: nn.Module, regime: str, unfrozen: bool) -> dict[str, int]:
    """Set ``requires_grad`` for ``regime`` before (``unfrozen=False``) or after the warmup epochs.

    Returns the number of trainable and frozen parameter tensors (for logs and tests).
    """
    _check(regime)
    BaseFinetuning.make_trainable(model)
    BaseFinetuning.freeze(model.backbone, train_bn=True)
    if unfrozen and regime == "F1":
        BaseFinetuning.make_trainable(late_backbone_modules(model.backbone))
    elif unfrozen and regime == "F2":
        BaseFinetuning.make_trainable(model.backbone)
    params = list(model.parameters())
    n_train = sum(p.requires_grad for p in params)
    return {"trainable": n_train, "frozen": len(params) - n_train}


def regime_param_groups(model: nn.Module, regime: str, lr: float, backbone_lr_ratio: float) -> list[dict[str, Any]]:
    """Fixed optimizer groups: non-backbone (lr), F1's late set (lr under F1), rest of the backbone (lr * ratio)."""
    _check(regime)
    bb = model.backbone
    bb_ids = {id(p) for p in bb.parameters()}
    late_ids = {id(p) for m in late_backbone_modules(bb) for p in m.parameters()}
    head = [p for p in model.parameters() if id(p) not in bb_ids]
    late = [p for p in bb.parameters() if id(p) in late_ids]
    rest = [p for p in bb.parameters() if id(p) not in late_ids]
    late_lr = lr if regime == "F1" else lr * backbone_lr_ratio
    groups = [{"params": head, "lr": lr, "name": "head"},
              {"params": late, "lr": late_lr, "name": "backbone_late"},
              {"params": rest, "lr": lr * backbone_lr_ratio, "name": "backbone"}]
    return [g for g in groups if g["params"]]


class FreezingRegime(BaseFinetuning):
    """Lightning callback applying F0/F1/F2 to ``pl_module.model``; unfreezes at ``warmup_epochs``."""

    def __init__(self, regime: str, warmup_epochs: int) -> None:
        super().__init__()
        _check(regime)
        self.regime, self.warmup_epochs = regime, warmup_epochs

    def freeze_before_training(self, pl_module) -> None:
        apply_regime(pl_module.model, self.regime, unfrozen=self.warmup_epochs <= 0 and self.regime != "F0")

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        # Re-applied every epoch so a resumed run lands in the right phase.
        apply_regime(pl_module.model, self.regime, unfrozen=epoch >= self.warmup_epochs and self.regime != "F0")
