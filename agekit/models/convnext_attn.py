"""Attention-augmented ConvNeXt: attention modules inserted after stage 2 (P2), stage 3 (P3) or both.

* ``convnext_attn_<size>``: classification (``num_classes``), 32 px inputs with the CIFAR stem patch.
* ``convnext_attn_age_<size>``: the same network with the age/gender head at 224 px.

The inserted modules live in ``model.attn`` (outside ``model.backbone``), so freezing the
backbone (regimes F0/F1/F2, :mod:`agekit.models.freezing`) leaves them and the head trainable.

Insertion point ``p<i>`` is the backbone's output at stride ``2**(i+1)`` (timm's ``feature_info``): ConvNeXt's
stage i, and the same place in other timm CNNs (EfficientNet-Lite0: P2 after ``blocks[2]``, 40 channels; P3
after ``blocks[4]``, 112 channels), so :class:`ConvNeXtAttn` also runs on those (``agekit.models.lite_attn``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
import torch
from torch import nn

from .attention import MECHANISMS, create_attention
from .convnext_vit import convnext_early_modules, register_sizes
from .heads import AgeGenderHead
from .registry import AgeModelCfg, strip_timm_kwargs

__all__ = ["ClassifierHead", "ConvNeXtAttn", "feature_sequence", "insertion_points", "parse_points", "patch_cifar_stem"]


def patch_cifar_stem(backbone: nn.Module) -> None:
    """ConvNeXt stem 4x4 conv: stride 4 -> 2, padding 0 -> 1 (a 32 px image then gives 16x16, not 8x8).

    The kernel is unchanged, so ImageNet stem weights still load.
    """
    conv = backbone.stem[0]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a ConvNeXt stem conv, found {type(conv).__name__}")
    conv.stride, conv.padding = (2, 2), (1, 1)


def parse_points(points: str | list[str] | tuple[str, ...]) -> tuple[int, ...]:
    """"p3", "p2+p3", ["p2", "p3"] or "none" -> sorted stage numbers (1-based, 1..4)."""
    if isinstance(points, str):
        points = [] if points.lower() in ("", "none") else points.replace(",", "+").split("+")
    out = set()
    for p in points:
        p = str(p).strip().lower()
        if len(p) != 2 or p[0] != "p" or p[1] not in "1234":
            raise ValueError(f"insertion point {p!r} must be p1..p4 (the stride 4/8/16/32 output: ConvNeXt's stage 1..4)")
        out.add(int(p[1]))
    return tuple(sorted(out))


def insertion_points(backbone: nn.Module) -> dict[int, tuple[str, int]]:
    """Point i -> (name of the backbone module whose output is at stride ``2**(i+1)``, its channels).

    Read from timm's ``feature_info`` (the last module of each stride), so it holds for any timm CNN that
    :func:`feature_sequence` can walk: ConvNeXt ``stages.{i-1}``; EfficientNet-Lite0 ``blocks.1/2/4/6``.
    """
    out = {}
    for f in backbone.feature_info:
        i = int(f["reduction"]).bit_length() - 2  # 4 -> 1, 8 -> 2, 16 -> 3, 32 -> 4
        if 1 <= i <= 4:
            out[i] = (f["module"], int(f["num_chs"]))
    return out


def feature_sequence(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's ``forward_features`` of a ConvNeXt or an EfficientNet as named steps, so that modules can be
    applied between them (``insertion_points`` names the places)."""
    if hasattr(backbone, "stages") and hasattr(backbone, "stem"):  # ConvNeXt
        return [("stem", backbone.stem), *((f"stages.{i}", m) for i, m in enumerate(backbone.stages)),
                ("norm_pre", backbone.norm_pre)]
    if hasattr(backbone, "blocks") and hasattr(backbone, "bn2"):  # timm's EfficientNet class (-Lite, MobileNetV2)
        return [("conv_stem", backbone.conv_stem), ("bn1", backbone.bn1),
                *((f"blocks.{i}", m) for i, m in enumerate(backbone.blocks)),
                ("conv_head", backbone.conv_head), ("bn2", backbone.bn2)]
    raise TypeError(f"attention insertion supports timm ConvNeXt and EfficientNet backbones, not {type(backbone).__name__}")


