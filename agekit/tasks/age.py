"""The face task: age regression (+ gender) on aligned face crops."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.classification import BinaryAccuracy

from ..evaluation.metrics import CumulativeScore
from ..models.registry import AgeModelCfg
from .base import Task, register_task

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["AgeTask", "age_loss", "adaptive_loss", "gender_loss"]


def adaptive_loss(pred: torch.Tensor, target: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``1 + sigma * mean((y - y_hat)^2 / (|y - y_hat| + sigma))`` (ConvNeXt-ViT paper).

    Quadratic for errors well below sigma, linear (L1-like) for large ones: robust to label noise.
    """
    d = target - pred
    return 1.0 + sigma * torch.mean(d * d / (d.abs() + sigma))


def age_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             sigma: float = 2.0) -> torch.Tensor:
    import torch.nn.functional as F

    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "adaptive":
        return adaptive_loss(pred, target, sigma)
    if kind == "weighted_mse":
        if weight is None:
            raise ValueError("weighted_mse needs LDS weights")
        return torch.sum(weight * (pred - target) ** 2) / weight.sum().clamp_min(1e-8)
    raise ValueError(f"unknown age loss {kind!r}")


def gender_loss(logit: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
    """BCE over rows with a known gender (gender < 0 means unknown)."""
    import torch.nn.functional as F

    known = gender >= 0
    if not bool(known.any()):
        return logit.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logit[known], gender[known].float())


@register_task("age")
class AgeTask(Task):
    """Batches: (uint8 crops, age, gender (-1 unknown), sample weight)."""

    output_names = ("age", "gender_logit")
    monitor = ("val/mae", "min")
    report_metric = "test/mae"
    report_label = "MAE (years)"
    batch_augment = True

    def datamodule(self, cfg: TrainConfig, model_cfg: AgeModelCfg):
        from ..data.datamodule import AgeDataModule

        return AgeDataModule(cfg, model_cfg)

    def loss(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
        _, age, gender, weight = batch
        l = cfg.loss
        loss = age_loss(l.age, out["age"], age, weight, l.sigma)
        if "gender_logit" in out and l.gender_weight > 0:
            loss = loss + l.gender_weight * gender_loss(out["gender_logit"], gender)
        return loss

    def metrics(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError(), f"cs@{cfg.eval.cs_k:g}": CumulativeScore(cfg.eval.cs_k),
                "gender_acc": BinaryAccuracy()}

    def update_metrics(self, metrics: nn.ModuleDict, out: dict[str, torch.Tensor],
                       batch: Sequence[torch.Tensor]) -> list[str]:
        _, age, gender, _ = batch
        names = [n for n in metrics if n != "gender_acc"]
        for n in names:
            metrics[n].update(out["age"], age)
        if "gender_logit" in out:
            known = gender >= 0
            if bool(known.any()):
                metrics["gender_acc"].update(torch.sigmoid(out["gender_logit"][known]), gender[known])
            names.append("gender_acc")
        return names

    def train_log(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mae": (out["age"].detach() - batch[1]).abs().mean()}

    def eval_tta(self, cfg: TrainConfig) -> bool:
        return cfg.eval.tta_flip

    def example_batch(self, cfg: TrainConfig, model_cfg: AgeModelCfg, batch_size: int) -> tuple[torch.Tensor, ...]:
        (x,) = super().example_batch(cfg, model_cfg, batch_size)
        return x, torch.rand(batch_size) * 80, torch.randint(0, 2, (batch_size,)), torch.ones(batch_size)

    def evaluate(self, model: str | Path, data: str, split: str = "test", root: str | None = None, **kwargs: Any):
        """agekit.evaluation.evaluate.evaluate: MAE, CS@k, gender accuracy with bootstrap CIs."""
        from ..evaluation.evaluate import evaluate

        return evaluate(model, data, split, root, **kwargs)

    def compare(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
        from ..evaluation.parity import compare_outputs

        return compare_outputs(ref, cand, self.output_names)

    def parity_inputs(self, check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                      root: str | Path | None = None, **kwargs: Any) -> tuple[np.ndarray, str]:
        from ..evaluation.parity import parity_inputs

        return parity_inputs(check_data, cfg, n, root, **kwargs)
