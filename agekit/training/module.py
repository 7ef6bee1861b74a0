"""The one LightningModule: config -> model, input preparation, and the steps, for every task.

Everything that depends on what the model predicts (loss, metrics, optimizer groups) comes from the
model's task object (:mod:`agekit.tasks`), so this class never branches on a task name.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from ..data.batch_augment import BatchAugment
from ..data.degrade import OldPhotoDegrade
from ..data.transforms import normalize
from ..models import get_model_cfg
from ..config.train import TrainConfig
from ..tasks import get_task
from .schedules import build_scheduler

__all__ = ["TaskModule"]


class TaskModule(L.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = TrainConfig.model_validate(config)
        self.model_cfg = get_model_cfg(self.cfg.model.name)
        self.task = get_task(self.model_cfg.task)
        self.model = self.cfg.model.build()
        fe = self.cfg.finetune.freeze_early_blocks  # frozen (and in eval mode) for the whole run
        self.early: list[nn.Module] = self.model.early_modules(fe) if fe else []
        for mod in self.early:
            mod.requires_grad_(False)
        self.augment = BatchAugment() if self.task.batch_augment and self.cfg.data.augment == "default" else None
        # the old-photo degradation for a share data.degrade_p of training images (after the augmentation)
        self.degrade = (OldPhotoDegrade(self.cfg.data.degrade_p)
                        if self.task.batch_augment and self.cfg.data.degrade_p > 0 else None)
        self.stage_metrics = nn.ModuleDict({
            stage: nn.ModuleDict(self.task.metrics(self.cfg, self.model_cfg)) for stage in ("val", "test")})

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def train(self, mode: bool = True):
        """Permanently frozen early blocks keep their ImageNet BatchNorm statistics."""
        super().train(mode)
        for mod in self.early:
            mod.eval()
        return self

    def prepare_input(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = normalize(x_uint8, self.model_cfg)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x_uint8: Any, tta_flip: bool = False) -> dict[str, torch.Tensor]:
        """``x_uint8``: a batch's inputs (uint8 images; face+body: crops and masks), made into the model's
        inputs by the task; ``tta_flip`` also runs the mirrored images (every 4-d input) and averages."""
        inputs = self.task.model_inputs(x_uint8, self.prepare_input)
        out = self.model(*inputs)
        if tta_flip:
            out2 = self.model(*(torch.flip(t, dims=[3]) if t.ndim == 4 else t for t in inputs))
            out = {k: (v + out2[k]) / 2 for k, v in out.items()}
        return out

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment whole training batches at once, on the batch's device (see agekit.data.batch_augment)."""
        if self.trainer is not None and self.trainer.training:
            return self.augment_batch(batch)
        return batch

    def augment_batch(self, batch):
        """The training batch transform: BatchAugment (data.augment), then the old-photo degradation
        for a share data.degrade_p of the images (each uint8 image input on its own: face+body models
        have two), then the task's own (:meth:`agekit.tasks.base.Task.train_batch`)."""
        if self.augment is not None or self.degrade is not None:
            x, *rest = batch
            if isinstance(x, (list, tuple)):
                x = type(x)(self._augment_images(t) if t.dtype == torch.uint8 and t.ndim == 4 else t for t in x)
            else:
                x = self._augment_images(x)
            batch = (x, *rest)
        return self.task.train_batch(batch, self.cfg)

    def _augment_images(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            x = self.augment(x)
        if self.degrade is not None:
            x = self.degrade(x)
        return x

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self(batch[0])
        loss = self.task.loss(out, batch, self.cfg)
        self.log("train/loss", loss, prog_bar=True)
        for name, value in self.task.train_log(out, batch).items():
            self.log(f"train/{name}", value, prog_bar=True)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        out = self(batch[0], tta_flip=self.task.eval_tta(self.cfg))
        self.log(f"{stage}/loss", self.task.loss(out, batch, self.cfg), sync_dist=True)
        metrics = self.stage_metrics[stage]
        for name in self.task.update_metrics(metrics, out, batch):
            self.log(f"{stage}/{name}", metrics[name], prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        for name, p in self.model.named_parameters():
            if name.endswith("gate") and p.numel() == 1:  # attention gates (issue: gated MHSA)
                self.log(f"gate/{name}", p.detach().float().item())

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW over the task's groups (one definition: agekit.models.freezing.param_groups)."""
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.task.param_groups(self.model, self.cfg, self.early), lr=o.lr,
                                weight_decay=o.weight_decay)
        sched = build_scheduler(opt, o.schedule, self.trainer.estimated_stepping_batches,
                                self.trainer.max_epochs, o.warmup_epochs)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
