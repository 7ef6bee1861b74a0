"""Move a decode-once crop cache (agekit.data.cache) to another machine in size-limited shards.

Why: a remote GPU box often takes uploads in pieces of a few tens of MB and has no copy of the
dataset. A 128 px cache of UTKFace + AAF is 1.6 GB as raw uint8, but 78 MB as WebP crops at quality 90
(mean absolute pixel error 1.6 of 255; JPEG at the same error is 1.6 times larger). ``pack_cache``
writes the crops of the chosen splits as WebP (or JPEG) into
``shard_NNN.npz`` files of at most ``max_mb`` each, plus ``cache.json``; ``unpack_cache`` rebuilds
the cache file under the SAME name (the key of :func:`agekit.data.cache.build_crop_cache`), so a run
there with the same manifests and config opens it instead of reading images. Rows that were not
shipped (e.g. the test split) are marked not-ok there, so they can never be scored by mistake.
The crops differ from the original cache only by the lossy round trip (reported by ``pack_cache``).
"""
from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import cv2
import numpy as np
import yaml

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["pack_cache", "unpack_cache", "pack_training_data", "cache_name_for"]


_FORMATS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY), "jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY)}


def _encode(img: np.ndarray, quality: int, fmt: str = "webp") -> bytes:
    if fmt not in _FORMATS:
        raise ValueError(f"unknown shard image format {fmt!r}; use one of {', '.join(_FORMATS)}")
    ext, flag = _FORMATS[fmt]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [flag, quality])
    if not ok:
        raise ValueError(f"{fmt} encoding failed")
    return buf.tobytes()


def _decode(buf: np.ndarray) -> np.ndarray:
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("a shard holds an undecodable crop")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def pack_cache(cache_file: str | Path, rows: np.ndarray, out_dir: str | Path, max_mb: float = 45.0,
               quality: int = 90, fmt: str = "webp") -> dict:
    """Write the crops ``rows`` (indices into the cache) of ``cache_file`` (``crops_*.npy``) as image shards.

    Returns the summary also written to ``out_dir/cache.json`` (cache name, n, size, shards, mean absolute
    pixel error of the lossy round trip on a sample).
    """
    cache_file = Path(cache_file)
    crops = np.load(cache_file, mmap_mode="r")
    meta = json.loads(cache_file.with_suffix(".json").read_text())
    ok = np.asarray(meta["ok"], dtype=bool)
    rows = np.asarray([r for r in np.asarray(rows, dtype=np.int64) if ok[r]], dtype=np.int64)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = int(max_mb * 2**20)
    shards: list[str] = []
    idx: list[int] = []
    blobs: list[bytes] = []
    size = 0
    err_sample: list[float] = []

    def flush() -> None:
        nonlocal idx, blobs, size
        if not idx:
            return
        name = f"shard_{len(shards):03d}.npz"
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        np.savez(out_dir / name, idx=np.asarray(idx, np.int64), offsets=offsets,
                 data=np.frombuffer(b"".join(blobs), dtype=np.uint8))
        shards.append(name)
        idx, blobs, size = [], [], 0

    for k, r in enumerate(rows):
        b = _encode(np.asarray(crops[r]), quality, fmt)
        if size + len(b) > limit:
            flush()
        idx.append(int(r))
        blobs.append(b)
        size += len(b)
        if k % 97 == 0:
            err_sample.append(float(np.abs(_decode(np.frombuffer(b, np.uint8)).astype(np.int16)
                                           - np.asarray(crops[r]).astype(np.int16)).mean()))
    flush()
    summary = {"cache": cache_file.name, "n": int(crops.shape[0]), "size": int(crops.shape[1]),
               "shipped": int(len(rows)), "format": fmt, "quality": quality, "shards": shards,
               "mean_abs_pixel_error": float(np.mean(err_sample)) if err_sample else 0.0,
               "source_meta": {k: v for k, v in meta.items() if k not in ("ok", "errors")}}
    (out_dir / "cache.json").write_text(json.dumps(summary, indent=1))
    return summary


