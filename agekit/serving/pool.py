"""The bounded inference pool: a fixed set of workers, each owning its own Predictor, and a fixed queue.

Threads rather than processes: decoding (PIL), the detector and the model (onnxruntime, PyTorch) all
release the GIL while they compute, so threads use the cores without pickling photos between
processes, and one pool bounds the whole server. Each worker has its own Predictor so no model object
is shared between threads. A request takes a slot before it is queued and gives it back when its job
has really finished (also after a timeout), so the work in the server never exceeds
``workers + max_queue`` jobs: a request beyond that is refused at once (:class:`QueueFull` -> 503).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..data.imageio import decode_rgb
from ..inference.results import ImageResult
from ..inference.sources import SourceItem

if TYPE_CHECKING:
    from ..inference.predictor import Predictor
    from .config import ServeConfig

__all__ = ["InferencePool", "QueueFull"]


class QueueFull(RuntimeError):
    """Every worker is busy and the queue is full: the client should retry later."""


class InferencePool:
    """``submit(image bytes)`` -> a Future of the :class:`ImageResult`; at most ``capacity`` jobs at a time."""

    def __init__(self, predictors: list[Predictor], max_queue: int, max_pixels: int) -> None:
        if not predictors:
            raise ValueError("the inference pool needs at least one predictor")
        self.predictors = list(predictors)
        self.max_pixels = max_pixels
        self.capacity = len(predictors) + max_queue
        self._free: queue.SimpleQueue[Predictor] = queue.SimpleQueue()
        for p in predictors:
            self._free.put(p)
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._jobs = 0
        self._executor = ThreadPoolExecutor(len(predictors), thread_name_prefix="agekit-infer")

    @classmethod
    def load(cls, cfg: ServeConfig) -> "InferencePool":
        """One Predictor per worker, built one after the other (an ONNX export into the cache happens once)."""
        from ..inference.predictor import Predictor

        import torch

        predictors = [Predictor(cfg.model, backend=cfg.backend, threads=cfg.threads_per_worker, min_score=cfg.min_score,
                                flip_tta=cfg.tta) for _ in range(cfg.n_workers)]
        # torch's thread count is per process (the torch backend, and preprocessing with any backend): one share
        # per worker, so the workers together use the cores without oversubscribing them
        torch.set_num_threads(cfg.threads_per_worker)
        return cls(predictors, cfg.max_queue, cfg.max_pixels)

    @property
    def workers(self) -> int:
        return len(self.predictors)

    @property
    def jobs(self) -> int:
        """Jobs admitted and not yet finished (running or queued)."""
        return self._jobs

    def submit(self, data: bytes, name: str) -> Future[ImageResult]:
        """Queue one upload; raises :class:`QueueFull` instead of waiting when ``capacity`` jobs are in."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull(f"server busy: {self.workers} worker(s) and {self.capacity - self.workers} queued "
                            "request(s) already; retry later")
        with self._lock:
            self._jobs += 1
        try:
            fut = self._executor.submit(self._run, data, name, time.perf_counter())
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(lambda _: self._release())  # also when cancelled while queued
        return fut

    def _release(self) -> None:
        with self._lock:
            self._jobs -= 1
        self._slots.release()

    def _run(self, data: bytes, name: str, submitted: float) -> ImageResult:
        """decode (the safe decoder, pixel limit first) -> the Predictor's stages; ``queue`` = seconds waited."""
        started = time.perf_counter()
        predictor = self._free.get()
        try:
            rgb = decode_rgb(data, name, self.max_pixels)
            decoded = time.perf_counter()
            res = predictor.predict(SourceItem(name, data=rgb))[0]
        finally:
            self._free.put(predictor)
        res.timings["load"] = res.timings.get("load", 0.0) + (decoded - started)  # decoding is the load stage
        res.timings["queue"] = started - submitted
        return res

    def info(self) -> dict[str, Any]:
        """What ``/health`` reports about the load."""
        return {"workers": self.workers, "capacity": self.capacity, "jobs": self.jobs}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
