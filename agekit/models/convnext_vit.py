"""ConvNeXt–ViT hybrid for age (``convnext_vit_*``) and plain ConvNeXt + the same head (``convnext_age_*``).

Hybrid: timm ConvNeXt -> final-stage map (7x7xC at 224 px) -> tokens -> Linear to 192-d -> learned
position embedding -> 12 timm ViT ``Block`` s (3 heads, MLP ratio 4) -> mean pool -> AgeGenderHead.

The paper's connector is ambiguous ("49 tokens" vs "196 tokens"); both readings are options:

* ``connector="direct49"``: each of the 7x7 feature vectors is projected to one 192-d token (49 tokens).
* ``connector="split196"``: our reading of "split into 196 tokens": each C-d feature vector is
  projected to 4x192 and the four 192-d parts are laid out as a 2x2 patch (a learned 2x upsampling by
  pixel shuffle of channels), giving a 14x14 grid = 196 tokens that still line up with the image.

ConvNeXt sizes atto ... base are parameters (``convnext_vit_<size>``); ImageNet weights for the
backbone come from timm's hub when ``pretrained=True`` (online); offline the model trains from scratch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import nn

from .heads import AgeGenderHead
from .registry import AgeModelCfg, register_age_model, strip_timm_kwargs

__all__ = ["CONNECTORS", "CONVNEXT_SIZES", "ConvNeXtAge", "ConvNeXtViT", "build_hybrid", "convnext_early_modules",
           "register_sizes"]

CONVNEXT_SIZES = ("atto", "femto", "pico", "nano", "tiny", "small", "base")
CONNECTORS = ("direct49", "split196")


def register_sizes(make_cfg: Callable[[str], AgeModelCfg],
                   build: Callable[[AgeModelCfg], Callable[..., nn.Module]], module_globals: dict[str, Any],
                   sizes: tuple[str, ...] = CONVNEXT_SIZES) -> None:
    """Register ``make_cfg(size).name`` for each ConvNeXt size, like timm's per-variant entrypoints.

    One generated entrypoint per size (instead of seven hand-copied functions); each is also put in
    the calling module's namespace so ``from module import <name>`` works as for timm models.
    """
    for size in sizes:
        cfg = make_cfg(size)
        fn = build(cfg)
        fn.__name__ = fn.__qualname__ = cfg.name
        fn.__module__ = module_globals["__name__"]
        fn.__doc__ = cfg.description
        module_globals[cfg.name] = register_age_model(cfg)(fn)


def convnext_early_modules(backbone: nn.Module, n_blocks: int) -> list[nn.Module]:
    """Stem + the first ``n_blocks`` ConvNeXt stages (``finetune.freeze_early_blocks``, as MobileAgeNet)."""
    return [backbone.stem, *list(backbone.stages)[:n_blocks]]


class ConvNeXtViT(nn.Module):
    """ConvNeXt feature map -> Transformer encoder over its tokens -> bounded age (+ gender).

    The CNN part is only reached through :meth:`feature_map` and :meth:`early_modules`; a hybrid on another
    timm CNN (``agekit.models.lite_hybrid``: EfficientNet-Lite) overrides those two and keeps the rest.
    """

    def __init__(
        self,
        backbone: str,
        img_size: int = 224,
        connector: str = "direct49",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        head_hidden: int = 256,
        head_layers: int = 2,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
        age_range: tuple[float, float] = (0.0, 100.0),
        gender: bool = True,
        age_head: str = "regression",
    ) -> None:
        super().__init__()
        if connector not in CONNECTORS:
            raise ValueError(f"connector must be one of {CONNECTORS}, got {connector!r}")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        c = self.backbone.num_features
        grid = img_size // self.backbone.feature_info[-1]["reduction"]
        if grid < 1:
            raise ValueError(f"img_size {img_size} is smaller than the backbone's stride")
        self.connector_kind = connector
        if connector == "direct49":
            self.connector: nn.Module = nn.Linear(c, embed_dim)
        else:
            self.connector = nn.Sequential(nn.Conv2d(c, 4 * embed_dim, 1), nn.PixelShuffle(2))
            grid *= 2
        self.grid = (grid, grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        dpr = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]  # timm's linear decay rule
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = AgeGenderHead(embed_dim, hidden=head_hidden, num_layers=head_layers, dropout=drop_rate,
                                  age_range=age_range, gender=gender, age_head=age_head)
        trunc_normal_(self.pos_embed, std=0.02)
        for m in (self.connector, self.blocks):
            m.apply(init_weights_vit_timm)  # timm's ViT init for the transformer part

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return convnext_early_modules(self.backbone, n_blocks)

    def no_weight_decay(self) -> set[str]:
        """timm's convention: decaying the position embedding towards 0 only erases position information."""
        return {"pos_embed"}

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the CNN's final feature map (B, C, h, w), normalised as the CNN's own head would see it."""
        return self.backbone.head.norm(self.backbone.forward_features(x))  # ConvNeXt's own final LayerNorm

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> position-embedded tokens (B, N, D) before the encoder."""
        f = self.feature_map(x)
        if self.connector_kind == "direct49":
            t = self.connector(f.flatten(2).transpose(1, 2))
        else:
            t = self.connector(f).flatten(2).transpose(1, 2)
        h, w = f.shape[-2:]
        if self.connector_kind == "split196":
            h, w = 2 * h, 2 * w
        pos = self.pos_embed
        if (h, w) != self.grid:  # another input size: resample like timm ViTs do
            pos = resample_abs_pos_embed(pos, new_size=(h, w), old_size=self.grid, num_prefix_tokens=0)
        return t + pos

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.norm(self.blocks(self.tokens(x)))
        return self.head(t.mean(dim=1))


