"""agekit as an HTTP service: ``agekit serve`` (a JSON API, its OpenAPI docs and a web page).

Layout: ``config`` (the validated options), ``pool`` (the bounded inference worker pool), ``uploads``
(request-body limits and the mapping of bad images to HTTP codes), ``app`` (the FastAPI routes),
``static/`` (the page, served by agekit itself: no CDN), ``defaults`` (the limits), and ``process`` (run the
real server as a child process, for the tests and the load benchmark). Names load lazily so that ``agekit --help`` does
not import FastAPI.
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {"ServeConfig": "config", "InferencePool": "pool", "QueueFull": "pool", "create_app": "app",
          "ServerProcess": "process", "free_port": "process"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'agekit.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
