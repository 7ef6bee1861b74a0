"""`agekit predict`: age and gender for the faces (or, with --persons, the people) in photos, or for the people
tracked in videos, as a table, a results file and drawings."""
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
    sources: List[str] = typer.Argument(..., help="Image file(s), folder(s) or glob(s) (quote globs, e.g. 'photos/**/*.jpg'), or video file(s) (.mp4, .m4v, .mov, .avi, .mkv, .webm)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model file (.safetensors, .ckpt, .onnx, .tflite); default: the bundled model."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="torch, onnx, onnx-int8, tflite or tflite-int8. Default: exported files by their type; a .safetensors "
              "model runs in ONNX Runtime (exported once into the user cache and checked against PyTorch; PyTorch if that fails)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this .json, .jsonl or .csv file (videos: .json for one video, .jsonl for several)."),
    draw: Optional[Path] = typer.Option(None, "--draw", help="Write annotated copies of the images (videos: <name>.mp4 with track ids and running ages) into this folder."),
    stride: int = typer.Option(1, "--stride", min=1, help="Videos: look at every Nth frame (faster; tracks still follow people across the gaps)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Face crops per model call (pooled across images)."),
    min_score: float = typer.Option(0.8, "--min-score", min=0.0, max=1.0, help="Ignore detections with a lower face score."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: AGEKIT_THREADS/OMP_NUM_THREADS or up to 4)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Average each face with its mirror image."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No results table (use with --out)."),
    persons: bool = typer.Option(False, "--persons", help="One result per person (face+body, face only or body only) instead of per face."),
    crops: Optional[str] = typer.Option(None, "--crops", help="Inputs are already crops, skip detection: 'face' (face chips) or 'person' (one person per image; implies --persons)."),
) -> None:
    """Estimate age and gender for every face (or person) in images, or for every person tracked in videos: prints a
    table, optionally writes a results file and drawings."""
    from ..export.formats import runner_formats
    from ..inference.draw import save_drawing
    from ..inference.predictor import Predictor
    from ..inference.sources import SourceError, expand_videos, is_video, list_sources
    from ..inference.writers import TRACK_SUFFIXES, open_writer

    from ..inference.person_detectors import PersonDetectorError
    from ..runtime import ModelFileError

    if backend is not None and backend not in runner_formats():
        _fail(f"unknown backend {backend!r}; choose one of {', '.join(runner_formats())}")
    videos = [s for s in sources if is_video(s)]
    if videos and len(videos) < len(sources):
        _fail("give videos and images in separate commands (videos: " + ", ".join(videos[:3]) + ")")
    if not videos and stride != 1:
        _fail("--stride applies to videos; these inputs are images")
    if videos:
        try:
            videos = [str(v) for v in expand_videos(videos)]
        except SourceError as e:
            _fail(str(e))
        if out is not None and out.suffix.lower() not in TRACK_SUFFIXES:
            _fail(f"--out {out}: video results are JSON; use a .json (one video) or .jsonl file name")
        if out is not None and out.suffix.lower() == ".json" and len(videos) > 1:
            _fail(f"--out {out}: a .json file holds one video; use a .jsonl file name for {len(videos)} videos")
    elif out is not None and out.suffix.lower() not in (".json", ".jsonl", ".csv"):
        _fail(f"--out {out}: use a .json, .jsonl or .csv file name")
    if crops is not None and crops not in ("face", "person"):
        _fail(f"--crops {crops!r}: use 'face' or 'person'")
    items = []
    if not videos:
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
    if videos:
        _predict_videos(videos, predictor, out, draw, stride, quiet)
        return

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
    _summary(f"{n_images} image(s): {n_found} {what}, {n_none} {nothing}, {n_images - n_read} skipped", out, draw)
    if n_read == 0:
        _fail("no image could be read", code=1)


