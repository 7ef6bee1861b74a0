"""`agekit calibrate`: split-conformal calibration of the age interval (logic in agekit.evaluation.calibration)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def calibrate_cmd(
    model: Path = typer.Argument(..., help="agekit .safetensors model to calibrate"),
    data: str = typer.Option("utkface", "--data", "-d", help="manifest (CSV/Parquet with a split column) or a dataset name"),
    split: str = typer.Option("val", help="calibration split (never the test split)"),
    root: Optional[str] = typer.Option(None, help="dataset folder for a dataset name [default: AGEKIT_<NAME>_ROOT, "
                                                  "$AGEKIT_DATA_ROOT/<Folder> or ../shared/data/<Folder>]"),
    alpha: float = typer.Option(0.1, min=0.001, max=0.999, help="miscoverage: the interval aims at 1 - alpha"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="calibrated copy [default: MODEL_calibrated.safetensors]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists (also the input model itself)"),
    batch_size: int = typer.Option(128, min=1),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="flip TTA (as predict and eval use it)"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for inference"),
    cache_dir: Path = typer.Option(Path("cache"), help="decode-once crop cache (shared with training and eval)"),
) -> None:
    """Calibrate MODEL's 90% age interval (split conformal on --split) and write a copy carrying the record.

    Scores are |true - predicted| (one width for every face), or |true - predicted| / age_std for models that
    predict their own spread (adaptive width). The tensors are copied unchanged; `agekit predict`, `eval`
    and ONNX/TFLite exports of the copy then report age_low/age_high.
    """
    from ..data.manifest import ManifestError
    from ..evaluation.calibration import calibrate, default_calibrated_path, write_calibrated
    from ..models.weights import WeightsError
    from ..runtime import ModelFileError
    from .main import console, fail

    if not model.is_file():
        fail(f"model file not found: {model}")
    if model.suffix != ".safetensors":
        fail(f"{model}: calibrate an agekit .safetensors model (its ONNX/TFLite exports carry the record)")
    target = out if out is not None else default_calibrated_path(model)
    if target.resolve() == model.resolve() and not overwrite:
        fail(f"--out {target} is the input model; choose another file or pass --overwrite")
    if target.exists() and not overwrite:
        fail(f"{target} exists; pass --overwrite to replace it")
    try:
        with console.status(f"calibrating {model.name} on {data}/{split} ..."):
            rec = calibrate(model, data, split, root, alpha=alpha, batch_size=batch_size, tta_flip=tta,
                            threads=threads, cache_dir=cache_dir)
        path = write_calibrated(model, rec, target, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, ManifestError, WeightsError, ModelFileError) as e:
        fail(str(e).strip("'\""))
    kind = "age -/+ q * age_std" if rec["score"] == "normalized" else "age -/+ q"
    console.print(f"{100 * (1 - rec['alpha']):g}% interval: {kind}, q = {rec['q']:.3f} "
                  f"(split conformal on {rec['data']}/{rec['split']}, n = {rec['n']})", highlight=False)
    console.print(f"calibrated model: {path}", highlight=False)
