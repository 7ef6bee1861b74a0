"""Adapters: each turns one dataset's native layout into a manifest (see agekit.data.manifest)."""
from __future__ import annotations

from typing import Callable

import pandas as pd

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {}


def register_adapter(name: str) -> Callable[[Callable[..., pd.DataFrame]], Callable[..., pd.DataFrame]]:
    def wrap(fn: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        ADAPTERS[name] = fn
        return fn

    return wrap


def get_adapter(name: str) -> Callable[..., pd.DataFrame]:
    _load_all()
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown dataset format {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


def _load_all() -> None:
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")