def _summary(line: str, out: Optional[Path], draw: Optional[Path]) -> None:
    """The run's one-line account on stderr, so stdout stays the results alone."""
    if out is not None:
        line += f"; results: {out}"
    if draw is not None:
        line += f"; drawings: {draw}/"
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def _predict_videos(videos: list[str], predictor, out: Optional[Path], draw: Optional[Path], stride: int,
                    quiet: bool) -> None:
    """The video branch of ``agekit predict``: a progress bar per video, a table of tracks, JSON per video.

    One video that cannot be used fails in one line; among several, it is skipped and reported, and the others
    go on (their results are written as each finishes).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    from ..inference.sources import VideoError
    from ..inference.writers import TrackWriter

    class FramesPerSecond(ProgressColumn):  # rich has no plain "items per second" column
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} frames/s" if task.speed else "", style="progress.data.speed")

    calibrated = predictor.runner.calibration is not None
    table = Table("video", "track", "frames", "seen", "age", *(["interval"] if calibrated else []), "gender", "prob",
                  title=f"agekit predict ({predictor.cfg.name}, {predictor.backend_name}, stride {stride})")
    writer = TrackWriter(out) if out is not None else None
    taken: set[str] = set()
    n_ok = n_tracks = n_nobody = 0
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                        FramesPerSecond(), TextColumn("{task.fields[tracks]} track(s)"), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), console=err, disable=not err.is_terminal)
    try:
        with progress:
            for video in videos:
                task = progress.add_task(escape(Path(video).name), total=None, tracks=0)

                def on_open(src, task=task) -> None:
                    progress.update(task, total=src.expected_frames)

                def on_frame(done: int, tracks: int, task=task) -> None:
                    progress.update(task, completed=done, tracks=tracks)

                try:
                    res = predictor.predict_video(video, stride=stride, draw=draw, on_frame=on_frame, on_open=on_open,
                                                  taken=taken)
                except VideoError as e:
                    progress.remove_task(task)
                    if len(videos) == 1:
                        raise
                    err.print(f"skipped {video}: {e}", highlight=False, markup=False, soft_wrap=True)
                    table.add_row(escape(Path(video).name), "-", f"[red]{escape(str(e))}[/]", "", "",
                                  *([""] if calibrated else []), "", "")
                    continue
                progress.update(task, total=res.frames_processed, completed=res.frames_processed)
                n_ok += 1
                if writer is not None:
                    writer.write(res)
                for note in _video_notes(res):
                    err.print(note, highlight=False, markup=False, soft_wrap=True)
                if not res.tracks:
                    n_nobody += 1
                    table.add_row(escape(res.name), "-", "[yellow]nobody found[/]", str(res.frames_processed), "",
                                  *([""] if calibrated else []), "", "")
                for t in res.tracks:
                    n_tracks += 1
                    table.add_row(escape(res.name), str(t.id), f"{t.first_frame}-{t.last_frame}", str(t.num_frames),
                                  f"{t.age:.1f}", *([t.interval or "-"] if calibrated else []), t.gender or "-",
                                  "-" if t.gender_prob is None else f"{t.gender_prob:.2f}")
    except VideoError as e:
        _fail(str(e), code=1)
    finally:
        if writer is not None:
            writer.close()
    if not quiet:
        console.print(table)
    _summary(f"{len(videos)} video(s): {n_tracks} track(s), {n_nobody} with nobody in them, "
             f"{len(videos) - n_ok} skipped", out, draw)
    if n_ok == 0:
        _fail("no video could be read", code=1)


def _video_notes(res) -> list[str]:
    """One line each for what the user should know about a video that was read: nobody in it, damage skipped."""
    notes = []
    looked = f"{res.frames_processed} frame(s) looked at" + (f" (every {_ordinal(res.stride)} of {res.frames_total})" if res.stride > 1 else "")
    if not res.tracks:
        notes.append(f"{res.path or res.name}: nobody found in {looked}")
    if res.corrupt_packets:
        notes.append(f"{res.path or res.name}: {res.corrupt_packets} corrupt packet(s) skipped; the frames around them are missing")
    if res.stopped:
        notes.append(f"{res.path or res.name}: decoding stopped after frame {res.frames_total - 1} ({res.stopped})")
    elif res.frames_expected and res.frames_total < 0.9 * res.frames_expected:
        notes.append(f"{res.path or res.name}: the file ends after {res.frames_total} of the {res.frames_expected} "
                     "frames its header announces (truncated?)")
    return notes


def _ordinal(n: int) -> str:
    """2 -> "2nd", 3 -> "3rd", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _box(box: tuple[float, ...] | None) -> str:
    return "-" if box is None else ",".join(f"{v:.0f}" for v in box)
