"""Does the exported file compute what the PyTorch model computes? Checked on real face crops.

Both sides are :class:`agekit.runtime.Runner` objects, compared through ``runner(x)`` (raw outputs,
no TTA), so any pair of formats in the table can be checked against each other. The comparison itself
is :mod:`agekit.runtime.parity` (re-exported here); this module picks the inputs.

Random tensors exercise every op but not the value ranges real faces produce (and so miss e.g.
sigmoid saturation or fused-BN precision issues near the decision boundary), so the default check
uses test crops from the same decode-once cache as training and evaluation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.cache import build_crop_cache
from ..data.crops import CropSpec
from ..data.imageio import load_rgb
from ..data.transforms import crops_to_batch, normalize
from ..models.registry import AgeModelCfg
from ..runtime.parity import OUTPUT_COMPARISONS, ParityReport, check_parity, compare_outputs

__all__ = ["ParityReport", "default_check_data", "parity_inputs", "check_parity", "compare_outputs", "OUTPUT_COMPARISONS", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _random(cfg: AgeModelCfg, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *cfg.input_size)).astype(np.float32)


def default_check_data(check_data: str | Path | None, dataset: str, root: str | Path | None) -> tuple[str, str]:
    """(check data, note): ``check_data`` as given, else ``dataset`` when its folder is here, else ``"random"``
    with a note saying how to get real crops."""
    from ..config.roots import DATASET_FOLDERS, dataset_root

    if check_data is not None:
        return str(check_data), ""
    r = dataset_root(dataset, root)
    if r and Path(r).is_dir():
        return dataset, ""
    return "random", f" ({DATASET_FOLDERS.get(dataset, dataset)} not found; pass --check-data for real crops)"


def parity_inputs(check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64, root: str | Path | None = None,
                  split: str = "test", cache_dir: str | Path = "cache", seed: int = 0) -> tuple[np.ndarray, str]:
    """(normalised float32 batch, description) for a parity check of a face model (a task's
    ``parity_inputs``; classifiers use their own, in agekit.tasks.classification).

    ``check_data``: ``"random"``; a dataset name (``utkface``) or a manifest path, whose ``split`` rows
    are sampled (seeded) and cropped through the crop cache; a folder of face crops or one image.
    ``None`` means UTKFace when its folder exists, else random inputs.
    """
    from .evaluate import load_eval_table

    check_data, fallback = default_check_data(check_data, "utkface", root)
    if check_data == "random":
        return _random(cfg, n, seed), f"{n} random normal inputs{fallback}"
    p = Path(check_data)
    if p.is_dir() and p.suffix.lower() not in (".csv", ".parquet"):
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
        return crops_to_batch([load_rgb(f) for f in files], cfg).numpy(), f"{len(files)} images from {p}"
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return crops_to_batch([load_rgb(p)], cfg).numpy(), f"image {p}"
    df, name = load_eval_table(check_data, root)
    rows = np.flatnonzero((df["split"] == split).to_numpy()) if split in set(df["split"].dropna()) else np.arange(len(df))
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))
    sub = df.iloc[rows].reset_index(drop=True)
    crops, ok, _ = build_crop_cache(sub, cfg.input_size[-1], cache_dir, CropSpec())
    if not ok.any():
        raise ValueError(f"none of the {len(sub)} sampled images of {check_data} could be read")
    x = normalize(torch.from_numpy(np.asarray(crops[ok])).permute(0, 3, 1, 2), cfg).numpy()
    return x, f"{len(x)} {split} crops of {name}"
