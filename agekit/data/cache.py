"""Decode-once cache of face crops: every image is read, cropped (agekit.data.crops.CropSpec, the one
crop path shared with prediction) and resized one time, then kept as one uint8 array on disk
(memory-mapped), so training epochs and evaluations do not spend the CPU on JPEG decoding.

Body crops of face+body models (agekit.data.crops.body_crop) are cached the same way
(:func:`build_body_cache`, :func:`build_face_body_cache`)."""
from __future__ import annotations

import hashlib
import os
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .crops import BODY_RULES, CropError, CropSpec, body_crop, body_crop_problem, row_crop_modes, row_person_boxes
from .imageio import ImageLoadError, load_rgb
from .manifest import FACE_BOX, PERSON_BOX, resolve_paths
from .transforms import resize_crop

__all__ = ["build_crop_cache", "cache_name", "build_body_cache", "build_face_body_cache", "FaceBodyCrops"]

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
    return f"crops_{size}_{_key(key_src)}.npy"


def _key(key_src: list) -> str:
    return hashlib.sha1(json.dumps(key_src).encode()).hexdigest()[:16]


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
    jobs = [(p, m, lm, size, spec) for p, m, lm in zip(paths, modes, lms)]
    extra = {"crop": spec.mode, "modes": dict(zip(*np.unique(modes.astype(str), return_counts=True))) if len(modes) else {}}
    return _cached(cache_name(df, size, spec), jobs, _load_one, size, cache_dir, workers, extra)


def _load_body(args: tuple[str, np.ndarray, np.ndarray, int]) -> tuple[np.ndarray | None, str | None]:
    path, box, masks, size = args
    try:
        rgb = load_rgb(path)
        if body_crop_problem(rgb.shape, box, masks) is not None:
            return None, None  # under the reference's size/visibility rules: no body input, not an error
        return body_crop(rgb, box, size, masks), None
    except ImageLoadError as e:
        return None, str(e)
    except CropError as e:
        return None, f"{path}: {e}"


