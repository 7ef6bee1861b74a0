"""`agekit train`: config -> Lightning Trainer -> best checkpoint (by validation) -> safetensors model.

The test split is scored only on request (``trainer.test``): model selection never sees it.
Under DDP every rank runs fit and test (Lightning reduces the metrics); files are written on rank 0.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from ..config.train import TrainConfig, check_resume
from ..models import load_model, save_weights
from ..models.freezing import Finetuning
from ..tasks import Task, task_for_model
from .module import TaskModule

__all__ = ["train", "export_checkpoint", "task_of", "provenance"]


def task_of(config: TrainConfig | dict[str, Any]) -> Task:
    """The task object of the config's model (what its registered cfg says it predicts)."""
    name = config.model.name if isinstance(config, TrainConfig) else config["model"]["name"]
    return task_for_model(name)


def _precision(cfg: TrainConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _offline(config: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a module without fetching ImageNet weights: the checkpoint overwrites them anyway.

    Only for building the module; the saved metadata keeps the true config (see :func:`provenance`).
    """
    config = json.loads(json.dumps(config))
    config["model"]["pretrained"] = False
    config["model"]["backbone_weights"] = None
    config["model"]["init_weights"] = None
    return config


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from: ImageNet source, the agekit model it was fine-tuned from, its stages."""
    from ..models import get_model_cfg
    from ..models.weights import read_metadata

    m = config["model"]
    if m.get("init_weights"):
        parent = read_metadata(m["init_weights"]) if Path(m["init_weights"]).is_file() else {}
        parent_prov = parent.get("provenance") or {}
        return {"imagenet_weights": parent_prov.get("imagenet_weights", "unknown (parent file not found)"),
                "init_weights": m["init_weights"],
                "init_chain": [m["init_weights"], *parent_prov.get("init_chain", [])],
                "stages": [*parent_prov.get("stages", []), {"config": config}]}
    if m.get("backbone_weights"):
        src = str(m["backbone_weights"])
    elif m.get("pretrained"):
        src = get_model_cfg(m["name"]).backbone_weights
    else:
        src = None
    return {"imagenet_weights": src, "init_weights": None, "init_chain": [], "stages": [{"config": config}]}


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Lightning checkpoint -> agekit safetensors (weights + the true config and its provenance as metadata)."""
    model, _, ckpt_meta = load_model(ckpt_path)
    cfg = TrainConfig.model_validate(ckpt_meta["train_config"])
    meta = {"model_name": cfg.model.name, "model_kwargs": cfg.model.kwargs, "train_config": cfg.model_dump(),
            "provenance": provenance(cfg.model_dump()), "epoch": ckpt_meta["epoch"], **(extra or {})}
    return save_weights(model, out_path, meta)


def train(cfg: TrainConfig, allow_config_change: bool = False) -> dict[str, Any]:
    """Fit, export the best checkpoint; score test only when ``trainer.test`` (selection uses validation only).

    Resuming ``out_dir`` that holds another config raises ConfigError unless ``allow_config_change``.
    """
    t = cfg.trainer
    task = task_of(cfg)
    cfg = task.prepare_config(cfg)
    out = Path(t.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if t.resume:
        check_resume(out, cfg, allow_config_change)
    L.seed_everything(t.seed, workers=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    module = TaskModule(cfg.model_dump())
    if t.channels_last:
        module = module.to(memory_format=torch.channels_last)
    dm = task.datamodule(cfg, module.model_cfg)
    monitor, mode = task.monitor
    metric = monitor.split("/", 1)[1]
    ckpt_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:02d}", monitor=monitor, mode=mode,
                              save_top_k=1)
    # last.ckpt from its own callback, every epoch: Lightning 2.6's save_last=True writes it only at a step where a
    # top-k checkpoint was saved, so after an epoch that did not improve it still held the best epoch, and a resume
    # (a session's end) trained the epochs since then again.
    last_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              enable_version_counter=False)
    callbacks: list = [ckpt_cb, last_cb, Finetuning(cfg.finetune.regime, cfg.finetune.head_epochs),
                       LearningRateMonitor("epoch")]
    if t.progress == "rich":
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=t.strategy, precision=_precision(cfg), callbacks=callbacks,
        logger=CSVLogger(out, name="logs"),  # version_N per (re)start: resume never overwrites logs
        default_root_dir=out,
        log_every_n_steps=t.log_every_n_steps, limit_train_batches=t.limit_train_batches,
        gradient_clip_val=t.gradient_clip_val,
        enable_progress_bar=t.progress != "none", deterministic=False,
    )
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if (t.resume and last.is_file()) else None
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    best = ckpt_cb.best_model_path or str(last)
    results: dict[str, Any] = {"best_checkpoint": best, f"best_val_{metric}": float(ckpt_cb.best_model_score or float("nan"))}
    if t.test:  # every rank: under DDP the test loop is distributed and its metrics reduced
        test = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
        results["test"] = test[0] if test else {}
    if trainer.is_global_zero:
        extra = {f"val_{metric}": results[f"best_val_{metric}"]}
        if "test" in results:
            extra["test"] = results["test"]
        results["model_file"] = str(export_checkpoint(best, out / "model.safetensors", extra))
        (out / "results.json").write_text(json.dumps(results, indent=2))
    trainer.strategy.barrier()  # the other ranks return once the files exist
    return results
