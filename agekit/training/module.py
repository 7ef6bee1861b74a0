"""LightningModule for age (+ gender) regression with any registered agekit model."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import MeanAbsoluteError
from torchmetrics.classification import BinaryAccuracy

from ..data.batch_augment import BatchAugment
from ..data.transforms import normalize
from ..evaluation.metrics import CumulativeScore
from ..models import get_model_cfg
from ..config.train import TrainConfig
from .losses import age_loss, gender_loss
from .schedules import build_scheduler

__all__ = ["AgeModule", "ConfiguredModule"]


class ConfiguredModule(L.LightningModule):
    """What every agekit LightningModule shares: config -> model, frozen early blocks, input prep."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = TrainConfig.model_validate(config)
        self.model_cfg = get_model_cfg(self.cfg.model.name)
        self.model = self.cfg.model.build()
        fe = self.cfg.finetune.freeze_early_blocks  # kept frozen by the fine-tuning callbacks
        self._early: list[torch.nn.Module] = self.model.early_modules(fe) if fe else []
        for mod in self._early:
            mod.requires_grad_(False)

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone

    def train(self, mode: bool = True):
        """Permanently frozen early blocks keep their ImageNet BatchNorm statistics."""
        super().train(mode)
        for mod in self._early:
            mod.eval()
        return self

    def prepare_input(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = normalize(x_uint8, self.model_cfg)
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class AgeModule(ConfiguredModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.augment = BatchAugment() if self.cfg.data.augment == "default" else None
        k = self.cfg.eval.cs_k
        self.val_mae, self.val_cs, self.val_gacc = MeanAbsoluteError(), CumulativeScore(k), BinaryAccuracy()
        self.test_mae, self.test_cs, self.test_gacc = MeanAbsoluteError(), CumulativeScore(k), BinaryAccuracy()

    def forward(self, x_uint8: torch.Tensor, tta_flip: bool = False) -> dict[str, torch.Tensor]:
        x = self.prepare_input(x_uint8)
        out = self.model(x)
        if tta_flip:
            out2 = self.model(torch.flip(x, dims=[3]))
            out = {k: (v + out2[k]) / 2 for k, v in out.items()}
        return out

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment whole training batches at once (see agekit.data.batch_augment for why)."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x, *rest = batch
            batch = (self.augment(x), *rest)
        return batch

    # -- steps ----------------------------------------------------------------------------------
    def _loss(self, out: dict[str, torch.Tensor], age, gender, weight) -> torch.Tensor:
        l = self.cfg.loss
        loss = age_loss(l.age, out["age"], age, weight, l.sigma)
        if "gender_logit" in out and l.gender_weight > 0:
            loss = loss + l.gender_weight * gender_loss(out["gender_logit"], gender)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, age, gender, weight = batch
        out = self(x)
        loss = self._loss(out, age, gender, weight)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mae", (out["age"].detach() - age).abs().mean(), prog_bar=True)
        return loss

    def _eval_step(self, batch, mae, cs, gacc, prefix: str) -> None:
        x, age, gender, weight = batch
        out = self(x, tta_flip=self.cfg.eval.tta_flip)
        self.log(f"{prefix}/loss", self._loss(out, age, gender, weight), sync_dist=True)
        mae.update(out["age"], age)
        cs.update(out["age"], age)
        known = gender >= 0
        if "gender_logit" in out and bool(known.any()):
            gacc.update(torch.sigmoid(out["gender_logit"][known]), gender[known])
        self.log(f"{prefix}/mae", mae, prog_bar=True)
        self.log(f"{prefix}/cs@{cs.k:g}", cs)
        if "gender_logit" in out:
            self.log(f"{prefix}/gender_acc", gacc, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_mae, self.val_cs, self.val_gacc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_mae, self.test_cs, self.test_gacc, "test")

    def on_train_epoch_end(self) -> None:
        for name, p in self.model.named_parameters():
            if name.endswith("gate") and p.numel() == 1:  # attention gates (issue: gated MHSA)
                self.log(f"gate/{name}", p.detach().float().item())

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        bb_ids = {id(p) for p in self.model.backbone.parameters()}
        early_ids = {id(p) for mod in self._early for p in mod.parameters()}
        backbone = [p for p in self.model.backbone.parameters() if id(p) not in early_ids]
        head = [p for p in self.model.parameters() if id(p) not in bb_ids]
        groups = [{"params": head, "lr": o.lr, "name": "head"},
                  {"params": backbone, "lr": o.lr * o.backbone_lr_ratio, "name": "backbone"}]
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        sched = build_scheduler(opt, o.schedule, self.trainer.estimated_stepping_batches,
                                self.trainer.max_epochs, o.warmup_epochs)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
