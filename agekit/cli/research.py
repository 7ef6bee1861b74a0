"""Research commands: `agekit experiment run|estimate|list|report|cross-dataset`, `agekit attention-maps`, `agekit params`,
(classifiers are scored by `agekit eval`; logic in agekit.experiments and agekit.tasks)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

experiment_app = typer.Typer(add_completion=False, no_args_is_help=True,
                             help="Run a paper's ablation grid: every cell x seed trained, then a mean ± std table.")

GRIDS_DIR = Path("configs/experiments")


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
    app.command("attention-maps")(attention_maps_cmd)
    app.command("params")(params_cmd)


def _cells(cells: str | None) -> list[str] | None:
    return [c.strip() for c in cells.split(",") if c.strip()] if cells else None


@experiment_app.command("run")
def run_cmd(
    grid: Path = typer.Argument(..., help="grid YAML, e.g. configs/experiments/attn_mechanisms.yaml"),
    seeds: int = typer.Option(3, min=1, help="seeds 0..N-1 per cell"),
    seed: Optional[List[int]] = typer.Option(None, "--seed", min=0, help="exactly this seed (repeatable; instead "
                                             "of --seeds), e.g. to add seeds to a --merge'd table"),
    preset: str = typer.Option("auto", help="full (papers' settings, GPU), cpu (shrunk), auto: full if CUDA else cpu"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder [runs/experiments/<grid>/<preset>]"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="section.key=value applied to every cell"),
    cells: Optional[str] = typer.Option(None, help="comma-separated subset of cells"),
    merge: Optional[List[Path]] = typer.Option(None, "--merge", help="an earlier results.json of this grid and "
                                               "preset: its run records stand for those runs, which are then not "
                                               "trained here; of another grid: its runs with the same config and "
                                               "seed are shared (repeatable)"),
    train: bool = typer.Option(True, "--train/--no-train", help="--no-train: train nothing; tabulate the finished "
                               "and merged runs and name the missing ones"),
) -> None:
    """Train every cell x seed (finished runs with the same config are reused) and write results.md/.json."""
    from ..config.base import ConfigError, parse_overrides
    from ..experiments.grid import run_grid
    from ..experiments.report import render_markdown
    from .main import console, fail

    def progress(run, i, n):
        console.print(f"[{i + 1}/{n}] {run.cell} seed {run.seed} -> {run.out_dir}", highlight=False)

    try:
        summary = run_grid(grid, list(seed) if seed else seeds, preset, out, parse_overrides(set_), _cells(cells),
                           on_run=progress, merge=merge, train_missing=train)
    except ConfigError as e:
        fail(str(e))
    console.print(render_markdown(summary), highlight=False)


@experiment_app.command("estimate")
def estimate_cmd(
    grid: Path = typer.Argument(..., help="grid YAML"),
    seeds: int = typer.Option(3, min=1),
    preset: str = typer.Option("auto"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="section.key=value applied to every cell"),
    cells: Optional[str] = typer.Option(None, help="comma-separated subset of cells"),
    repeats: int = typer.Option(3, min=1, help="timed steps per phase (the fastest counts: robust to load spikes)"),
) -> None:
    """Estimate the grid's wall time on this machine by timing one training step per cell."""
    from rich.table import Table

    from ..config.base import ConfigError, parse_overrides
    from ..experiments.estimate import RUN_OVERHEAD_S, estimate_grid
    from .main import console, fail

    try:
        est = estimate_grid(grid, seeds, preset, parse_overrides(set_), _cells(cells), repeats)
    except ConfigError as e:
        fail(str(e))
    table = Table("cell", "train step CPU s (first/last phase)", "eval batch CPU s", "train imgs", "epochs", "s/run")
    for r in est["rows"]:
        spr = r["seconds_per_run"]
        table.add_row(r["cell"], f"{r['step_first_s']:.3f}/{r['step_last_s']:.3f}", f"{r['eval_batch_s']:.3f}",
                      str(r.get("train_images", "?")), str(r.get("epochs", "?")), "?" if spr is None else f"{spr:.0f}")
    console.print(table)
    console.print(f"{est['grid']} preset {est['preset']}: {seeds} seeds x {len(est['rows'])} cells = "
                  f"{est['total_seconds'] / 60:.1f} min on one free CPU core (step CPU time, 1 torch thread, "
                  f"+{RUN_OVERHEAD_S:.0f} s overhead per run); two free cores are faster", highlight=False)


