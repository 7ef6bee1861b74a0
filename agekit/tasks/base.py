"""The Task interface and its registry.

A task owns everything that depends on *what* a model predicts, so the training engine
(:class:`agekit.training.module.TaskModule`), the runner, export and the CLI never branch on a task
name: they ask the model's task object (``get_task(get_model_cfg(name).task)``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..models.freezing import param_groups as _param_groups
from ..models.registry import AgeModelCfg, get_model_cfg

if TYPE_CHECKING:
    import lightning as L
    from torchmetrics import Metric

    from ..config.train import TrainConfig

__all__ = ["TASKS", "Task", "get_task", "register_task", "task_for_model"]

TASKS: dict[str, "Task"] = {}


def register_task(name: str) -> Callable[[type["Task"]], type["Task"]]:
    """Class decorator: register one instance of the task under ``name``."""

    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls()
        return cls

    return wrap


def get_task(name: str) -> "Task":
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def task_for_model(model_name: str) -> "Task":
    """The task a registered model was built for (its ``AgeModelCfg.task``)."""
    return get_task(get_model_cfg(model_name).task)


class Task(ABC):
    """What a task supplies to training, evaluation, export and parity checks."""

    name: ClassVar[str] = ""
    output_names: ClassVar[tuple[str, ...]] = ()  # model outputs (dict keys, ONNX output names)
    monitor: ClassVar[tuple[str, str]] = ("val/loss", "min")  # checkpoint selection: validation only
    report_metric: ClassVar[str] = "test/loss"  # the figure grids report (scored on request)
    report_label: ClassVar[str] = ""  # table header for report_metric
    report_scale: ClassVar[float] = 1.0  # display scale (accuracy as %)
    report_better: ClassVar[str] = "lower"
    batch_augment: ClassVar[bool] = False  # augment whole uint8 batches on the device (BatchAugment)
    datasets: ClassVar[tuple[str, ...]] = ()  # named datasets only this task can use
    input_kinds: ClassVar[tuple[str, ...]] = ()  # crops a model of this task takes beyond one face (face, body)

    # -- config and data ---------------------------------------------------------------------------
    def prepare_config(self, cfg: TrainConfig) -> TrainConfig:
        """The config as it will be trained and saved (e.g. with values read from the dataset)."""
        return cfg

    @abstractmethod
    def datamodule(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> L.LightningDataModule: ...

    # -- Lightning pieces --------------------------------------------------------------------------
    @abstractmethod
    def loss(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.Tensor: ...

    @abstractmethod
    def metrics(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> dict[str, Metric]:
        """Fresh torchmetrics for one stage (the engine makes one set for val and one for test)."""

    @abstractmethod
    def update_metrics(self, metrics: nn.ModuleDict, out: dict[str, torch.Tensor],
                       batch: Sequence[torch.Tensor]) -> list[str]:
        """Update ``metrics`` with a batch; return the names to log this step."""

    def model_inputs(self, x: Any, prepare: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The model's positional inputs from a batch's first item: uint8 images normalised by ``prepare``
        (the engine's normalisation). One image batch by default; face+body: crops and their masks."""
        return (prepare(x),)

    def train_batch(self, batch: Sequence[Any], cfg: TrainConfig) -> Sequence[Any]:
        """A training batch after augmentation, before the step (face+body: drops inputs at random)."""
        return batch

    def train_log(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cheap per-step training figures (shown in the progress bar)."""
        return {}

    def eval_tta(self, cfg: TrainConfig) -> bool:
        """Whether val/test forward passes average over a horizontal flip."""
        return False

    def param_groups(self, model: nn.Module, cfg: TrainConfig, early: Sequence[nn.Module] = ()) -> list[dict[str, Any]]:
        """Optimizer groups: lr by part (head / backbone, by regime) x timm's weight-decay split."""
        o = cfg.optim
        return _param_groups(model, cfg.finetune.regime, o.lr, o.backbone_lr_ratio, o.weight_decay, early)

    def example_batch(self, cfg: TrainConfig, model_cfg: AgeModelCfg, batch_size: int) -> tuple[torch.Tensor, ...]:
        """A random batch shaped like the datamodule's (for timing estimates)."""
        size = model_cfg.input_size[-1]
        return (torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8),)

    # -- evaluation and export ---------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: str | Path, data: str, split: str = "test", root: str | None = None,
                 **kwargs: Any) -> Any:
        """Score a saved model on a split of ``data``."""

    @abstractmethod
    def compare(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
        """Parity: how far a candidate runner's outputs are from the reference's (ParityReport fields)."""

    @abstractmethod
    def parity_inputs(self, check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                      root: str | Path | None = None, **kwargs: Any) -> tuple[np.ndarray, str]:
        """(normalised float32 batch, description) of real inputs for a parity check."""

    def default_check_data(self, meta: dict[str, Any], check_data: str | None,
                           root: str | None) -> tuple[str | None, str | None]:
        """Which data a parity check uses when the user names none."""
        return check_data, root

    def uses_dataset(self, data: str) -> bool:
        return data in self.datasets