class ClassifierHead(nn.Module):
    """Dropout + Linear on pooled features -> {"logits"} (dict output, like the age heads)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(self.drop(feats))}


class ConvNeXtAttn(nn.Module):
    """timm ConvNeXt with ``attn["p<i>"]`` applied to the output of stage i, then a task head."""

    def __init__(
        self,
        backbone: str,
        task: str = "classification",
        points: str | list[str] = "p3",
        mechanism: str = "mhsa",
        num_heads: int = 4,
        gated: bool = False,
        cifar_stem: bool = False,
        num_classes: int = 100,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_hidden: int = 256,
        head_layers: int = 2,
        age_range: tuple[float, float] = (0.0, 100.0),
        gender: bool = True,
        age_head: str = "regression",
    ) -> None:
        super().__init__()
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown attention mechanism {mechanism!r}; choose from {', '.join(MECHANISMS)}")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        if cifar_stem:
            patch_cifar_stem(self.backbone)
        places = insertion_points(self.backbone)
        self.points = parse_points(points) if mechanism != "none" else ()
        self.attn = nn.ModuleDict({f"p{i}": create_attention(mechanism, places[i][1], num_heads, gated)
                                   for i in self.points})
        self.attn_after = {places[i][0]: f"p{i}" for i in self.points}  # backbone step name -> attn key
        nf = self.backbone.num_features
        if task == "classification":
            self.head: nn.Module = ClassifierHead(nf, num_classes, drop_rate)
        elif task == "age":
            self.head = AgeGenderHead(nf, hidden=head_hidden, num_layers=head_layers, dropout=drop_rate,
                                      age_range=age_range, gender=gender, age_head=age_head)
        else:
            raise ValueError(f"task must be 'classification' or 'age', got {task!r}")

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return convnext_early_modules(self.backbone, n_blocks)

    def no_weight_decay(self) -> set[str]:
        """The attention gates start at 0 and must be free to open; decay would pull them shut."""
        return {n for n, _ in self.named_parameters() if n.endswith(".gate")}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's ``forward_features`` with ``attn[p<i>]`` applied after the step that point i names."""
        for name, step in feature_sequence(self.backbone):
            x = step(x)
            if name in self.attn_after:
                x = self.attn[self.attn_after[name]](x)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone.forward_head(self.forward_features(x), pre_logits=True))


def _hub(size: str) -> str:
    return f"timm hub: convnext_{size} (ImageNet; offline: from scratch)"


def _cls_cfg(size: str) -> AgeModelCfg:
    return AgeModelCfg(
        name=f"convnext_attn_{size}", family="convnext_attn", input_size=(3, 32, 32), backbone=f"convnext_{size}",
        backbone_weights=_hub(size), task="classification",
        description=f"ConvNeXt-{size}, CIFAR stem, attention at P2/P3 (default gated MHSA at P3), classifier",
    )


def _age_cfg(size: str) -> AgeModelCfg:
    return AgeModelCfg(
        name=f"convnext_attn_age_{size}", family="convnext_attn", input_size=(3, 224, 224), backbone=f"convnext_{size}",
        backbone_weights=_hub(size), task="age",
        description=f"ConvNeXt-{size}, attention at P2/P3 (default gated MHSA at P3), 256-d age/gender head",
    )


def _build(cfg: AgeModelCfg) -> Callable[..., ConvNeXtAttn]:
    def fn(**kwargs: Any) -> ConvNeXtAttn:
        kwargs = strip_timm_kwargs(kwargs)
        kwargs["task"] = cfg.task
        if cfg.task == "classification":
            kwargs.setdefault("cifar_stem", cfg.input_size[-1] <= 64)
        else:
            kwargs.setdefault("age_range", cfg.age_range)
        return ConvNeXtAttn(cfg.backbone, **kwargs)
    return fn


register_sizes(_cls_cfg, _build, globals())
register_sizes(_age_cfg, _build, globals())
