"""Configuration: the strict base, overrides and includes (base), dataset roots (roots), training configs (train)."""
from __future__ import annotations

from .base import (
    ConfigError,
    Strict,
    apply_overrides,
    deep_merge,
    format_validation_error,
    load_yaml,
    parse_overrides,
    set_dotted,
)
from .roots import dataset_root
from .train import TrainConfig, check_resume, load_config

__all__ = [
    "ConfigError",
    "Strict",
    "TrainConfig",
    "apply_overrides",
    "check_resume",
    "dataset_root",
    "deep_merge",
    "format_validation_error",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "set_dotted",
]
