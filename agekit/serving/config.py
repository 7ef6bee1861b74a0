"""The service's options, validated once (the same strict config base as training configs)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator

from ..config.base import Strict
from . import defaults as D

__all__ = ["ServeConfig", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


class ServeConfig(Strict):
    """What ``agekit serve`` runs with. Defaults are the safe ones: loopback only, CORS off, bounded everything."""

    host: str = D.HOST
    port: int = Field(D.PORT, ge=0, le=65535)
    model: Optional[Path] = None  # None: the bundled model
    backend: Optional[str] = None  # None: what agekit.inference.Predictor picks for the file
    workers: Optional[int] = Field(None, ge=1, le=256)  # inference workers; None: one per usable core
    threads: Optional[int] = Field(None, ge=1, le=256)  # CPU threads per worker; None: cores // workers
    max_bytes: int = Field(D.MAX_BYTES, ge=1024)  # largest upload
    max_pixels: int = Field(D.MAX_PIXELS, ge=1)  # largest decoded image (decompression-bomb guard)
    timeout: float = Field(D.TIMEOUT_S, gt=0)  # seconds for the answer once the upload is in (504)
    upload_timeout: float = Field(D.UPLOAD_TIMEOUT_S, gt=0)  # seconds for the upload to arrive (408)
    max_queue: int = Field(D.MAX_QUEUE, ge=0)  # requests that may wait for a worker; more get 503 + Retry-After
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers at all
    min_score: float = Field(0.8, ge=0.0, le=1.0)
    tta: bool = True

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if o != "*" and not (o.startswith("http://") or o.startswith("https://")):
                raise ValueError(f"CORS origin {o!r} must look like https://example.org (or be *)")
        return [o.rstrip("/") for o in v]

    @property
    def n_workers(self) -> int:
        return self.workers or usable_cores()

    @property
    def threads_per_worker(self) -> int:
        return self.threads or max(1, usable_cores() // self.n_workers)
