"""`agekit predict`: age and gender for the faces (or, with --persons, the people) in photos, as a table, a
results file and drawings."""
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
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="torch, onnx (onnxruntime; a .safetensors model is exported once) or tflite; default: by file type."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this .json, .jsonl or .csv file."),
    draw: Optional[Path] = typer.Option(None, "--draw", help="Write annotated copies of the images into this folder."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Face crops per model call (pooled across images)."),
    min_score: float = typer.Option(0.8, "--min-score", min=0.0, max=1.0, help="Ignore detections with a lower face score."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: AGEKIT_THREADS/OMP_NUM_THREADS or up to 4)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Average each face with its mirror image."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No results table (use with --out)."),
    persons: bool = typer.Option(False, "--persons", help="One result per person (face+body, face only or body only) instead of per face."),
    crops: Optional[str] = typer.Option(None, "--crops", help="Inputs are already crops, skip detection: 'face' (face chips) or 'person' (one person per image; implies --persons)."),
) -> None:
    """Estimate age and gender for every face (or person) in images: prints a table, optionally writes a results file and drawings."""
    from ..export.formats import runner_formats
    from ..inference.draw import save_drawing
    from ..inference.predictor import Predictor
    from ..inference.sources import SourceError, list_sources
    from ..inference.writers import open_writer

    from ..inference.person_detectors import PersonDetectorError
    from ..runtime import ModelFileError

    if backend is not None and backend not in runner_formats():
        _fail(f"unknown backend {backend!r}; choose one of {', '.join(runner_formats())}")
    if out is not None and out.suffix.lower() not in (".json", ".jsonl", ".csv"):
        _fail(f"--out {out}: use a .json, .jsonl or .csv file name")
    if crops is not None and crops not in ("face", "person"):
        _fail(f"--crops {crops!r}: use 'face' or 'person'")
    try:  # one argument must exist; among several, a missing file is reported like a bad image
        items = list_sources(sources[0] if len(sources) == 1 else list(sources))
    except SourceError as e:
        _fail(str(e))
    try:
        predictor = Predictor(model, backend=backend, device=device, batch_size=batch_size, flip_tta=tta,
                              min_score=min_score, threads=threads, persons=persons, crops=crops)
    except (ModelFileError, PersonDetectorError, ValueError) as e:
        _fail(str(e))
    if predictor.backend_name != "torch":  # torch only normalises crops then; tiny ops gain nothing from more threads
        import torch

        torch.set_num_threads(1)

    writer = open_writer(out, persons=predictor.persons) if out is not None else None
    calibrated = predictor.runner.calibration is not None
    interval_col = ["interval"] if calibrated else []
    title = f"agekit predict ({predictor.cfg.name}, {predictor.backend_name})"
    if predictor.persons:
        table = Table("image", "person", "inputs", "person box", "face box", "age", *interval_col, "gender", "prob", title=title)
    else:
        table = Table("image", "face", "box (x0,y0,x1,y1)", "age", *interval_col, "gender", "prob", title=title)
    blank = [""] * (len(table.columns) - 3)
    n_images = n_read = n_found = n_none = 0
    taken: set[str] = set()
    try:
        for res in predictor.stream(items, keep_images=draw is not None):
            n_images += 1
            if writer is not None:
                writer.write(res)
            if res.error is not None:
                err.print(f"skipped {res.path or res.name}: {res.status}", highlight=False, markup=False, soft_wrap=True)
                table.add_row(escape(res.name), "-", f"[red]{escape(res.status)}[/]", *blank)
                continue
            n_read += 1
            if draw is not None:
                save_drawing(res, draw, taken)
                res.image = None  # drawn: free the memory
            found = res.persons if res.persons is not None else res.faces
            if not found:
                n_none += 1
                table.add_row(escape(res.name), "-", f"[yellow]{res.status}[/]", *blank)
            for i, f in enumerate(found):
                n_found += 1
                age = "-" if f.age is None or f.age != f.age else f"{f.age:.1f}"
                tail = [*([f.interval or "-"] if calibrated else []), f.gender or "-",
                        "-" if f.gender_prob is None else f"{f.gender_prob:.2f}"]
                if res.persons is not None:
                    what = f.inputs if f.age is not None else f"{f.inputs}: {escape(f.note or '')}"
                    table.add_row(escape(res.name), str(i), what, _box(f.person_box), _box(f.face_box), age, *tail)
                else:
                    table.add_row(escape(res.name), str(i), _box(f.box), age, *tail)
    finally:
        if writer is not None:
            writer.close()
    if not quiet:
        console.print(table)
    what = "person(s)" if predictor.persons else "face(s)"
    nothing = "without a person" if predictor.persons else "without a face"
    summary = f"{n_images} image(s): {n_found} {what}, {n_none} {nothing}, {n_images - n_read} skipped"
    if out is not None:
        summary += f"; results: {out}"
    if draw is not None:
        summary += f"; drawings: {draw}/"
    err.print(summary, highlight=False, markup=False, soft_wrap=True)
    if n_read == 0:
        _fail("no image could be read", code=1)


def _box(box: tuple[float, ...] | None) -> str:
    return "-" if box is None else ",".join(f"{v:.0f}" for v in box)
