"""Attention maps of the MHSA blocks in the hybrids (``convnext_vit_*``, ``lite0_vit_*``) and the
attention-augmented CNNs (``convnext_attn_*``, ``lite0_attn_*``).

For each MHSA block: its softmax weights (B, heads, N, N) averaged over heads; per token, the mean
attention it receives (the column mean over all queries); reshaped to the token grid, upsampled
bilinearly to the image and written as a heatmap PNG and an overlay PNG (:func:`attention_maps_for_images`),
or drawn for a labelled split's best- and worst-predicted faces side by side (:func:`attention_sheet`).
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

__all__ = ["IMAGE_SUFFIXES", "attention_maps_for_images", "attention_sheet", "load_any_model", "received_attention"]

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


def _shown_blocks(names: list[str], most: int = 3) -> list[int]:
    """All blocks when few; else the first, the middle and the last (a 12-block encoder in 3 columns)."""
    if len(names) <= most:
        return list(range(len(names)))
    return sorted({0, len(names) // 2, len(names) - 1})


def attention_sheet(model_path: str | Path, data: str | Path = "utkface", split: str = "val", cases: int = 4,
                    limit: int | None = 500, out_dir: str | Path = "runs/attention_maps", seed: int = 0,
                    cache_dir: str | Path = "cache", alpha: float = 0.5, root: str | Path | None = None,
                    background: str = "face") -> dict[str, Any]:
    """One figure: the ``cases`` best- and ``cases`` worst-predicted faces of ``split`` (of a seeded ``limit``
    subset), each with its attention overlays, so what the model looks at when right and when wrong sits side by side.

    Faces and ages come from the evaluation's own path (:func:`agekit.evaluation.evaluate.scored_split`, the
    runner, flip TTA as ``agekit eval``), so the errors shown are the ones ``agekit eval`` counts. Writes
    ``<out>/sheet.png`` and ``<out>/sheet.json`` (cases, blocks, gates, the model's provenance); returns the JSON.

    ``background="mean"`` draws every map over the mean face of the scored crops instead of the person's own
    face: a figure that can be published without a dataset's images in it (aligned crops give a recognisable
    generic face, so where the attention sits still reads).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.transforms import normalize
    from ..evaluation.evaluate import predict_outputs, scored_split
    from ..runtime import load_runner

    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if background not in ("face", "mean"):
        raise ValueError(f"background must be 'face' or 'mean', got {background!r}")
    runner = load_runner(model_path, "torch")
    ss = scored_split(runner, data, split, root, cache_dir=cache_dir, limit=limit, seed=seed)
    true = ss.df["age"].to_numpy(dtype=np.float64)[ss.index]
    exact = ~np.isnan(true)
    if exact.sum() < 2 * cases:
        raise ValueError(f"{ss.data_name}/{split} has {int(exact.sum())} faces with exact ages; need {2 * cases}")
    outs, _ = predict_outputs(runner, ss.crops, ss.index)
    err = outs["age"] - true
    order = np.argsort(np.where(exact, np.abs(err), np.inf), kind="stable")[:int(exact.sum())]  # exact ages only
    picks = [("right", int(i)) for i in order[:cases]] + [("wrong", int(i)) for i in order[::-1][:cases]]
    rows = np.array([ss.index[i] for _, i in picks])
    x = normalize(torch.from_numpy(np.asarray(ss.crops[rows])).permute(0, 3, 1, 2).contiguous(), runner.cfg)
    maps = received_attention(runner.model, x)
    shown = _shown_blocks([n for n, _ in maps])
    gates = {n: float(p.detach().float().mean()) for n, p in runner.model.named_parameters() if n.endswith("gate")}
    size = x.shape[-1]
    mean_face = None
    if background == "mean":
        mean_face = np.zeros(ss.crops.shape[1:], np.float64)
        for start in range(0, len(ss.index), 256):  # chunked: the crop cache is a memory map
            mean_face += np.asarray(ss.crops[ss.index[start:start + 256]], np.float64).sum(0)
        mean_face = (mean_face / len(ss.index)).round().astype(np.uint8)
    # one column a case (right ones, then wrong ones); a row for the face itself (not with the mean face: it would
    # repeat), then a row a block
    face_rows = 0 if mean_face is not None else 1
    fig, axes = plt.subplots(face_rows + len(shown), len(picks), squeeze=False,
                             figsize=(1.6 * len(picks), 1.75 * (face_rows + len(shown)) + 0.4))
    cases_out = []
    for col, (kind, i) in enumerate(picks):
        rgb = mean_face if mean_face is not None else np.asarray(ss.crops[ss.index[i]])
        axes[0, col].set_title(f"{kind}: {true[i]:.0f} -> {outs['age'][i]:.1f}", fontsize=8)
        if face_rows:
            axes[0, col].imshow(rgb)
        for r, b in enumerate(shown, start=face_rows):
            m = F.interpolate(maps[b][1][col:col + 1, None], size=(size, size), mode="bilinear", align_corners=False)
            m = m[0, 0].numpy()
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
            axes[r, col].imshow((alpha * _colorize(m) + (1 - alpha) * rgb).astype(np.uint8))
            if col == 0:
                gate = gates.get(f"{maps[b][0]}.gate")  # a gated block: its learnt alpha (0 = no effect)
                label = maps[b][0] + ("" if gate is None else f"\n(gate {gate:+.3f})")
                axes[r, col].text(-0.08, 0.5, label, transform=axes[r, col].transAxes, rotation=90,
                                  ha="right", va="center", fontsize=7)
        cases_out.append({"case": kind, "path": str(ss.df["path"].iloc[ss.index[i]]), "age": float(true[i]),
                          "pred": float(outs["age"][i]), "error": float(err[i])})
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{runner.cfg.name}: {ss.data_name}/{split}, the {cases} best and {cases} worst of {len(ss.index)} "
                 f"(true -> predicted age)" + (", over the mean face" if mean_face is not None else ""), fontsize=9)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "sheet.png", dpi=110)
    plt.close(fig)
    info = {"model": runner.info(),
            "data": ss.data_name, "split": split, "n_scored": int(len(ss.index)), "limit": limit, "seed": seed,
            "mae_scored": float(np.abs(err[exact]).mean()), "blocks": [maps[b][0] for b in shown],
            "grid": "x".join(map(str, maps[0][1].shape[-2:])), "gates": gates, "cases": cases_out,
            "background": background,
            "image": str(out_dir / "sheet.png")}
    (out_dir / "sheet.json").write_text(json.dumps(info, indent=2))
    return info