@experiment_app.command("list")
def list_cmd(folder: Path = typer.Argument(GRIDS_DIR, help="folder of grid YAMLs")) -> None:
    """The grids in a folder: name, paper, presets, cells."""
    from rich.table import Table

    from ..config.base import ConfigError
    from ..experiments.grid import load_grid
    from .main import console, fail

    table = Table("file", "paper", "presets", "cells")
    for p in sorted(q for q in folder.glob("*.yaml") if not q.name.startswith("_")):  # _*.yaml: shared includes
        try:
            g = load_grid(p)
        except ConfigError as e:
            fail(str(e))
        table.add_row(str(p), g.paper, ", ".join(g.presets), ", ".join(c.name for c in g.cells))
    console.print(table)


@experiment_app.command("cross-dataset")
def cross_dataset_cmd(
    models: List[Path] = typer.Argument(..., help="agekit .safetensors models (their training set is read from "
                                        "their metadata); 'bundled' = the bundled model"),
    data: str = typer.Option("utkface,aaf", "--data", "-d", help="comma-separated datasets (or manifests) to test on"),
    split: str = typer.Option("test", help="which split of each dataset to score"),
    pending: Optional[List[Path]] = typer.Option(None, "--pending", help="training config of a model not trained "
                                                 "yet: a row marked 'not trained yet' (repeatable)"),
    out: Path = typer.Option(Path("runs/cross_dataset/cross_dataset"), "--out", "-o",
                             help="writes OUT.md and OUT.json"),
    reports: Optional[Path] = typer.Option(None, help="also write each cell's full agekit eval report here"),
    cache_dir: Path = typer.Option(Path("cache"), help="decode-once crop cache (shared with training and eval)"),
    n_boot: int = typer.Option(1000, min=10, help="bootstrap resamples for the 95% CIs"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="flip TTA, as agekit eval"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for inference"),
    limit: Optional[int] = typer.Option(None, min=1, help="score a random subset per dataset (quick look only)"),
) -> None:
    """Cross-dataset table: every MODEL on the test split of every --data set (MAE with 95% CIs), Markdown + JSON.

    Each cell is `agekit eval`'s own evaluate(); e.g. `agekit experiment cross-dataset bundled --data utkface,aaf
    --pending configs/mobileagenet_lite0_aaf.yaml`.
    """
    import shlex

    from ..config.base import ConfigError
    from ..data.manifest import ManifestError
    from ..experiments.cross_dataset import cross_dataset, write_cross_dataset
    from ..models.weights import WeightsError
    from ..runtime import bundled_model_path
    from .main import console, fail

    paths = [bundled_model_path() if str(m) == "bundled" else m for m in models]
    for m in paths:
        if not Path(m).is_file():
            fail(f"model file not found: {m}")
    for c in pending or []:
        if not c.is_file():
            fail(f"config not found: {c} (--pending)")
    datas = [d.strip() for d in data.split(",") if d.strip()]
    if not datas:
        fail("--data names no dataset")
    try:
        table = cross_dataset(paths, datas, split, pending=pending or [], reports_dir=reports,
                              progress=lambda s: console.print(f"scoring {s}", highlight=False),
                              cache_dir=cache_dir, n_boot=n_boot, seed=seed, tta_flip=tta, threads=threads, limit=limit)
    except (FileNotFoundError, ValueError, KeyError, ManifestError, WeightsError, ConfigError) as e:
        fail(str(e).strip("'\""))
    args = ["agekit", "experiment", "cross-dataset", *map(str, models), "--data", data, "--split", split]
    for c in pending or []:
        args += ["--pending", str(c)]
    args += ["--out", str(out), "--cache-dir", str(cache_dir), "--n-boot", str(n_boot), "--seed", str(seed)]
    args += [] if tta else ["--no-tta"]
    args += ["--threads", str(threads)] if threads else []
    args += ["--limit", str(limit)] if limit else []
    args += ["--reports", str(reports)] if reports else []
    command = " ".join(shlex.quote(a) for a in args)  # the exact command, from its own options
    md, js = write_cross_dataset(table, out, command)
    console.print(md.read_text(), highlight=False, markup=False)
    console.print(f"table: {md}  json: {js}", highlight=False)


@experiment_app.command("report")
def report_cmd(folder: Path = typer.Argument(..., help="a grid's output folder (holds results.json)")) -> None:
    """Re-render results.md from a grid's results.json."""
    from ..experiments.report import render_markdown
    from .main import console, fail

    p = folder / "results.json"
    if not p.is_file():
        fail(f"no results.json in {folder}")
    summary = json.loads(p.read_text())
    (folder / "results.md").write_text(render_markdown(summary))
    console.print(render_markdown(summary), highlight=False)


def attention_maps_cmd(
    checkpoint: Path = typer.Argument(..., help="model.safetensors from `agekit train`, or a Lightning .ckpt"),
    images: Optional[List[Path]] = typer.Argument(None, help="image files or folders (face crops for age models)"),
    out: Path = typer.Option(Path("runs/attention_maps"), "--out", "-o", help="output folder"),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="heatmap weight in the overlay"),
    data: Optional[str] = typer.Option(None, "--data", help="instead of IMAGES: a labelled dataset (utkface, aaf, "
                                       "a manifest); draws its best- and worst-predicted faces side by side"),
    split: str = typer.Option("val", "--split", help="with --data: the split to draw from"),
    cases: int = typer.Option(4, "--cases", min=1, help="with --data: how many best and how many worst faces"),
    limit: Optional[int] = typer.Option(500, "--limit", min=1, help="with --data: score a seeded subset of the split"),
    root: Optional[str] = typer.Option(None, "--root", help="with --data: the dataset folder [default: "
                                       "AGEKIT_<NAME>_ROOT, $AGEKIT_DATA_ROOT/<Name> or ../shared/data]"),
    cache_dir: Path = typer.Option(Path("cache"), "--cache-dir", help="with --data: the crop cache"),
    background: str = typer.Option("face", "--background", help="with --data: draw maps over each 'face', or over "
                                   "the split's 'mean' face (a figure with no dataset image in it)"),
) -> None:
    """Per MHSA block: attention averaged over heads, the mean each token receives, as heatmap + overlay PNGs;
    with --data, one sheet of right and wrong predictions."""
    from ..experiments.attention_maps import attention_maps_for_images, attention_sheet
    from ..models.weights import WeightsError
    from .main import console, fail

    if not checkpoint.is_file():
        fail(f"checkpoint not found: {checkpoint}")
    if bool(images) == (data is not None):
        fail("give IMAGES or --data (a labelled dataset to draw right and wrong cases from), not both or neither")
    try:
        if data is not None:
            info = attention_sheet(checkpoint, data, split, cases, limit, out, cache_dir=cache_dir, alpha=alpha,
                                   root=root, background=background)
            console.print(f"wrote {info['image']}: {cases} best and {cases} worst of {info['n_scored']} "
                          f"{info['data']}/{split} faces (MAE {info['mae_scored']:.2f}), blocks "
                          f"{', '.join(info['blocks'])}", highlight=False)
            return
        written = attention_maps_for_images(checkpoint, images or [], out, alpha)
    except (FileNotFoundError, ValueError, WeightsError) as e:
        fail(str(e))
    blocks = sorted({w["block"] for w in written})
    console.print(f"wrote {2 * len(written)} PNGs for {len({w['image'] for w in written})} image(s) x "
                  f"{len(blocks)} MHSA block(s) to {out}", highlight=False)


def params_cmd(
    names: List[str] = typer.Argument(..., help="registered model names"),
    kwarg: Optional[List[str]] = typer.Option(None, "--kwarg", "-k", help="model kwarg key=value (YAML value)"),
) -> None:
    """Parameter counts of models (built on the meta device: instant, no memory)."""
    from rich.table import Table

    from ..config.base import ConfigError, parse_overrides
    from ..models import get_model_cfg
    from ..models.baselines import model_params
    from .main import console, fail

    try:
        kw = parse_overrides(kwarg)
    except ConfigError as e:
        fail(str(e))
    table = Table("model", "task", "input", "params")
    for n in names:
        try:
            cfg = get_model_cfg(n)
            p = model_params(n, **kw)
        except (KeyError, TypeError, ValueError) as e:
            fail(str(e).strip("'\""))
        table.add_row(n, cfg.task, "x".join(map(str, cfg.input_size[1:])), f"{p:,}")
    console.print(table)
