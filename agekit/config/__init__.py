"""Configuration: the strict base, overrides and includes (``base``), dataset roots (``roots``), training
configs (``train``). Names load lazily, so ``agekit.config.roots`` stays free of pydantic and YAML."""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ConfigError": "base", "Strict": "base", "apply_overrides": "base", "deep_merge": "base",
    "format_validation_error": "base", "load_yaml": "base", "parse_overrides": "base", "set_dotted": "base",
    "dataset_root": "roots",
    "TrainConfig": "train", "check_resume": "train", "load_config": "train",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'agekit.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
