"""Experiment grids: a base training config + cells (sets of overrides), each cell x seed trained by the
normal runner, then one table of mean ± std per cell.

A grid file (``configs/experiments/*.yaml``)::

    name: attn_mechanisms
    description: ...
    baseline: none            # the cell that "params added" is measured against (default: the first)
    base: {model: ..., data: ..., optim: ..., trainer: ...}   # a TrainConfig, shared by every cell
    presets:                  # dotted-key overrides on top of base, chosen with --preset
      full: {trainer.max_epochs: 100, ...}
      cpu: {data.limit_train: 4000, ...}
    include: _attention_base.yaml   # optional: file(s) with shared base/presets, merged under this one
                                    # (agekit.config.base.load_yaml: the same include as training configs)
    cells:
      - name: mhsa
        set: {model.kwargs.mechanism: mhsa}
        presets: {cpu: {...}}  # optional per-cell, per-preset overrides

Order of application: base -> preset -> cell ``set`` -> cell preset -> command-line ``--set`` -> seed/out_dir.
Grid runs score the test split (``trainer.test: true`` unless a layer sets it): the table reports test metrics.
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ..config.base import ConfigError, Strict, apply_overrides, format_validation_error, load_yaml, set_dotted
from ..config.train import RESUME_IGNORED, TrainConfig, check_resume, config_diff

__all__ = [
    "DEFAULT_OUT",
    "CellSpec",
    "GridSpec",
    "RunSpec",
    "expand_grid",
    "load_grid",
    "merge_records",
    "resolve_preset",
    "run_grid",
]

DEFAULT_OUT = Path("runs/experiments")
MERGE_IGNORED = RESUME_IGNORED | {"trainer.out_dir"}  # a merged run was written elsewhere, by definition


class CellSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+-]+$")  # also a folder name
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)


class GridSpec(Strict):
    name: str
    description: str = ""
    paper: str = ""
    baseline: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cells: list[CellSpec]

    @model_validator(mode="after")
    def _check(self) -> GridSpec:
        names = [c.name for c in self.cells]
        if len(set(names)) != len(names):
            raise ValueError("cell names must be unique")
        if not names:
            raise ValueError("a grid needs at least one cell")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a cell")
        for c in self.cells:
            unknown = set(c.presets) - set(self.presets)
            if unknown:
                raise ValueError(f"cell {c.name}: preset(s) {sorted(unknown)} are not defined at the top level")
        return self

    @property
    def baseline_cell(self) -> str:
        return self.baseline or self.cells[0].name


@dataclass
class RunSpec:
    cell: str
    seed: int
    config: TrainConfig

    @property
    def out_dir(self) -> Path:
        return Path(self.config.trainer.out_dir)


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path)
    raw = load_yaml(path, what="grid file")
    try:
        return GridSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"grid file {path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def resolve_preset(grid: GridSpec, preset: str) -> str:
    """'auto' -> 'full' when a CUDA GPU is present, else 'cpu' (when the grid defines them)."""
    if preset == "auto":
        import torch

        preset = "full" if torch.cuda.is_available() else "cpu"
    if grid.presets and preset not in grid.presets:
        raise ConfigError(f"grid {grid.name} has no preset {preset!r}; it has {', '.join(grid.presets)}")
    return preset


def expand_grid(grid: GridSpec, preset: str, seeds: list[int], out_dir: str | Path,
                overrides: dict[str, Any] | None = None, cells: list[str] | None = None) -> list[RunSpec]:
    """Every (cell, seed) as a validated TrainConfig, its out_dir ``out_dir/<cell>/seed<k>``."""
    if cells:
        unknown = set(cells) - {c.name for c in grid.cells}
        if unknown:
            raise ConfigError(f"grid {grid.name} has no cell(s) {sorted(unknown)}")
    runs = []
    for cell in grid.cells:
        if cells and cell.name not in cells:
            continue
        raw = copy.deepcopy(grid.base)
        for layer in (grid.presets.get(preset, {}), cell.set, cell.presets.get(preset, {}), overrides or {}):
            apply_overrides(raw, layer)
        for seed in seeds:
            r = copy.deepcopy(raw)
            set_dotted(r, "trainer.seed", seed)
            set_dotted(r, "trainer.out_dir", str(Path(out_dir) / cell.name / f"seed{seed}"))
            r.setdefault("trainer", {}).setdefault("progress", "none")
            r["trainer"].setdefault("test", True)  # the grid tables report test scores: asked for explicitly
            try:
                cfg = TrainConfig.model_validate(r)
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, f"grid {grid.name}, cell {cell.name}: ")) from None
            runs.append(RunSpec(cell.name, seed, cfg))
    # Seed-major: every cell's first seed before any cell's second, so a grid cut short (a session's end, a
    # budget) still leaves a complete table of one seed, and a rerun resumes where it stopped.
    order = {s: i for i, s in enumerate(seeds)}
    return sorted(runs, key=lambda r: order[r.seed])  # stable: cells keep the grid's order within a seed


def _config_as_run(run: RunSpec) -> TrainConfig:
    """The config the runner will write for ``run`` (classifiers get num_classes filled in)."""
    from ..training.runner import task_of

    return task_of(run.config).prepare_config(run.config)


def _completed(run: RunSpec) -> dict[str, Any] | None:
    """The results of an identical finished run, so a rerun of a grid skips it (an unfinished one resumes).

    A run folder holding a *different* config is an error: resuming its checkpoint would mix two settings.
    """
    res, conf = run.out_dir / "results.json", run.out_dir / "config.json"
    if not conf.is_file():
        return None
    check_resume(run.out_dir, _config_as_run(run), allow_change=False,
                 hint="the grid or --set changed; pass another --out or remove that folder")
    return json.loads(res.read_text()) if res.is_file() else None


def _same_recipe(rec: dict[str, Any], spec: RunSpec, source: str) -> tuple[bool, list[str]]:
    """Whether a record was trained with exactly ``spec``'s config (the resume check's comparison)."""
    try:
        theirs = RunSpec(spec.cell, spec.seed, TrainConfig.model_validate(rec["config"]))
    except (KeyError, ValidationError) as e:
        raise ConfigError(f"--merge {source}: cell {rec.get('cell')} seed {rec.get('seed')}: not a run record "
                          f"({e})") from None
    diff = config_diff(_config_as_run(theirs), _config_as_run(spec), ignore=MERGE_IGNORED)
    return not diff, list(diff)


def merge_records(runs: list[RunSpec], prior: list[dict[str, Any]], source: str,
                  from_grid: str | None = None) -> dict[tuple[str, int], dict]:
    """The records of an earlier summary (its ``records``) that stand for some of ``runs``.

    Why: run folders (checkpoints) stay on the machine that trained them; a table grows over sessions and
    machines by merging the small per-run records its summary JSON keeps. A merged run must have been trained
    with exactly the config this grid gives that cell and seed, or the rows would mix two recipes.

    From this grid (``from_grid`` None), records match by (cell, seed) and a changed recipe is an error. From
    another grid, a record stands for every run here with the same seed and an identical config (the ablation
    grids share their baseline cell with the main tables); the copy names where it came from (``shared_from``).
    """
    out: dict[tuple[str, int], dict] = {}
    if from_grid is None:
        wanted = {(r.cell, r.seed): r for r in runs}
        for rec in prior:
            spec = wanted.get((rec.get("cell"), rec.get("seed")))
            if spec is None:  # a cell or seed not asked for this time
                continue
            same, diff = _same_recipe(rec, spec, source)
            if not same:
                raise ConfigError(f"--merge {source}: cell {spec.cell} seed {spec.seed} was trained with another "
                                  f"config (differs at {', '.join(diff[:5])}); it cannot share this table")
            out[(spec.cell, spec.seed)] = rec
        return out
    for spec in runs:
        for rec in prior:
            if rec.get("seed") == spec.seed and _same_recipe(rec, spec, source)[0]:
                out[(spec.cell, spec.seed)] = rec | {
                    "cell": spec.cell, "shared_from": {"grid": from_grid, "cell": rec.get("cell"), "file": source}}
                break
    if not out:
        raise ConfigError(f"--merge {source}: no run of grid {from_grid!r} has the config and seed of a run asked "
                          f"for here, so none can stand for one")
    return out


def load_prior(path: str | Path, grid: GridSpec, preset: str) -> tuple[list[dict[str, Any]], str | None]:
    """The per-run records of a summary JSON written by :func:`run_grid` (``results.json``), and the grid they
    come from when it is another grid (None for this one)."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--merge {path}: cannot read a grid summary ({e})") from None
    if not isinstance(summary, dict) or "grid" not in summary:
        raise ConfigError(f"--merge {path}: not a grid summary (no 'grid' key)")
    if summary["grid"] == grid.name and summary.get("preset") != preset:
        raise ConfigError(f"--merge {path}: it is grid {summary['grid']!r} preset {summary.get('preset')!r}, "
                          f"not preset {preset!r}")
    if "records" not in summary:
        raise ConfigError(f"--merge {path}: no per-run records (written by an older agekit); rerun those seeds")
    return summary["records"], (None if summary["grid"] == grid.name else str(summary["grid"]))


