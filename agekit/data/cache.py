"""Decode-once cache of face crops: every image is read, cropped (agekit.data.crops.CropSpec, the one
crop path shared with prediction) and resized one time, then kept as one uint8 array on disk
(memory-mapped), so training epochs and evaluations do not spend the CPU on JPEG decoding."""
from __future__ import annotations

import hashlib
import os
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .crops import CropError, CropSpec, row_crop_modes
from .imageio import ImageLoadError, load_rgb
from .manifest import FACE_BOX, resolve_paths
from .transforms import resize_crop

__all__ = ["build_crop_cache", "cache_name"]

CACHE_VERSION = 2  # 2: crops made by CropSpec (aligned/chip), no box-with-margin crops


def _load_one(args: tuple[str, str, np.ndarray, int, CropSpec]) -> tuple[np.ndarray | None, str | None]:
    path, mode, lm, size, spec = args
    if not mode:
        return None, f"{path}: no face (person box only)"
    try:
        chip = CropSpec(mode, spec.size, spec.template).crop(load_rgb(path), lm if mode == "align" else None)
        return resize_crop(chip, size), None
    except ImageLoadError as e:
        return None, str(e)
    except CropError as e:
        return None, f"{path}: {e}"


def cache_name(df: pd.DataFrame, size: int, spec: CropSpec | None = None) -> str:
    """``crops_{size}_{key}.npy``: the key covers the file list, boxes, landmarks, crop modes, size and spec."""
    spec = spec or CropSpec()
    modes, lms = row_crop_modes(df, spec)
    paths = [str(p) for p in resolve_paths(df)]
    boxes = df[FACE_BOX].to_numpy(dtype=np.float64)
    key_src = [CACHE_VERSION, paths, boxes.round(2).tolist(), np.round(lms, 2).tolist(), list(modes), size, spec.key()]
    key = hashlib.sha1(json.dumps(key_src).encode()).hexdigest()[:16]
    return f"crops_{size}_{key}.npy"


def build_crop_cache(df: pd.DataFrame, size: int, cache_dir: str | Path, spec: CropSpec | None = None,
                     workers: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (crops[N,size,size,3] uint8 memmap, ok mask[N], errors).

    Every row goes through ``spec`` (default ``CropSpec("auto")``): the same chip prediction makes,
    then :func:`resize_crop` to the model's ``size`` as ``crops_to_batch`` does. The cache key covers
    the file list, boxes, landmarks, size and spec, so a changed manifest rebuilds. Unreadable
    images are reported and masked out, never fatal; rows that need landmarks they lack raise
    :class:`CropError` before any work (see :func:`row_crop_modes`).
    """
    spec = spec or CropSpec()
    modes, lms = row_crop_modes(df, spec)
    paths = [str(p) for p in resolve_paths(df)]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr_path = cache_dir / cache_name(df, size, spec)
    meta_path = arr_path.with_suffix(".json")
    if arr_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.load(arr_path, mmap_mode="r"), np.array(meta["ok"], dtype=bool), meta["errors"]
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    jobs = [(p, m, lm, size, spec) for p, m, lm in zip(paths, modes, lms)]
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as ex:
            results = ex.map(_load_one, jobs, chunksize=64)
            _collect(results, out, ok, errors)
    else:
        _collect(map(_load_one, jobs), out, ok, errors)
    tmp = arr_path.with_suffix(f".{os.getpid()}.tmp.npy")  # concurrent builders never share a temp file
    np.save(tmp, out)
    tmp.replace(arr_path)
    meta_path.write_text(json.dumps({"ok": ok.tolist(), "errors": errors, "size": size, "n": len(paths),
                                     "crop": spec.mode, "modes": dict(zip(*np.unique(modes.astype(str), return_counts=True)))
                                     if len(modes) else {}}, default=int))
    return np.load(arr_path, mmap_mode="r"), ok, errors


def _collect(results, out: np.ndarray, ok: np.ndarray, errors: list[str]) -> None:
    for i, (img, err) in enumerate(results):
        if img is None:
            errors.append(err or "unknown error")
        else:
            out[i] = img
            ok[i] = True