def unpack_cache(shard_dirs: list[str | Path], cache_dir: str | Path, name: str | None = None) -> Path:
    """Rebuild the cache named in ``cache.json`` (or ``name``) from the shards in ``shard_dirs`` (any order).

    ``name``: the cache file name this machine computes for the same manifests
    (:func:`agekit.data.cache.cache_name`); the key hashes floats and strings, and another
    numpy/pandas version can hash the same table differently. Every shard listed in ``cache.json``
    must be present (a missing one is an error naming it).
    """
    dirs = [Path(d) for d in shard_dirs]
    infos = [d / "cache.json" for d in dirs if (d / "cache.json").is_file()]
    if not infos:
        raise FileNotFoundError(f"no cache.json in {', '.join(map(str, dirs))}")
    summary = json.loads(infos[0].read_text())
    found = {p.name: p for d in dirs for p in d.glob("shard_*.npz")}
    missing = [s for s in summary["shards"] if s not in found]
    if missing:
        raise FileNotFoundError(f"shards missing: {', '.join(missing)} (send every shard before unpacking)")
    n, size = summary["n"], summary["size"]
    out = np.zeros((n, size, size, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    from concurrent.futures import ThreadPoolExecutor

    def put(job: tuple[int, np.ndarray]) -> None:
        r, buf = job
        out[r] = _decode(buf)

    for shard in summary["shards"]:
        z = np.load(found[shard])
        idx, offsets, data = z["idx"], z["offsets"], z["data"]
        with ThreadPoolExecutor() as ex:  # OpenCV decodes without the GIL
            list(ex.map(put, ((int(r), data[offsets[j]:offsets[j + 1]]) for j, r in enumerate(idx))))
        ok[idx] = True
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    arr_path = cache_dir / (name or summary["cache"])
    np.save(arr_path, out)
    meta = dict(summary["source_meta"])
    meta.update(ok=ok.tolist(), errors=[f"{int((~ok).sum())} rows not shipped (unpacked from shards)"] if (~ok).any() else [],
                unpacked_from_shards=True, shard_format=summary.get("format", "jpeg"), shard_quality=summary["quality"])
    arr_path.with_suffix(".json").write_text(json.dumps(meta))
    return arr_path


def pack_training_data(cfg: TrainConfig, input_size: int, out_dir: str | Path, splits: tuple[str, ...] = ("train", "val"),
                       max_mb: float = 45.0, quality: int = 90, fmt: str = "webp") -> dict:
    """Pack what ``cfg`` trains on for another machine: one manifest per source (absolute paths, so the
    cache key is the same there), the crop cache of those manifests, and WebP/JPEG shards of ``splits``.

    Returns the summary; ``summary["config"]`` (``out_dir/train.yaml``) is ``cfg`` trained on the shipped
    manifests: run it there from a folder holding ``out_dir`` at the same relative path.
    """
    from .cache import build_crop_cache
    from .crops import CropSpec
    from .datamodule import sources_table
    from .manifest import write_manifest

    out_dir = Path(out_dir)
    df, _ = sources_table(cfg)
    sources = cfg.data.source_list()
    manifests = []
    for i, s in enumerate(sources):
        part = df[df["source_index"] == i].drop(columns=["source_index"])
        manifests.append(write_manifest(part, out_dir / "manifests" / f"{s.name}.csv"))
    weights = [s.weight for s in sources]
    from ..config.train import load_config

    data = {k: v for k, v in cfg.data.model_dump().items() if k not in ("dataset", "root", "manifest", "split_file")}
    data["sources"] = [{"manifest": m.as_posix(), "weight": w} for m, w in zip(manifests, weights)]
    shipped_cfg = load_config(None, {**cfg.model_dump(), "data": data})
    config_path = out_dir / "train.yaml"
    config_path.write_text(yaml.safe_dump(json.loads(shipped_cfg.model_dump_json()), sort_keys=False))
    table, _ = sources_table(shipped_cfg)
    crops, ok, _ = build_crop_cache(table, input_size, cfg.data.cache_dir, CropSpec(cfg.data.crop))
    rows = np.flatnonzero(table["split"].isin(list(splits)).to_numpy() & ok)
    cache_file = Path(crops.filename)
    summary = pack_cache(cache_file, rows, out_dir / "shards", max_mb, quality, fmt)
    summary.update(config=config_path.as_posix(), manifests=[m.as_posix() for m in manifests], splits=list(splits))
    (out_dir / "pack.json").write_text(json.dumps(summary, indent=1))
    return summary


def cache_name_for(cfg: TrainConfig, input_size: int) -> str:
    """The crop-cache file name a run of ``cfg`` looks for on this machine."""
    from .cache import cache_name
    from .crops import CropSpec
    from .datamodule import sources_table

    table, _ = sources_table(cfg)
    return cache_name(table, input_size, CropSpec(cfg.data.crop))