def _gates(model_file: str | None) -> dict[str, float]:
    if not model_file or not Path(model_file).is_file():
        return {}
    from safetensors import safe_open

    with safe_open(model_file, framework="pt") as f:
        return {k: float(f.get_tensor(k).float().item()) for k in f.keys()
                if k.endswith("gate") and f.get_slice(k).get_shape() in ([], [1])}


def run_grid(path: str | Path, seeds: int | list[int] = 3, preset: str = "auto", out: str | Path | None = None,
             overrides: dict[str, Any] | None = None, cells: list[str] | None = None,
             on_run: Callable[[RunSpec, int, int], None] | None = None,
             merge: list[str | Path] | None = None, train_missing: bool = True) -> dict[str, Any]:
    """Train every cell x seed (skipping runs already finished with the same config) and write the tables.

    ``merge``: earlier summaries (``results.json``) whose run records stand for (cell, seed) pairs with no
    finished run folder here, so those are not trained again (each checked to share this grid's config); a
    summary of another grid lends the runs whose config and seed are identical to one asked for here.
    ``train_missing=False`` trains nothing: the table holds the finished and merged runs and names the others
    (a table in progress, e.g. cells with fewer seeds so far).
    Returns the summary (also ``results.json`` and ``results.md`` in ``out``).
    """
    from ..training.runner import train
    from .report import summarize, write_tables

    grid = load_grid(path)
    preset = resolve_preset(grid, preset)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise ConfigError(f"seeds {seed_list}: give distinct seeds, none negative")
    out = Path(out) if out is not None else DEFAULT_OUT / grid.name / preset
    runs = expand_grid(grid, preset, seed_list, out, overrides, cells)
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for src in merge or []:  # checked before training anything, like the run folders below; the first wins
        prior, from_grid = load_prior(src, grid, preset)
        merged = merge_records(runs, prior, str(src), from_grid) | merged
    finished = [_completed(run) for run in runs]  # checks every run folder before training anything
    records, missing = [], []
    for i, (run, res) in enumerate(zip(runs, finished)):
        if res is None and (run.cell, run.seed) in merged:  # trained elsewhere: its record stands for the run
            records.append(merged[(run.cell, run.seed)])
            continue
        if res is None and not train_missing:
            missing.append({"cell": run.cell, "seed": run.seed})
            continue
        if on_run is not None:
            on_run(run, i, len(runs))
        timing = run.out_dir / "grid_run.json"
        if res is None:
            t0 = time.time()
            res = train(run.config)
            timing.write_text(json.dumps({"seconds": time.time() - t0}))
        seconds = json.loads(timing.read_text()).get("seconds") if timing.is_file() else None
        records.append({"cell": run.cell, "seed": run.seed, "out_dir": str(run.out_dir), "results": res,
                        "gates": _gates(res.get("model_file")), "seconds": seconds,
                        "config": json.loads(run.config.model_dump_json())})
    if not records:
        raise ConfigError(f"{grid.name} preset {preset}: no run asked for is finished in {out} or merged, so there "
                          f"is nothing to tabulate; run it without --no-train")
    summary = summarize(grid, preset, records, missing)
    write_tables(summary, out)
    return summary
