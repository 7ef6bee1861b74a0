"""Per-stage latency of the photo pipeline, for benchmarks and for choosing a thread count.

Stage times come from :class:`ImageResult.timings`, which the predictor records on every run, so
this measures exactly the code users run rather than a re-implementation of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .predictor import STAGES, Predictor

__all__ = ["profile_photo"]


def profile_photo(image: Any = None, model: str | Path | None = None, backend: str = "onnx", threads: int = 1,
                  repeats: int = 20, warmup: int = 3, **predictor_kwargs: Any) -> dict[str, Any]:
    """Median milliseconds per stage (and end to end) for one photo, predicted ``repeats`` times.

    ``cpu_ms`` is process CPU time per photo (all threads): on a busy machine it shows the work done
    even when wall-clock times mostly measure waiting for a core.

    ``image`` defaults to the bundled astronaut photo, ``model`` to the bundled model. Loading is
    included (decode from disk when a path is given); the first ``warmup`` runs are discarded
    (onnxruntime allocates its buffers on the first calls). Sets torch's global thread count.
    """
    import time

    import torch

    from .defaults import example_photo_path

    # threads = onnxruntime threads (detector and onnx model); torch only normalises a few crops
    # for the onnx backend, and a parallel region that tiny only waits for busy cores
    torch.set_num_threads(threads if backend == "torch" else 1)
    image = example_photo_path() if image is None else image
    pred = Predictor(model, backend=backend, threads=threads, **predictor_kwargs)
    stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    total: list[float] = []
    cpu: list[float] = []
    faces = 0
    for i in range(warmup + repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        [res] = pred.predict(image)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i < warmup:
            continue
        total.append(dt * 1000)
        cpu.append(dc * 1000)
        faces = len(res.faces)
        for s in STAGES:
            stage_ms[s].append(res.timings.get(s, 0.0) * 1000)
    out: dict[str, Any] = {f"{s}_ms": float(np.median(v)) for s, v in stage_ms.items()}
    out.update(total_ms=float(np.median(total)), total_ms_p90=float(np.percentile(total, 90)),
               cpu_ms=float(np.median(cpu)), faces=faces,
               threads=threads, backend=backend, model_name=pred.cfg.name, repeats=repeats)
    return out
