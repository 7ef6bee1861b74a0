"""Model registry layered on timm's.

Each agekit model is a timm-registered factory (so ``timm.create_model`` knows it too) plus an
:class:`AgeModelCfg` that travels with the name. Preprocessing, export and prediction read the cfg,
so they always follow the model rather than a hard-coded image size or normalisation.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import timm
from timm.models import generate_default_cfgs
from timm.models import register_model as _timm_register_model

__all__ = ["AgeModelCfg", "register_age_model", "strip_timm_kwargs", "get_model_cfg", "list_models", "is_model",
           "timm_pretrained_cfg"]


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


def timm_pretrained_cfg(cfg: AgeModelCfg) -> dict[str, Any]:
    """The model's input geometry and normalisation in timm's ``pretrained_cfg`` form.

    Stored on every built model (``model.pretrained_cfg``) and in timm's registry, so timm's own
    tools (``timm.data.resolve_model_data_config``, ``timm.models.get_pretrained_cfg``) see them.
    """
    return {"input_size": tuple(cfg.input_size), "mean": tuple(cfg.mean), "std": tuple(cfg.std),
            "crop_pct": 1.0, "interpolation": "bilinear", "num_classes": 0, "architecture": cfg.name,
            "license": "apache-2.0"}


def register_age_model(cfg: AgeModelCfg) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` with timm under ``cfg.name`` (with a timm pretrained cfg) and remember its cfg.

    Registration happens at import: adding a model is one file that decorates its factory.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn.__name__ != cfg.name:
            raise ValueError(f"factory {fn.__name__!r} must be named like its cfg {cfg.name!r}")
        _CFGS[cfg.name] = cfg
        pcfg = timm_pretrained_cfg(cfg)

        @functools.wraps(fn)
        def factory(*args: Any, **kwargs: Any) -> Any:
            model = fn(*args, **kwargs)
            model.pretrained_cfg = dict(pcfg)  # what timm.data.resolve_model_data_config reads
            return model

        if cfg.name not in timm.list_models(cfg.name):
            mod = sys.modules[fn.__module__]
            if not isinstance(getattr(mod, "default_cfgs", None), dict):
                mod.default_cfgs = {}  # type: ignore[attr-defined]
            mod.default_cfgs.update(generate_default_cfgs({cfg.name: {k: v for k, v in pcfg.items() if k != "architecture"}}))
            _timm_register_model(factory)
        return factory

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
