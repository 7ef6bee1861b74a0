"""The `agekit` command line (Typer + rich). Each command is a thin layer over the Python API."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Age and gender estimation: data, train, eval, predict, export.")
console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


@app.command("models")
def models_cmd() -> None:
    """List the registered models with their input size, normalisation and weights source."""
    from ..models import get_model_cfg, list_models

    table = Table(title="agekit models")
    for col in ("name", "family", "input", "mean/std", "ImageNet weights"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    for name in list_models():
        c = get_model_cfg(name)
        table.add_row(name, c.family, "x".join(map(str, c.input_size[1:])), f"{c.mean[0]:.3g}/{c.std[0]:.3g}",
                      c.backbone_weights, c.description)
    console.print(table)


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML training config"),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides"),
) -> None:
    """Train a model from a YAML config (Lightning: checkpoints, resume, CSV logs)."""
    from ..training.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as e:
        fail(str(e))
    from ..training.runner import train

    res = train(cfg)
    console.print_json(data=res)


def _register_subapps() -> None:
    import importlib

    for mod in ("data", "evaluate", "predict", "export", "research"):
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
