"""Decode-once cache of face crops: every image is read, cropped and resized one time, then kept
as one uint8 array on disk (memory-mapped), so training epochs do not spend the CPU on JPEG decoding."""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .imageio import ImageLoadError, load_rgb
from .manifest import FACE_BOX, resolve_paths
from .transforms import resize_crop

__all__ = ["crop_face", "build_crop_cache"]


def crop_face(rgb: np.ndarray, box: np.ndarray | None, margin: float = 0.4) -> np.ndarray:
    """Square crop around a face box, enlarged by ``margin`` on each side (chip-like framing).

    Rows without a box are taken to be face crops already (UTKFace chips, aligned folders).
    Out-of-image parts are padded by edge replication.
    """
    if box is None or np.isnan(box).any():
        return rgb
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    a, b = int(round(cx - half)), int(round(cy - half))
    c, d = int(round(cx + half)), int(round(cy + half))
    h, w = rgb.shape[:2]
    pad = max(0, -a, -b, c - w, d - h)
    if pad:
        rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        a, b, c, d = a + pad, b + pad, c + pad, d + pad
    return rgb[b:d, a:c]


def _load_one(args: tuple[str, np.ndarray | None, int, float]) -> tuple[np.ndarray | None, str | None]:
    path, box, size, margin = args
    try:
        return resize_crop(crop_face(load_rgb(path), box, margin), size), None
    except ImageLoadError as e:
        return None, str(e)


def build_crop_cache(df: pd.DataFrame, size: int, cache_dir: str | Path, margin: float = 0.4,
                     workers: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (crops[N,size,size,3] uint8 memmap, ok mask[N], errors).

    The cache key covers the file list, boxes, size and margin, so a changed manifest rebuilds.
    Unreadable images are reported and masked out, never fatal.
    """
    paths = [str(p) for p in resolve_paths(df)]
    boxes = df[FACE_BOX].to_numpy(dtype=np.float64)
    key = hashlib.sha1(json.dumps([paths, boxes.round(2).tolist(), size, margin]).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr_path, meta_path = cache_dir / f"crops_{size}_{key}.npy", cache_dir / f"crops_{size}_{key}.json"
    if arr_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.load(arr_path, mmap_mode="r"), np.array(meta["ok"], dtype=bool), meta["errors"]
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    jobs = [(p, None if np.isnan(b).any() else b, size, margin) for p, b in zip(paths, boxes)]
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as ex:
            results = ex.map(_load_one, jobs, chunksize=64)
            _collect(results, out, ok, errors)
    else:
        _collect(map(_load_one, jobs), out, ok, errors)
    tmp = arr_path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(arr_path)
    meta_path.write_text(json.dumps({"ok": ok.tolist(), "errors": errors, "size": size, "n": len(paths)}))
    return np.load(arr_path, mmap_mode="r"), ok, errors


def _collect(results, out: np.ndarray, ok: np.ndarray, errors: list[str]) -> None:
    for i, (img, err) in enumerate(results):
        if img is None:
            errors.append(err or "unknown error")
        else:
            out[i] = img
            ok[i] = True
