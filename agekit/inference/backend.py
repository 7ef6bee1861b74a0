"""Which runtime runs a model when the user names none: the fastest that computes what PyTorch computes.

``agekit predict``, ``agekit serve`` and ``agekit.Predictor()`` all get their runner here. An agekit weights
file (``.safetensors``/``.ckpt``) on CPU runs in :data:`~agekit.inference.defaults.DEFAULT_BACKEND` (ONNX
Runtime): it is exported once into the user cache (keyed by the file's sha256, so a replaced model file gets
a new export), compared with PyTorch once on the example photo's face and a few random inputs, and the
verdict is kept next to the export. If the export, the check or loading fails, the model runs in PyTorch
and one warning line says why. Exported files (``.onnx``, ``.tflite``, int8) run as they are.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import ModelFileError, Runner, file_format, load_runner, parity_tolerances
from ..runtime.cache import cache_path, cache_record, write_cache_record
from ..runtime.parity import check_parity
from ..runtime.runner import bundled_model_path, check_model_file
from .defaults import DEFAULT_BACKEND, example_photo_path

__all__ = ["default_runner", "probe_inputs", "BackendCheckError"]

log = logging.getLogger("agekit")


class BackendCheckError(RuntimeError):
    """The fast backend's export disagrees with PyTorch beyond the parity tolerance."""


def probe_inputs(cfg: Any, n_random: int = 6, seed: int = 0) -> tuple[np.ndarray | dict[str, np.ndarray], str]:
    """(normalised batch, description): the example photo's aligned faces and their mirrors (the real crop path:
    detector -> :class:`~agekit.data.crops.CropSpec`), plus ``n_random`` seeded normal inputs. A face+body
    model gets named inputs: each face with the whole photo as its body crop, face only and body only."""
    from ..data.crops import CropSpec
    from ..data.imageio import load_rgb
    from ..data.transforms import crops_to_batch
    from .detectors import create_detector

    if getattr(cfg, "task", "") == "face_body":
        return _probe_pairs(cfg, n_random, seed)
    parts, what = [], []
    photo = example_photo_path()
    if photo.is_file():
        rgb = load_rgb(photo)
        crops = [CropSpec("align").crop(rgb, d.landmarks) for d in create_detector("retinaface", threads=1).detect(rgb)]
        if crops:
            x = crops_to_batch(crops, cfg).numpy()
            parts += [x, np.ascontiguousarray(x[..., ::-1])]
            what.append(f"{len(crops)} face(s) of {photo.name} and mirror(s)")
    if n_random:
        parts.append(np.random.default_rng(seed).standard_normal((n_random, *cfg.input_size)).astype(np.float32))
        what.append(f"{n_random} random inputs")
    return np.concatenate(parts).astype(np.float32), " + ".join(what)


def _probe_pairs(cfg: Any, n_random: int, seed: int) -> tuple[dict[str, np.ndarray], str]:
    from ..data.crops import CropSpec
    from ..data.imageio import load_rgb
    from ..data.transforms import face_body_batch
    from .detectors import create_detector

    rgb = load_rgb(example_photo_path())
    faces = [CropSpec("align").crop(rgb, d.landmarks) for d in create_detector("retinaface", threads=1).detect(rgb)]
    x = face_body_batch([*faces, *faces, None], [rgb] * len(faces) + [None] * len(faces) + [rgb], cfg)
    rng = np.random.default_rng(seed)
    n = n_random
    if n:
        rand = {k: rng.standard_normal((n, *cfg.input_size)).astype(np.float32) for k in ("face", "body")}
        rand |= {"face_mask": np.ones(n, np.float32), "body_mask": np.ones(n, np.float32)}
        x = {k: np.concatenate([x[k], rand[k]]) for k in x}
    return x, f"the example photo's face(s) with, without and as a body crop + {n} random pairs"


def _checked(path: Path, backend: str, device: str, threads: int | None, cache_dir: str | Path | None) -> Runner:
    """``backend``'s cached export of ``path``, parity-checked against PyTorch on first use."""
    cached = cache_path(path, backend, cache_dir)
    try:
        runner = load_runner(path, backend, device=device, threads=threads, cache_dir=cache_dir)
    except ModelFileError:
        if not cached.is_file():
            raise
        cached.unlink()  # a damaged cache file (disk full, killed copy): export again once
        runner = load_runner(path, backend, device=device, threads=threads, cache_dir=cache_dir)
    record = cache_record(runner.path)
    if record is None:
        ref = load_runner(path, "torch", device=device)
        x, source = probe_inputs(ref.cfg)
        age_tol, mean_tol, prob_tol = parity_tolerances(backend)
        rep = check_parity(ref, runner, x, source, age_tolerance=age_tol, prob_tolerance=prob_tol,
                           mean_age_tolerance=mean_tol)
        record = {**rep.to_dict(), "model": str(path), "backend": backend}
        write_cache_record(runner.path, record)
    if not record.get("passed"):
        raise BackendCheckError(f"its export differs from PyTorch by up to {record.get('max_age_diff', float('nan')):.3g} "
                                f"years / {record.get('max_p_female_diff', float('nan')):.3g} in P(female) "
                                f"({runner.path})")
    return runner


def default_runner(model: str | Path | None = None, backend: str | None = None, device: str = "cpu",
                   threads: int | None = None, cache_dir: str | Path | None = None) -> Runner:
    """The runner ``agekit predict``/``serve``/``Predictor`` use: ``backend`` when named (exactly that, as
    :func:`agekit.runtime.load_runner`), else the checked fast backend for agekit weights on CPU, falling
    back to PyTorch with a one-line warning (``runner.fallback_reason`` says why)."""
    if backend is not None:
        return load_runner(model, backend, device=device, threads=threads, cache_dir=cache_dir)
    path = check_model_file(model if model is not None else bundled_model_path())
    if file_format(path) != "torch" or not device.startswith("cpu") or DEFAULT_BACKEND == "torch":
        return load_runner(path, None, device=device, threads=threads, cache_dir=cache_dir)
    try:
        return _checked(path, DEFAULT_BACKEND, device, threads, cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure of the fast path must leave a working predictor
        reason = " ".join(str(e).split()) or type(e).__name__
        runner = load_runner(path, "torch", device=device, threads=threads)
        runner.fallback_reason = f"{DEFAULT_BACKEND} not used: {reason}"  # type: ignore[attr-defined]
        log.warning("agekit: running %s in PyTorch: the %s backend is not usable (%s)", path.name,
                    DEFAULT_BACKEND, reason)
        return runner
