"""Classification baselines from timm for the attention paper's comparisons, at 32 px.

* ``convnext_cls_<size>``: plain ConvNeXt (CIFAR stem patch, no inserted attention).
* ``vit_tiny_p4_32``: timm ``VisionTransformer``, patch 4 at 32 px (64 tokens), dim 192, depth 12, 3 heads.
* ``mixer_tiny_p4_32``: timm ``MlpMixer`` with the same patching, dim 192, 12 blocks (ViT-Tiny's width and
  depth, so the two differ only in token mixing).
* ``vit_matched_p4_32`` / ``mixer_matched_p4_32``: the same families with the width searched so the
  total parameter count matches another model (``match_model``) or a number (``target_params``).

All are trained from scratch (no 32 px / patch-4 ImageNet weights exist). Every model has a
``backbone`` and a ``head`` returning ``{"logits"}``, like the attention-augmented ConvNeXt.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from timm.models.mlp_mixer import MlpMixer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .convnext_attn import ClassifierHead, ConvNeXtAttn
from .convnext_vit import register_sizes
from .registry import AgeModelCfg, get_model_cfg, register_age_model, strip_timm_kwargs

__all__ = ["HEAD_CHOICES", "TimmClassifier", "count_params", "match_width", "model_params"]

HEAD_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_params(name: str, **kwargs: Any) -> int:
    """Parameter count of a registered model, built on the meta device (no memory, no init cost)."""
    import timm

    with torch.device("meta"):
        return count_params(timm.create_model(name, **kwargs))


class TimmClassifier(nn.Module):
    """A timm model without its classifier (``backbone``) + :class:`ClassifierHead`."""

    def __init__(self, backbone: nn.Module, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassifierHead(backbone.num_features, num_classes, drop_rate)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))


def _vit(dim: int, heads: int, depth: int = 12, drop_path_rate: float = 0.0) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0,
                             drop_path_rate=drop_path_rate)


def _mixer(dim: int, depth: int = 12, drop_path_rate: float = 0.0) -> MlpMixer:
    return MlpMixer(img_size=32, patch_size=4, embed_dim=dim, num_blocks=depth, num_classes=0,
                    drop_path_rate=drop_path_rate)


def _heads_for(dim: int) -> int:
    """Head count for a width: head dim closest to 64 (ViT-Tiny/Small use 64), dividing ``dim``."""
    return min((h for h in HEAD_CHOICES if dim % h == 0), key=lambda h: (abs(dim / h - 64), h))


def match_width(family: str, target: int, num_classes: int, depth: int = 12, step: int = 4,
                max_dim: int = 2048) -> dict[str, int]:
    """Search the width (and, for ViT, the head count) whose total parameter count is closest to ``target``.

    At fixed depth and patching, both families' parameter count is exactly quadratic in the width (every
    layer is dim x k*dim, dim x const, or dim), so three meta-device builds give the polynomial and the
    best width on the ``step`` grid follows directly; a fourth build checks it. ViT heads do not change
    the count (qkv is dim x 3dim for any split), so heads are picked per width for a head dim near 64.
    """
    from fractions import Fraction

    def params(dim: int) -> int:
        with torch.device("meta"):
            bb = _vit(dim, _heads_for(dim), depth) if family == "vit" else _mixer(dim, depth)
        return count_params(bb) + dim * num_classes + num_classes

    xs = (64, 128, 256)
    ys = [params(x) for x in xs]
    # exact quadratic through the three points (Newton's divided differences in rationals)
    d1 = Fraction(ys[1] - ys[0], xs[1] - xs[0])
    d2 = (Fraction(ys[2] - ys[1], xs[2] - xs[1]) - d1) / (xs[2] - xs[0])

    def fitted(dim: int) -> Fraction:
        return ys[0] + d1 * (dim - xs[0]) + d2 * (dim - xs[0]) * (dim - xs[1])

    dims = range(step, max_dim + 1, step)
    dim = min(dims, key=lambda d: (abs(fitted(d) - target), d))
    n = params(dim)
    if n != fitted(dim):
        raise RuntimeError(f"{family}: parameter count is not quadratic in width ({n} vs {fitted(dim)})")
    out = {"dim": dim, "params": n, "target": int(target)}
    if family == "vit":
        out["heads"] = _heads_for(dim)
    return out


def _no_extra(kwargs: dict[str, Any]) -> None:
    """Fail on unknown kwargs instead of silently ignoring a typo (timm's own bookkeeping ones aside)."""
    extra = strip_timm_kwargs(kwargs)
    if extra:
        raise TypeError(f"unexpected model kwargs: {', '.join(sorted(extra))}")


def _target(target_params: int | None, match_model: str | None, match_kwargs: dict[str, Any] | None,
            num_classes: int) -> int:
    if (target_params is None) == (match_model is None):
        raise ValueError("give exactly one of target_params or match_model")
    if target_params is not None:
        return int(target_params)
    kw = dict(match_kwargs or {})
    if get_model_cfg(match_model).task == "classification":
        kw.setdefault("num_classes", num_classes)
    return model_params(match_model, **kw)


_CFG = {"input_size": (3, 32, 32), "task": "classification", "backbone_weights": "none: trained from scratch"}
_VIT_TINY = AgeModelCfg(name="vit_tiny_p4_32", family="vit", backbone="vit (timm VisionTransformer)",
                        description="ViT-Tiny, patch 4 at 32 px, dim 192, depth 12, 3 heads", **_CFG)
_MIXER_TINY = AgeModelCfg(name="mixer_tiny_p4_32", family="mixer", backbone="mixer (timm MlpMixer)",
                          description="MLP-Mixer-Tiny, patch 4 at 32 px, dim 192, 12 blocks", **_CFG)
_VIT_MATCHED = AgeModelCfg(name="vit_matched_p4_32", family="vit", backbone="vit (timm VisionTransformer)",
                           description="ViT patch 4 at 32 px, depth 12, width/heads searched to match a parameter count",
                           **_CFG)
_MIXER_MATCHED = AgeModelCfg(name="mixer_matched_p4_32", family="mixer", backbone="mixer (timm MlpMixer)",
                             description="MLP-Mixer patch 4 at 32 px, 12 blocks, width searched to match a parameter count",
                             **_CFG)


@register_age_model(_VIT_TINY)
def vit_tiny_p4_32(num_classes: int = 100, drop_rate: float = 0.0, drop_path_rate: float = 0.0, depth: int = 12,
                   **kwargs: Any) -> TimmClassifier:
    _no_extra(kwargs)
    return TimmClassifier(_vit(192, 3, depth, drop_path_rate), num_classes, drop_rate)


@register_age_model(_MIXER_TINY)
def mixer_tiny_p4_32(num_classes: int = 100, drop_rate: float = 0.0, drop_path_rate: float = 0.0, depth: int = 12,
                     **kwargs: Any) -> TimmClassifier:
    _no_extra(kwargs)
    return TimmClassifier(_mixer(192, depth, drop_path_rate), num_classes, drop_rate)


@register_age_model(_VIT_MATCHED)
def vit_matched_p4_32(num_classes: int = 100, target_params: int | None = None, match_model: str | None = None,
                      match_kwargs: dict[str, Any] | None = None, depth: int = 12, drop_rate: float = 0.0,
                      drop_path_rate: float = 0.0, **kwargs: Any) -> TimmClassifier:
    _no_extra(kwargs)
    found = match_width("vit", _target(target_params, match_model, match_kwargs, num_classes), num_classes, depth)
    model = TimmClassifier(_vit(found["dim"], found["heads"], depth, drop_path_rate), num_classes, drop_rate)
    model.width_search = found  # type: ignore[attr-defined]
    return model


@register_age_model(_MIXER_MATCHED)
def mixer_matched_p4_32(num_classes: int = 100, target_params: int | None = None, match_model: str | None = None,
                        match_kwargs: dict[str, Any] | None = None, depth: int = 12, drop_rate: float = 0.0,
                        drop_path_rate: float = 0.0, **kwargs: Any) -> TimmClassifier:
    _no_extra(kwargs)
    found = match_width("mixer", _target(target_params, match_model, match_kwargs, num_classes), num_classes, depth)
    model = TimmClassifier(_mixer(found["dim"], depth, drop_path_rate), num_classes, drop_rate)
    model.width_search = found  # type: ignore[attr-defined]
    return model


def _convnext_cfg(size: str) -> AgeModelCfg:
    return AgeModelCfg(name=f"convnext_cls_{size}", family="convnext_cls", input_size=(3, 32, 32),
                       backbone=f"convnext_{size}", task="classification",
                       backbone_weights=f"timm hub: convnext_{size} (ImageNet; offline: from scratch)",
                       description=f"plain ConvNeXt-{size} classifier with the CIFAR stem patch (baseline)")


def _build_convnext(cfg: AgeModelCfg) -> Callable[..., ConvNeXtAttn]:
    def fn(**kwargs: Any) -> ConvNeXtAttn:
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.setdefault("cifar_stem", True)
        return ConvNeXtAttn(cfg.backbone, task="classification", mechanism="none", points="none", **kwargs)
    return fn


register_sizes(_convnext_cfg, _build_convnext, globals())
