"""onnxruntime sessions with a deliberate thread count.

onnxruntime's default uses every core and busy-spins between runs; on a small shared CPU (or next
to a training job) that makes prediction slower, not faster. Every ONNX session in agekit (face
detector and age model) is built here so they all follow one policy.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

__all__ = ["default_threads", "make_session"]


def default_threads() -> int:
    """Threads per inference session: ``AGEKIT_THREADS``, else ``OMP_NUM_THREADS``, else min(4, usable cores)."""
    for var in ("AGEKIT_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "").strip()
        if val.isdigit() and int(val) > 0:
            return int(val)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def make_session(model: str | Path | bytes, threads: int | None = None, device: str = "cpu") -> ort.InferenceSession:
    """An InferenceSession on ``model`` (path or serialized bytes) with ``threads`` intra-op threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: the unused-initializer warnings are noise for users
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=providers)
