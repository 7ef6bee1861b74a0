"""The `agekit` command line (Typer + rich). Each command is a thin layer over the Python API."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ..config.train import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Age and gender estimation: data, train, eval, predict, export.")
console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` as one line on stderr and exit: every command reports user errors through this.

    ``msg`` is plain text (escaped, so paths like ``runs/[exp]/m.safetensors`` print as they are and ``[/x]``
    cannot break the markup), never wrapped, whatever the terminal width.
    """
    text = " ".join(str(msg).split())  # one line, even for multi-line exception texts
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _models_rows() -> list[dict]:
    from ..models import get_model_cfg, list_models

    rows = []
    for name in list_models():
        c = get_model_cfg(name)
        rows.append({"name": name, "family": c.family, "task": c.task, "input_size": list(c.input_size),
                     "mean": list(c.mean), "std": list(c.std), "weights": c.backbone_weights,
                     "description": c.description})
    return rows


@app.command("models")
def models_cmd(
    fmt: Optional[str] = typer.Option(None, "--format", "-f",
                                      help="table, json or tsv [default: table on a terminal, tsv when piped]"),
) -> None:
    """List the registered models with their input size, normalisation and weights source."""
    fmt = fmt or ("table" if console.is_terminal else "tsv")
    if fmt not in ("table", "json", "tsv"):
        fail(f"--format must be table, json or tsv, not {fmt!r}")
    rows = _models_rows()
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if fmt == "tsv":  # one model per line, no truncation: for pipes, grep and scripts
        typer.echo("\t".join(("name", "family", "task", "input", "mean", "std", "weights", "description")))
        for r in rows:
            typer.echo("\t".join((r["name"], r["family"], r["task"], "x".join(map(str, r["input_size"][1:])),
                                  ",".join(f"{v:.4g}" for v in r["mean"]), ",".join(f"{v:.4g}" for v in r["std"]),
                                  r["weights"], " ".join(r["description"].split()))))
        return
    wide = console.width >= 120  # narrow terminals: no description column (see --format tsv/json)
    table = Table(title="agekit models")
    # names never shrink or wrap; the other columns fold when space runs out
    table.add_column("name", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=4))
    table.add_column("task", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("mean/std", no_wrap=True)
    table.add_column("weights", overflow="fold", ratio=1)
    if wide:
        table.add_column("description", overflow="fold", ratio=1)
    for r in rows:
        cells = [escape(r["name"]), r["task"], "x".join(map(str, r["input_size"][1:])),
                 f"{r['mean'][0]:.3g}/{r['std'][0]:.3g}", escape(r["weights"])]
        table.add_row(*cells, *([escape(r["description"])] if wide else []))
    console.print(table)


def check_train_data(cfg: TrainConfig) -> None:
    """Fail early, in one line, when the data a training config names is not there."""
    d = cfg.data
    if d.sources is not None:  # each source as a single dataset/manifest would be checked
        for i, s in enumerate(d.sources):
            _check_source(s.dataset, s.root, s.manifest, f"data.sources[{i}].")
        return
    _check_source(d.dataset, d.root, d.manifest, "data.")


def _check_source(dataset: str | None, root_: str | None, manifest: str | None, key: str) -> None:
    from ..config.roots import dataset_root, env_var

    if manifest is not None:
        if not Path(manifest).is_file():
            fail(f"manifest not found: {manifest} ({key}manifest)")
        return
    from ..data.adapters import get_adapter
    from ..data.classification import is_classification_dataset

    assert dataset is not None
    if not is_classification_dataset(dataset):
        try:
            get_adapter(dataset)
        except KeyError as e:
            fail(f"{key}dataset: {e.args[0]}")
    root = dataset_root(dataset, root_)
    if root is None:
        fail(f"dataset {dataset!r} has no default folder: set {key}root or {env_var(dataset)}")
    if not Path(root).exists():
        fail(f"{dataset} folder not found: {root} (set {key}root, {env_var(dataset)} or AGEKIT_DATA_ROOT)")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML training config (may `include:` other YAML files)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides"),
    test: bool = typer.Option(False, "--test", help="score the test split after fit (trainer.test=true)"),
    allow_config_change: bool = typer.Option(False, "--allow-config-change", "--force",
                                             help="resume trainer.out_dir even if it holds a run with another config"),
) -> None:
    """Train a model from a YAML config (Lightning: checkpoints, resume, CSV logs). Selection uses validation only."""
    from ..config.base import ConfigError
    from ..config.train import load_config
    from ..data.manifest import ManifestError

    try:
        cfg = load_config(config, [*(overrides or []), *(["trainer.test=true"] if test else [])])
    except ConfigError as e:
        fail(str(e))
    check_train_data(cfg)
    from ..training.runner import train

    try:  # the run folder's config is checked against this one before anything trains (check_resume)
        res = train(cfg, allow_config_change=allow_config_change)
    except (ConfigError, ManifestError, FileNotFoundError) as e:
        fail(str(e).strip("'\""))
    console.print_json(data=res)


def _register_subapps() -> None:
    import importlib

    for mod in ("data", "evaluate", "calibrate", "predict", "export", "serve", "research"):
        try:
            m = importlib.import_module(f"agekit.cli.{mod}")
        except ModuleNotFoundError as e:
            if e.name == f"agekit.cli.{mod}":
                continue
            raise
        m.register(app)


_register_subapps()

if __name__ == "__main__":
    app()