def build_body_cache(df: pd.DataFrame, size: int, cache_dir: str | Path,
                     workers: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Body crops (:func:`agekit.data.crops.body_crop`) of every row with a person box, decoded once, as
    :func:`build_crop_cache` does for faces: (crops[N,size,size,3] memmap, ok[N], errors). Other people of
    the same image (rows sharing the path) are blacked out; rows without a person box, or whose body crop
    :func:`agekit.data.crops.body_crop_problem` rejects (too small, too little visible), are not ok and not
    errors (they have no usable body), as at prediction time."""
    boxes, others = row_person_boxes(df)
    paths = [str(p) for p in resolve_paths(df)]
    key_src = [CACHE_VERSION, BODY_RULES, "body", paths, np.round(boxes, 2).tolist(), [np.round(o, 2).tolist() for o in others], size]
    jobs = [(p, b, o, size) for p, b, o in zip(paths, boxes, others)]
    return _cached(f"bodies_{size}_{_key(key_src)}.npy", jobs, _load_body_or_none, size, cache_dir, workers, {"crop": "body"})


def _load_body_or_none(args: tuple[str, np.ndarray, np.ndarray, int]) -> tuple[np.ndarray | None, str | None]:
    if not np.isfinite(args[1]).all():
        return None, None  # no person box: no body, not an error
    return _load_body(args)


@dataclass
class FaceBodyCrops:
    """Face and body crops of one table for a face+body model: each from its own decode-once cache.

    ``face_pos[i]`` / ``body_pos[i]``: the row's position in ``faces`` / ``bodies``, -1 when the row has no such
    crop (no face or no person box) or it could not be made. ``ok``: rows with at least one crop.
    """

    faces: np.ndarray
    face_pos: np.ndarray
    bodies: np.ndarray
    body_pos: np.ndarray
    errors: list[str]

    @property
    def ok(self) -> np.ndarray:
        return (self.face_pos >= 0) | (self.body_pos >= 0)

    def batch(self, index: np.ndarray, use_face: bool = True,
              use_body: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(faces, bodies) uint8 (B, S, S, 3) and their masks (B,) float32 for table rows ``index``; a missing
        crop (or one not used) is a black image with mask 0."""
        index = np.asarray(index)
        size = self.faces.shape[1] if len(self.faces) else self.bodies.shape[1]
        face = np.zeros((len(index), size, size, 3), np.uint8)
        body = np.zeros((len(index), size, size, 3), np.uint8)
        fp, bp = self.face_pos[index], self.body_pos[index]
        fm = (fp >= 0) & use_face
        bm = (bp >= 0) & use_body
        if fm.any():
            face[fm] = self.faces[fp[fm]]
        if bm.any():
            body[bm] = self.bodies[bp[bm]]
        return face, body, fm.astype(np.float32), bm.astype(np.float32)


def build_face_body_cache(df: pd.DataFrame, size: int, cache_dir: str | Path, spec: CropSpec | None = None,
                          workers: int = 2) -> FaceBodyCrops:
    """Face crops (:func:`build_crop_cache`, the one face path) of the rows with a face and body crops
    (:func:`build_body_cache`) of the rows with a person box. The face cache covers only rows with a face,
    so a face-only table (AAF) shares its cache with the face task's."""
    modes, _ = row_crop_modes(df, spec or CropSpec())
    has_face = modes != ""
    has_body = ~np.isnan(df[PERSON_BOX].to_numpy(dtype=np.float64)).any(axis=1)
    errors: list[str] = []
    face_pos = np.full(len(df), -1, dtype=np.int64)
    body_pos = np.full(len(df), -1, dtype=np.int64)
    faces = bodies = np.zeros((0, size, size, 3), np.uint8)
    if has_face.any():
        rows = np.flatnonzero(has_face)
        faces, ok, err = build_crop_cache(_subset(df, rows), size, cache_dir, spec, workers)
        face_pos[rows[ok]] = np.flatnonzero(ok)
        errors += err
    if has_body.any():
        rows = np.flatnonzero(has_body)
        # other people are looked up in the whole table, not just the rows with a box (they are the same rows)
        bodies, ok, err = build_body_cache(_subset(df, rows), size, cache_dir, workers)
        body_pos[rows[ok]] = np.flatnonzero(ok)
        errors += [e for e in err if e not in errors]  # an unreadable photo is reported once
    return FaceBodyCrops(faces, face_pos, bodies, body_pos, errors)


def _subset(df: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    sub = df.iloc[rows].reset_index(drop=True)
    sub.attrs.update(df.attrs)
    return sub


def _cached(name: str, jobs: list, fn: Callable, size: int, cache_dir: str | Path, workers: int,
            extra: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Run ``fn`` over ``jobs`` once into ``cache_dir/name`` (+ .json: ok mask, errors), or open it."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr_path = cache_dir / name
    meta_path = arr_path.with_suffix(".json")
    if arr_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.load(arr_path, mmap_mode="r"), np.array(meta["ok"], dtype=bool), meta["errors"]
    out = np.zeros((len(jobs), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(jobs), dtype=bool)
    errors: list[str] = []
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as ex:
            results = ex.map(fn, jobs, chunksize=64)
            _collect(results, out, ok, errors)
    else:
        _collect(map(fn, jobs), out, ok, errors)
    tmp = arr_path.with_suffix(f".{os.getpid()}.tmp.npy")  # concurrent builders never share a temp file
    np.save(tmp, out)
    tmp.replace(arr_path)
    meta_path.write_text(json.dumps({"ok": ok.tolist(), "errors": errors, "size": size, "n": len(jobs), **extra},
                                    default=int))
    return np.load(arr_path, mmap_mode="r"), ok, errors


def _collect(results, out: np.ndarray, ok: np.ndarray, errors: list[str]) -> None:
    for i, (img, err) in enumerate(results):
        if img is None:
            if err is not None:
                errors.append(err)
        else:
            out[i] = img
            ok[i] = True
