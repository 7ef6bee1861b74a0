"""Attention modules inserted into a CNN's feature maps (B, C, H, W), each keeping the feature shape.

The channel/spatial modules are timm's own (SE, ECA, CBAM, CBAM's spatial half); only the gated
MHSA wrapper is ours, because timm has no residual, zero-gated token attention for conv features.
It reuses timm's ``Attention`` so the attention maps can be read with :func:`capture_attention`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from timm.layers.cbam import CbamModule, SpatialAttn
from timm.layers.eca import EcaModule
from timm.layers.squeeze_excite import SEModule
from timm.models.vision_transformer import Attention
from torch import nn

__all__ = ["MECHANISMS", "GatedBlock", "GatedMHSA", "capture_attention", "create_attention"]

MECHANISMS = ("none", "mhsa", "se", "eca", "cbam", "spatial")


class GatedMHSA(nn.Module):
    """``x <- x + gate * MHSA(LN(tokens(x)))`` with ``gate`` a learnable scalar that starts at 0.

    Starting at 0 makes the block an exact identity, so inserting it into a pretrained backbone does
    not disturb the pretrained features; training opens the gate as far as attention helps. The
    gate value is logged each epoch (parameters whose name ends in ``gate``). No position embedding
    is added: the conv features already carry position (zero padding), and the paper's formula has none.
    """

    def __init__(self, dim: int, num_heads: int = 4, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, gate_init: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MHSA: {dim} channels are not divisible by {num_heads} heads")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        a = self.attn(self.norm(t)).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gate * a


class GatedBlock(nn.Module):
    """``x <- x + gate * (block(x) - x)``, ``gate`` a learnable scalar starting at 0.

    timm's SE/ECA/CBAM rescale features from the first step, which disturbs a pretrained backbone; the
    MHSA is zero-gated. Wrapping them the same way (an identity at the start, the plain block at gate 1)
    separates "the mechanism" from "an ungated insertion" in the ablations. timm has no such wrapper.
    """

    def __init__(self, block: nn.Module, gate_init: float = 0.0) -> None:
        super().__init__()
        self.block = block
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate * (self.block(x) - x)


def create_attention(kind: str, channels: int, num_heads: int = 4, gated: bool = False) -> nn.Module:
    """One of :data:`MECHANISMS` for a ``channels``-wide feature map ('none' gives Identity).

    ``gated`` wraps SE/ECA/CBAM/spatial in :class:`GatedBlock`; the MHSA is always gated.
    """
    kind = kind.lower()
    if kind == "none":
        return nn.Identity()
    if kind == "mhsa":
        return GatedMHSA(channels, num_heads=num_heads)
    if kind == "se":
        block: nn.Module = SEModule(channels)  # reduction 1/16, as in the SE paper
    elif kind == "eca":
        block = EcaModule(channels)  # kernel size adapted to the channel count, as in ECA-Net
    elif kind == "cbam":
        block = CbamModule(channels)
    elif kind == "spatial":
        block = SpatialAttn(kernel_size=7)  # CBAM's spatial branch alone
    else:
        raise ValueError(f"unknown attention mechanism {kind!r}; choose from {', '.join(MECHANISMS)}")
    return GatedBlock(block) if gated else block


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Record every timm ``Attention``'s softmax weights (B, heads, N, N) during forward passes.

    timm computes attention with fused ``scaled_dot_product_attention``, which never materialises
    the weights; inside this context each module takes its explicit path, whose softmax goes through
    ``attn_drop`` (identity in eval), where a forward hook reads it. Restored on exit.
    """
    records: list[tuple[str, torch.Tensor]] = []
    saved: list[tuple[nn.Module, bool]] = []
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, Attention):
            saved.append((mod, mod.fused_attn))
            mod.fused_attn = False
            handles.append(mod.attn_drop.register_forward_hook(
                lambda _m, _i, out, name=name: records.append((name, out.detach()))))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
        for mod, fused in saved:
            mod.fused_attn = fused
