"""Attention maps of the MHSA blocks in the hybrid (``convnext_vit_*``) and attention-augmented ConvNeXt.

For each MHSA block: its softmax weights (B, heads, N, N) averaged over heads; per token, the mean
attention it receives (the column mean over all queries); reshaped to the token grid, upsampled
bilinearly to the image and written as a heatmap PNG and an overlay PNG.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..models.attention import capture_attention

__all__ = ["IMAGE_SUFFIXES", "attention_maps_for_images", "load_any_model", "received_attention"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_any_model(path: str | Path) -> tuple[nn.Module, Any]:
    """An agekit ``.safetensors`` model file or a Lightning ``.ckpt`` from ``agekit train`` -> (model.eval(), cfg)."""
    from ..models import load_model

    model, cfg, _ = load_model(path)
    return model, cfg


def _grid(n: int, model: nn.Module) -> tuple[int, int]:
    g = getattr(model, "grid", None)
    if g is not None and g[0] * g[1] == n:
        return tuple(g)  # type: ignore[return-value]
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"cannot lay {n} tokens out on a square grid")
    return s, s


def received_attention(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """[(block name, (B, h, w) mean attention each token receives)] for every MHSA block in ``model``."""
    with torch.no_grad(), capture_attention(model) as records:
        model(x)
    if not records:
        raise ValueError(f"{type(model).__name__} has no MHSA blocks to draw attention maps for")
    out = []
    for name, attn in records:
        received = attn.float().mean(dim=1).mean(dim=1)  # heads, then over queries -> (B, N)
        h, w = _grid(received.shape[-1], model)
        out.append((name.removesuffix(".attn"), received.reshape(-1, h, w)))
    return out


def _colorize(m: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](m)[..., :3] * 255).astype(np.uint8)


def attention_maps_for_images(model_path: str | Path, images: list[str | Path], out_dir: str | Path,
                              alpha: float = 0.5) -> list[dict[str, str]]:
    """Write ``<out>/<image>/<block>_heatmap.png`` and ``_overlay.png`` for every image and MHSA block."""
    from ..data.imageio import load_rgb
    from ..data.transforms import crops_to_batch

    model, cfg = load_any_model(model_path)
    files = _expand(images)
    if not files:
        raise FileNotFoundError("no images found (give image files or folders of .jpg/.png)")
    out_dir = Path(out_dir)
    written = []
    for path in files:
        rgb = load_rgb(path)
        maps = received_attention(model, crops_to_batch([rgb], cfg))
        d = out_dir / path.stem
        d.mkdir(parents=True, exist_ok=True)
        h, w = rgb.shape[:2]
        for name, m in maps:
            up = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            up = (up - up.min()) / max(float(up.max() - up.min()), 1e-12)
            heat = _colorize(up)
            over = (alpha * heat + (1 - alpha) * rgb).astype(np.uint8)
            hp, op = d / f"{name}_heatmap.png", d / f"{name}_overlay.png"
            Image.fromarray(heat).save(hp)
            Image.fromarray(over).save(op)
            written.append({"image": str(path), "block": name, "grid": "x".join(map(str, m.shape[-2:])),
                            "heatmap": str(hp), "overlay": str(op)})
    (out_dir / "maps.json").write_text(json.dumps(written, indent=2))
    return written


def _expand(images: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, images):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image not found: {p}")
    return out
