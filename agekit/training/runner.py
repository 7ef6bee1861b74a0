"""`agekit train`: config -> Lightning Trainer -> best checkpoint -> safetensors model + test metrics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from ..config.train import TrainConfig, check_resume
from ..models import get_model_cfg, save_weights
from ..models.freezing import FreezingRegime
from .callbacks import TwoStageFinetuning
from .datamodule import AgeDataModule
from .module import AgeModule

__all__ = ["train", "export_checkpoint", "task_of"]


def task_of(config: TrainConfig | dict[str, Any]) -> str:
    """'age' or 'classification': what the model's registered cfg says it predicts."""
    name = config.model.name if isinstance(config, TrainConfig) else config["model"]["name"]
    return get_model_cfg(name).task


def _module_cls(task: str):
    if task == "classification":
        from .classification import ClassificationModule

        return ClassificationModule
    return AgeModule


def _precision(cfg: TrainConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    return "16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "32-true"


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Lightning checkpoint -> agekit safetensors (weights + model name/kwargs/config as metadata)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    config = _offline(ckpt["hyper_parameters"]["config"])
    module = _module_cls(task_of(config))(config)
    module.load_state_dict(ckpt["state_dict"])
    cfg = module.cfg
    meta = {"model_name": cfg.model.name, "model_kwargs": cfg.model.kwargs, "train_config": cfg.model_dump(),
            "epoch": ckpt.get("epoch"), **(extra or {})}
    return save_weights(module.model, out_path, meta)


def _offline(config: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a module without fetching ImageNet weights: the checkpoint overwrites them anyway."""
    config = json.loads(json.dumps(config))
    config["model"]["pretrained"] = False
    config["model"]["backbone_weights"] = None
    config["model"]["init_weights"] = None
    return config


def train(cfg: TrainConfig, allow_config_change: bool = False) -> dict[str, Any]:
    """Fit, export the best checkpoint; score test only when ``trainer.test`` (selection uses validation only).

    Resuming ``out_dir`` that holds another config raises ConfigError unless ``allow_config_change``.
    """
    t = cfg.trainer
    task = task_of(cfg)
    if task == "classification":
        from .classification import ClassificationDataModule, with_num_classes

        cfg = with_num_classes(cfg)
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if t.resume:
        check_resume(out, cfg, allow_config_change)
    L.seed_everything(t.seed, workers=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    module = _module_cls(task)(cfg.model_dump())
    if t.channels_last:
        module = module.to(memory_format=torch.channels_last)
    dm = ClassificationDataModule(cfg, module.model_cfg) if task == "classification" else AgeDataModule(cfg, module.model_cfg)
    metric, mode = ("acc", "max") if task == "classification" else ("mae", "min")
    ckpt_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:02d}", monitor=f"val/{metric}", mode=mode,
                              save_last=True, save_top_k=1)
    ft = cfg.finetune
    finetune = TwoStageFinetuning(ft.head_epochs) if ft.regime == "two_stage" else FreezingRegime(ft.regime, ft.head_epochs)
    callbacks: list = [ckpt_cb, finetune, LearningRateMonitor("epoch")]
    if t.progress == "rich":
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=_precision(cfg), callbacks=callbacks,
        logger=CSVLogger(out, name="logs"),  # version_N per (re)start: resume never overwrites logs
        default_root_dir=out,
        log_every_n_steps=t.log_every_n_steps, limit_train_batches=t.limit_train_batches,
        enable_progress_bar=t.progress != "none", deterministic=False,
    )
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if (t.resume and last.is_file()) else None
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    best = ckpt_cb.best_model_path or str(last)
    results: dict[str, Any] = {"best_checkpoint": best, f"best_val_{metric}": float(ckpt_cb.best_model_score or float("nan"))}
    if trainer.is_global_zero:
        extra: dict[str, Any] = {f"val_{metric}": results[f"best_val_{metric}"]}
        if t.test:
            test = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
            results["test"] = extra["test"] = test[0] if test else {}
        results["model_file"] = str(export_checkpoint(best, out / "model.safetensors", extra))
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
