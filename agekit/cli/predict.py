"""`agekit predict`: age and gender for the faces in photos, as a table, a results file and drawings."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    from .main import fail  # the one error printer (escaped, one line); lazy: main imports this module

    fail(msg, code)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)


def predict_cmd(
    sources: List[str] = typer.Argument(..., help="Image file(s), folder(s) or glob(s) (quote globs, e.g. 'photos/**/*.jpg')."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model file (.safetensors, .ckpt, .onnx, .tflite); default: the bundled model."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="torch, onnx, onnx-int8, tflite or tflite-int8. Default: exported files by their type; a .safetensors "
              "model runs in ONNX Runtime (exported once into the user cache and checked against PyTorch; PyTorch if that fails)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this .json, .jsonl or .csv file."),
    draw: Optional[Path] = typer.Option(None, "--draw", help="Write annotated copies of the images into this folder."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Face crops per model call (pooled across images)."),
    min_score: float = typer.Option(0.8, "--min-score", min=0.0, max=1.0, help="Ignore detections with a lower face score."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: AGEKIT_THREADS/OMP_NUM_THREADS or up to 4)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Average each face with its mirror image."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No results table (use with --out)."),
) -> None:
    """Estimate age and gender for every face in images: prints a table, optionally writes a results file and drawings."""
    from ..export.formats import runner_formats
    from ..inference.draw import save_drawing
    from ..inference.predictor import Predictor
    from ..inference.sources import SourceError, list_sources
    from ..inference.writers import open_writer

    from ..runtime import ModelFileError

    if backend is not None and backend not in runner_formats():
        _fail(f"unknown backend {backend!r}; choose one of {', '.join(runner_formats())}")
    if out is not None and out.suffix.lower() not in (".json", ".jsonl", ".csv"):
        _fail(f"--out {out}: use a .json, .jsonl or .csv file name")
    try:  # one argument must exist; among several, a missing file is reported like a bad image
        items = list_sources(sources[0] if len(sources) == 1 else list(sources))
    except SourceError as e:
        _fail(str(e))
    try:
        predictor = Predictor(model, backend=backend, device=device, batch_size=batch_size, flip_tta=tta,
                              min_score=min_score, threads=threads)
    except (ModelFileError, ValueError) as e:
        _fail(str(e))
    if predictor.backend_name != "torch":  # torch only normalises crops then; tiny ops gain nothing from more threads
        import torch

        torch.set_num_threads(1)

    writer = open_writer(out) if out is not None else None
    calibrated = predictor.runner.calibration is not None
    interval_col = ["interval"] if calibrated else []
    table = Table("image", "face", "box (x0,y0,x1,y1)", "age", *interval_col, "gender", "prob", title=f"agekit predict ({predictor.cfg.name}, {predictor.backend_name})")
    n_images = n_read = n_faces = n_noface = 0
    taken: set[str] = set()
    try:
        for res in predictor.stream(items, keep_images=draw is not None):
            n_images += 1
            if writer is not None:
                writer.write(res)
            if res.error is not None:
                err.print(f"skipped {res.path or res.name}: {res.status}", highlight=False, markup=False, soft_wrap=True)
                table.add_row(escape(res.name), "-", f"[red]{escape(res.status)}[/]", "", *([""] * len(interval_col)), "", "")
                continue
            n_read += 1
            if draw is not None:
                save_drawing(res, draw, taken)
                res.image = None  # drawn: free the memory
            if not res.faces:
                n_noface += 1
                table.add_row(escape(res.name), "-", "[yellow]no face detected[/]", "", *([""] * len(interval_col)), "", "")
            for i, f in enumerate(res.faces):
                n_faces += 1
                box = ",".join(f"{v:.0f}" for v in f.box)
                table.add_row(escape(res.name), str(i), box, f"{f.age:.1f}", *([f.interval or "-"] if calibrated else []),
                              f.gender or "-",
                              "-" if f.gender_prob is None else f"{f.gender_prob:.2f}")
    finally:
        if writer is not None:
            writer.close()
    if not quiet:
        console.print(table)
    summary = f"{n_images} image(s): {n_faces} face(s), {n_noface} without a face, {n_images - n_read} skipped"
    if out is not None:
        summary += f"; results: {out}"
    if draw is not None:
        summary += f"; drawings: {draw}/"
    err.print(summary, highlight=False, markup=False, soft_wrap=True)
    if n_read == 0:
        _fail("no image could be read", code=1)