class ConvNeXtAge(nn.Module):
    """Plain ConvNeXt (pooled, final LayerNorm) + the hybrid's head: the "ConvNeXt alone" comparison."""

    def __init__(
        self,
        backbone: str,
        head_hidden: int = 256,
        head_layers: int = 2,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
        age_range: tuple[float, float] = (0.0, 100.0),
        gender: bool = True,
        age_head: str = "regression",
    ) -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        self.head = AgeGenderHead(self.backbone.num_features, hidden=head_hidden, num_layers=head_layers,
                                  dropout=drop_rate, age_range=age_range, gender=gender, age_head=age_head)

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        return convnext_early_modules(self.backbone, n_blocks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))


def _hub(size: str) -> str:
    return f"timm hub: convnext_{size} (ImageNet; offline: from scratch)"


def _vit_cfg(size: str) -> AgeModelCfg:
    return AgeModelCfg(
        name=f"convnext_vit_{size}", family="convnext_vit", input_size=(3, 224, 224), backbone=f"convnext_{size}",
        backbone_weights=_hub(size),
        description=f"ConvNeXt-{size} + 12-block ViT encoder (192-d, 3 heads) + 256-d head"
                    + (" (the CPU variant)" if size == "atto" else ""),
    )


def _age_cfg(size: str) -> AgeModelCfg:
    return AgeModelCfg(
        name=f"convnext_age_{size}", family="convnext_age", input_size=(3, 224, 224), backbone=f"convnext_{size}",
        backbone_weights=_hub(size), description=f"ConvNeXt-{size} + 256-d age/gender head (hybrid ablation)",
    )


def build_hybrid(cfg: AgeModelCfg, cls: type[ConvNeXtViT] = ConvNeXtViT) -> Callable[..., ConvNeXtViT]:
    """The factory of a registered hybrid: ``cls`` on ``cfg.backbone`` at ``cfg``'s input size and age range."""
    def fn(**kwargs: Any) -> ConvNeXtViT:
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.setdefault("age_range", cfg.age_range)
        kwargs.setdefault("img_size", cfg.input_size[-1])
        return cls(cfg.backbone, **kwargs)
    return fn


def _build_age(cfg: AgeModelCfg) -> Callable[..., ConvNeXtAge]:
    def fn(**kwargs: Any) -> ConvNeXtAge:
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.setdefault("age_range", cfg.age_range)
        return ConvNeXtAge(cfg.backbone, **kwargs)
    return fn


register_sizes(_vit_cfg, build_hybrid, globals())
register_sizes(_age_cfg, _build_age, globals())

# CPU budget variants of ConvNeXt-atto (no hub weights offline, so they train from scratch here):
# 128 px gives a 4x4 final map (16 tokens, or 64 with split196) and shares the 128 px UTKFace crop cache
# with mobileagenet_lite0, about 3.5x cheaper per image than 224 px; 96 px (3x3 tokens) halves that again
# and is what the hybrid grids' `cpu` preset uses.
def _at_px(make_cfg: Callable[[str], AgeModelCfg], px: int, what: str) -> Callable[[str], AgeModelCfg]:
    def make(size: str) -> AgeModelCfg:
        cfg = make_cfg(size)
        return dataclasses.replace(cfg, name=f"{cfg.name}_{px}", input_size=(3, px, px),
                                   description=f"{what} at {px} px ({px // 32}x{px // 32} final map): a CPU grid variant")
    return make


for _px in (96, 128):
    register_sizes(_at_px(_vit_cfg, _px, "ConvNeXt-atto hybrid"), build_hybrid, globals(), sizes=("atto",))
    register_sizes(_at_px(_age_cfg, _px, "ConvNeXt-atto + 256-d head"), _build_age, globals(), sizes=("atto",))
