"""Model registry layered on timm's.

Each agekit model is a timm-registered factory (so ``timm.create_model`` knows it too) plus an
:class:`AgeModelCfg` that travels with the name. Preprocessing, export and prediction read the cfg,
so they always follow the model rather than a hard-coded image size or normalisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import timm
from timm.models import register_model as _timm_register_model

__all__ = ["AgeModelCfg", "register_age_model", "strip_timm_kwargs", "get_model_cfg", "list_models", "is_model"]


@dataclass(frozen=True)
class AgeModelCfg:
    """What a model needs around it: input geometry, normalisation and where its weights come from."""

    name: str
    family: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    backbone: str = ""
    backbone_weights: str = "timm hub"
    age_range: tuple[float, float] = (0.0, 100.0)
    task: str = "age"  # "age" (age + gender heads) or "classification"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CFGS: dict[str, AgeModelCfg] = {}


def register_age_model(cfg: AgeModelCfg) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` with timm under ``cfg.name`` and remember its cfg."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn.__name__ != cfg.name:
            raise ValueError(f"factory {fn.__name__!r} must be named like its cfg {cfg.name!r}")
        _CFGS[cfg.name] = cfg
        if cfg.name not in timm.list_models(cfg.name):
            _timm_register_model(fn)
        return fn

    return wrap


_TIMM_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "checkpoint_path")


def strip_timm_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm.create_model passes its own bookkeeping kwargs; agekit handles weights itself."""
    return {k: v for k, v in kwargs.items() if k not in _TIMM_KWARGS}


def get_model_cfg(name: str) -> AgeModelCfg:
    try:
        return _CFGS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_CFGS))}") from None


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, c in _CFGS.items() if family is None or c.family == family)


def is_model(name: str) -> bool:
    return name in _CFGS
