"""Image classification (the attention paper's Fashion-MNIST / CIFAR-100 models)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from ..data.classification import (
    CLASSIFICATION_DATASETS,
    ClassificationDataModule,
    ClassificationDataset,
    load_classification,
)
from ..data.transforms import normalize
from ..models.registry import AgeModelCfg
from .base import Task, register_task

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["ClassificationTask"]


def _config_error(msg: str) -> Exception:
    from ..config.base import ConfigError

    return ConfigError(msg)


def _num_classes(cfg: TrainConfig) -> int:
    return int(cfg.model.kwargs.get("num_classes") or CLASSIFICATION_DATASETS[cfg.data.dataset])


@register_task("classification")
class ClassificationTask(Task):
    """Batches: (uint8 images, int64 labels); augmented per image in the dataset (crop + flip)."""

    output_names = ("logits",)
    monitor = ("val/acc", "max")
    report_metric = "test/acc"
    report_label = "top-1 (%)"
    report_scale = 100.0
    report_better = "higher"
    datasets = tuple(CLASSIFICATION_DATASETS)

    def prepare_config(self, cfg: TrainConfig) -> TrainConfig:
        """``model.kwargs.num_classes`` set from the dataset, so saved models rebuild alone."""
        n = CLASSIFICATION_DATASETS.get(cfg.data.dataset)
        if n is None:
            raise _config_error(f"model {cfg.model.name} is a classifier; data.dataset must be one of "
                                f"{', '.join(CLASSIFICATION_DATASETS)}, got {cfg.data.dataset!r}")
        given = cfg.model.kwargs.get("num_classes")
        if given is not None and int(given) != n:
            raise _config_error(f"model.kwargs.num_classes={given} but {cfg.data.dataset} has {n} classes")
        raw = cfg.model_dump()
        raw["model"]["kwargs"]["num_classes"] = n
        return type(cfg).model_validate(raw)

    def datamodule(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> ClassificationDataModule:
        return ClassificationDataModule(cfg, model_cfg)

    def loss(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
        return F.cross_entropy(out["logits"], batch[1], label_smoothing=cfg.loss.label_smoothing)

    def metrics(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> dict[str, Metric]:
        n = _num_classes(cfg)
        return {"acc": MulticlassAccuracy(num_classes=n, average="micro"),
                "acc5": MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")}

    def update_metrics(self, metrics: nn.ModuleDict, out: dict[str, torch.Tensor],
                       batch: Sequence[torch.Tensor]) -> list[str]:
        for m in metrics.values():
            m.update(out["logits"], batch[1])
        return list(metrics)

    def train_log(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"acc": (out["logits"].detach().argmax(1) == batch[1]).float().mean()}

    def example_batch(self, cfg: TrainConfig, model_cfg: AgeModelCfg, batch_size: int) -> tuple[torch.Tensor, ...]:
        (x,) = super().example_batch(cfg, model_cfg, batch_size)
        return x, torch.randint(0, _num_classes(cfg), (batch_size,))

    def evaluate(self, model: str | Path, data: str, split: str = "test", root: str | None = None, **kwargs: Any):
        """Top-1 (95% CI), top-5 and per-class top-1 (agekit.evaluation.classification)."""
        from ..evaluation.classification import evaluate_classifier

        if data not in CLASSIFICATION_DATASETS:
            raise ValueError(f"{Path(model).name} is a classifier: --data must be one of "
                             f"{', '.join(CLASSIFICATION_DATASETS)}, not {data!r}")
        return evaluate_classifier(model, data, root, split, **kwargs)

    def compare(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
        from ..evaluation.parity import compare_outputs

        return compare_outputs(ref, cand, self.output_names)

    def parity_inputs(self, check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                      root: str | Path | None = None, seed: int = 0, **_: Any) -> tuple[np.ndarray, str]:
        """Test images of a classification dataset (``fashion_mnist``, ``cifar100``), or random inputs."""
        if check_data is None or str(check_data) == "random":
            x = np.random.default_rng(seed).standard_normal((n, *cfg.input_size)).astype(np.float32)
            return x, f"{n} random normal inputs" + (
                " (pass --check-data fashion_mnist or cifar100 for real images)" if check_data is None else "")
        if str(check_data) not in CLASSIFICATION_DATASETS:
            raise ValueError(f"{cfg.name} is a classifier: --check-data must be fashion_mnist, cifar100 or random, "
                             f"not {check_data!r}")
        data = load_classification(str(check_data), root)
        idx = np.sort(np.random.default_rng(seed).choice(len(data.test_y), min(n, len(data.test_y)), replace=False))
        ds = ClassificationDataset(data.test_x, data.test_y, idx, cfg.input_size[-1])
        x = normalize(torch.stack([ds[i][0] for i in range(len(ds))]), cfg).numpy()
        return x, f"{len(x)} test images of {check_data}"

    def default_check_data(self, meta: dict[str, Any], check_data: str | None,
                           root: str | None) -> tuple[str | None, str | None]:
        """A classifier is checked on test images of the dataset it was trained on, when they are here."""
        if check_data is not None:
            return check_data, root
        d = (meta.get("train_config") or {}).get("data") or {}
        name, data_root = d.get("dataset", ""), root or d.get("root")
        if name not in CLASSIFICATION_DATASETS:
            return None, root
        from ..config.roots import dataset_root

        where = dataset_root(name, data_root)
        return (name, data_root) if where and Path(where).exists() else (None, root)
