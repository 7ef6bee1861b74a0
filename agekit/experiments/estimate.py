"""Estimate a grid's run time before running it, from a timed training step per cell.

For each cell: build its module, time a training step (forward + backward + AdamW) on a random batch
of the configured size in each freezing phase (a frozen backbone is cheaper), and an eval forward; then

    run time = epochs x (train batches x step time + val batches x eval time) + test batches x eval time
               + a fixed per-run overhead (Lightning setup, data loading, export; ~5-15 s measured here)

and grid time = runs x run time.

Steps are timed in *CPU time of one torch thread* (``time.process_time``), not wall time: on a shared
machine (here a long training run holds both cores at a higher priority) wall time mostly measures the
other jobs, while the CPU time a step needs is stable. The result is therefore the grid's time on one
free core; with two free cores and torch's 2 threads it runs faster (a conv net's batch typically gains
1.5-1.8x), so the one-core figure is a conservative bound. It does not include building the UTKFace crop
cache (done once, then shared).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from .grid import RunSpec, expand_grid, load_grid, resolve_preset

__all__ = ["RUN_OVERHEAD_S", "estimate_grid"]

RUN_OVERHEAD_S = 12.0
_CLS_SIZES = {"fashion_mnist": (60000, 10000), "cifar100": (50000, 10000)}  # official train / test sizes


def _split_sizes(run: RunSpec) -> tuple[int | None, int | None, int | None]:
    d = run.config.data
    if d.dataset in _CLS_SIZES:
        from ..data.classification import VAL_FRACTION

        n_tr, n_te = _CLS_SIZES[d.dataset]
        sizes = [round(n_tr * (1 - VAL_FRACTION)), round(n_tr * VAL_FRACTION), n_te]
    else:
        sizes = [None, None, None]
        try:  # age data: count the split rows (UTKFace: the shipped split; data.sources: all sources)
            from ..data.datamodule import sources_table

            df, _ = sources_table(run.config)
            sizes = [int((df["split"] == s).sum()) for s in ("train", "val", "test")]
        except Exception:  # noqa: BLE001, S110 - data not present or unreadable: fall back to the limits
            pass
    limits = [d.limit_train, d.limit_val, d.limit_test]
    return tuple(l if n is None else (n if l is None else min(n, l)) for n, l in zip(sizes, limits))  # type: ignore


def _time(fn, repeats: int) -> float:
    """Fewest CPU seconds of ``repeats`` calls after a warm-up (allocations, lazy init)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _time_cell(run: RunSpec, repeats: int) -> dict[str, float]:
    from ..models.freezing import Finetuning
    from ..training.module import TaskModule
    from ..training.runner import _offline, task_of

    task = task_of(run.config)
    cfg = task.prepare_config(run.config)
    module = TaskModule(_offline(cfg.model_dump()))
    if cfg.trainer.channels_last:
        module = module.to(memory_format=torch.channels_last)
    batch = task.example_batch(cfg, module.model_cfg, cfg.data.batch_size)
    x = batch[0]
    opt = torch.optim.AdamW(list(module.parameters()), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = task.loss(module(x), batch, cfg)
        loss.backward()
        opt.step()

    ft = cfg.finetune
    cb = Finetuning(ft.regime, ft.head_epochs)
    module.train()
    cb.freeze_before_training(module)
    t_first = _time(step, repeats)
    cb.finetune_function(module, cfg.trainer.max_epochs - 1, opt)
    t_last = _time(step, repeats)
    module.eval()
    tta = task.eval_tta(cfg)
    with torch.no_grad():
        t_eval = _time(lambda: module(x, tta_flip=True) if tta else module(x), repeats)
    epochs = cfg.trainer.max_epochs
    first_epochs = epochs if ft.regime == "F0" else min(ft.head_epochs, epochs)
    return {"step_first_s": t_first, "step_last_s": t_last, "eval_batch_s": t_eval, "first_epochs": first_epochs}


def estimate_grid(path: str | Path, seeds: int = 3, preset: str = "auto", overrides: dict[str, Any] | None = None,
                  cells: list[str] | None = None, repeats: int = 2) -> dict[str, Any]:
    grid = load_grid(path)
    preset = resolve_preset(grid, preset)
    runs = expand_grid(grid, preset, [0], "/tmp/agekit-estimate", overrides, cells)
    rows, total = [], 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: process CPU time == the step's single-core time
    try:
        timed = [_time_cell(run, repeats) for run in runs]
    finally:
        torch.set_num_threads(threads)
    for run, t in zip(runs, timed):
        n_tr, n_val, n_te = _split_sizes(run)
        c = run.config
        if n_tr is None:
            rows.append({"cell": run.cell, **t, "seconds_per_run": None, "note": "data size unknown"})
            continue
        bs, epochs = c.data.batch_size, c.trainer.max_epochs
        tb = n_tr // bs if n_tr > bs else 1  # drop_last
        ltb = c.trainer.limit_train_batches
        tb = min(tb, ltb) if isinstance(ltb, int) and ltb > 1 else max(1, int(tb * float(ltb)))
        vb, teb = math.ceil(n_val / bs), math.ceil(n_te / bs)
        train_s = t["first_epochs"] * tb * t["step_first_s"] + (epochs - t["first_epochs"]) * tb * t["step_last_s"]
        test_s = teb * t["eval_batch_s"] if c.trainer.test else 0.0
        per_run = train_s + epochs * vb * t["eval_batch_s"] + test_s + RUN_OVERHEAD_S
        total += per_run * seeds
        rows.append({"cell": run.cell, **t, "train_images": n_tr, "val_images": n_val, "test_images": n_te,
                     "epochs": epochs, "seconds_per_run": per_run})
    return {"grid": grid.name, "preset": preset, "seeds": seeds, "threads": 1, "rows": rows, "total_seconds": total}
