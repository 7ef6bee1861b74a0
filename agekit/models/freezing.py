"""Fine-tuning regimes and optimizer parameter groups: the one place both are defined.

Regimes (``finetune.regime``), each for ``warmup`` epochs (``finetune.head_epochs``) then after:

* **two_stage** / **F2**: backbone frozen during the warmup, then the whole backbone trains at
  ``lr * backbone_lr_ratio``. (F2 is the attention paper's name for the same schedule.)
* **F0**: the backbone is frozen throughout; only what sits outside it (attention, head) trains.
* **F1**: F0 for the warmup, then the last downsampling + stage 4 (+ the final LayerNorm that
  normalises stage 4's output, which sits in timm's ``head.norm``) train too, at the head's lr
  (ConvNeXt backbones). EfficientNet backbones: the last two block stages (the stride-32 part) +
  ``conv_head`` and its BatchNorm ``bn2``.

Under F0/F1/F2 a frozen part is fixed, BatchNorm included: its BatchNorm layers keep their affine weights and
run on their ImageNet statistics (eval mode) until they are unfrozen, so a frozen backbone gives the same
features every epoch. ``two_stage`` (the MobileAgeNet recipe) keeps Lightning's default there: BatchNorm
layers of the frozen backbone still train.

In every regime the ``early`` modules (stem + first N blocks, ``finetune.freeze_early_blocks``) stay
frozen and in eval mode for the whole run, and they are left out of the optimizer.

All other parameters sit in fixed optimizer groups from the start (:func:`param_groups`): unfreezing
only flips ``requires_grad``, no groups are added mid-run, and the lr schedule covers every group.
Frozen parameters get no gradient, and AdamW skips them. Weight decay follows timm's rule
(:func:`timm.optim.param_groups_weight_decay`): none on 1-d tensors (norms, biases, scalar gates)
nor on the names a model lists in ``no_weight_decay()`` (``pos_embed``, gates).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["REGIMES", "Finetuning", "apply_regime", "late_backbone_modules", "no_decay_ids", "param_groups"]

REGIMES = ("two_stage", "F0", "F1", "F2")


def _check(regime: str) -> None:
    if regime not in REGIMES:
        raise ValueError(f"unknown freezing regime {regime!r}; choose from {', '.join(REGIMES)}")


def late_backbone_modules(backbone: nn.Module) -> list[nn.Module]:
    """F1's set: the last stage (in timm's ConvNeXt it begins with the last downsampling) + final norm.

    timm EfficientNet(-Lite): the last two block stages (the stride-32 stages; ``blocks[-2]`` holds the last
    downsampling) + ``conv_head`` + ``bn2``, the counterpart of ConvNeXt's stage 4 + final norm.
    """
    stages = getattr(backbone, "stages", None)
    blocks = getattr(backbone, "blocks", None)
    if stages is None and blocks is not None and hasattr(backbone, "bn2"):  # timm's EfficientNet class
        return [*list(blocks)[-2:], backbone.conv_head, backbone.bn2]
    if stages is None:
        raise TypeError(f"freezing regime F1 expects a timm ConvNeXt or EfficientNet backbone, "
                        f"got {type(backbone).__name__}")
    mods: list[nn.Module] = [stages[-1]]
    for norm in (getattr(backbone, "norm_pre", None), getattr(getattr(backbone, "head", None), "norm", None)):
        if norm is not None and any(True for _ in norm.parameters()):
            mods.append(norm)
    return mods


def apply_regime(model: nn.Module, regime: str, unfrozen: bool, early: Sequence[nn.Module] = ()) -> dict[str, int]:
    """Set ``requires_grad`` for ``regime`` before (``unfrozen=False``) or after the warmup epochs.

    ``early`` modules are frozen in every phase (they never train). Returns the number of trainable
    and frozen parameter tensors (for logs and tests).
    """
    _check(regime)
    BaseFinetuning.make_trainable(model)
    BaseFinetuning.freeze(model.backbone, train_bn=regime == "two_stage")
    if unfrozen and regime == "F1":
        BaseFinetuning.make_trainable(late_backbone_modules(model.backbone))
    elif unfrozen and regime in ("F2", "two_stage"):
        BaseFinetuning.make_trainable(model.backbone)
    for mod in early:
        mod.requires_grad_(False)
    if regime != "two_stage":
        _fix_frozen_batchnorm(model.backbone, model.training)
    params = list(model.parameters())
    n_train = sum(p.requires_grad for p in params)
    return {"trainable": n_train, "frozen": len(params) - n_train}


def _fix_frozen_batchnorm(backbone: nn.Module, training: bool) -> None:
    """Frozen BatchNorm layers in eval mode (their running statistics, not the batch's), trainable ones
    following the model. Lightning keeps these modes through the epoch (validation restores them), and the
    callback sets them again at every epoch start."""
    for mod in backbone.modules():
        if isinstance(mod, _BatchNorm):
            params = list(mod.parameters(recurse=False))
            trainable = any(p.requires_grad for p in params) if params else mod.track_running_stats
            mod.train(training and trainable)


@contextmanager
def _all_trainable(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def no_decay_ids(model: nn.Module) -> set[int]:
    """ids of the parameters timm's rule exempts from weight decay (1-d, biases, ``model.no_weight_decay()``)."""
    from timm.optim import param_groups_weight_decay

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    with _all_trainable(model):  # timm skips frozen tensors; ours are frozen only for now
        groups = param_groups_weight_decay(model, weight_decay=1.0, no_weight_decay_list=skip)
    return {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}


def param_groups(model: nn.Module, regime: str, lr: float, backbone_lr_ratio: float, weight_decay: float,
                 early: Sequence[nn.Module] = ()) -> list[dict[str, Any]]:
    """Fixed optimizer groups for every task: lr group x (decay, no decay).

    lr groups: outside the backbone (``lr``), F1's late backbone set (``lr`` under F1), the rest of the
    backbone (``lr * backbone_lr_ratio``). ``early`` modules never train and are left out.
    """
    _check(regime)
    bb = model.backbone
    skip = {id(p) for m in early for p in m.parameters()}
    bb_ids = {id(p) for p in bb.parameters()}
    late_ids = {id(p) for m in late_backbone_modules(bb) for p in m.parameters()} if regime == "F1" else set()
    nd = no_decay_ids(model)
    lr_groups = [
        ("head", lr, [p for p in model.parameters() if id(p) not in bb_ids]),
        ("backbone_late", lr, [p for p in bb.parameters() if id(p) in late_ids]),
        ("backbone", lr * backbone_lr_ratio, [p for p in bb.parameters() if id(p) not in late_ids]),
    ]
    groups = []
    for name, glr, params in lr_groups:
        params = [p for p in params if id(p) not in skip]
        decay = [p for p in params if id(p) not in nd]
        no_decay = [p for p in params if id(p) in nd]
        if decay:
            groups.append({"params": decay, "lr": glr, "weight_decay": weight_decay, "name": name})
        if no_decay:
            groups.append({"params": no_decay, "lr": glr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    return groups


class Finetuning(BaseFinetuning):
    """The one fine-tuning callback: applies ``regime`` to ``pl_module.model``, unfreezing at ``warmup_epochs``.

    ``pl_module.early`` (optional) lists the modules that stay frozen throughout.
    """

    def __init__(self, regime: str, warmup_epochs: int) -> None:
        super().__init__()
        _check(regime)
        self.regime, self.warmup_epochs = regime, warmup_epochs

    def _unfrozen(self, epoch: int) -> bool:
        return self.regime != "F0" and epoch >= self.warmup_epochs

    def freeze_before_training(self, pl_module) -> None:
        apply_regime(pl_module.model, self.regime, self._unfrozen(0), getattr(pl_module, "early", ()))

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        # Re-applied every epoch so a resumed run lands in the right phase.
        apply_regime(pl_module.model, self.regime, self._unfrozen(epoch), getattr(pl_module, "early", ()))
