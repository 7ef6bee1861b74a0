"""`agekit export`: write a deployable file, then prove it matches PyTorch on real crops."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)


def export_cmd(
    model: Path = typer.Argument(..., help="agekit .safetensors model"),
    format: str = typer.Option("onnx", "--format", "-f", help="export format: onnx, onnx-int8, tflite or tflite-int8 "
                               "(int8: static quantisation calibrated on --calib-data training crops)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output file (default: MODEL with the format's suffix)"),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default 18; below 18 uses the TorchScript exporter)"),
    check_data: Optional[str] = typer.Option(
        None, "--check-data", help="parity inputs: utkface, a manifest, a folder of face crops, an image, fashion_mnist or "
        "cifar100 (classifiers), random or none (default: the model's own dataset when it is here, else random)"),
    root: Optional[str] = typer.Option(None, help="dataset folder when --check-data names a dataset"),
    n_check: int = typer.Option(64, "--n-check", min=1, help="how many crops to compare"),
    tolerance: Optional[float] = typer.Option(None, help="max allowed |age difference| in years [0.1; int8: 5]"),
    prob_tolerance: Optional[float] = typer.Option(None, help="max allowed |P(female) difference| [0.01; int8: 0.1]"),
    calib_data: Optional[str] = typer.Option(
        None, "--calib-data", help="int8 calibration crops: utkface, a manifest or a folder of face crops, sampled "
        "from the training split [default: the dataset parity uses]"),
    n_calib: int = typer.Option(300, "--n-calib", min=1, help="how many training crops calibrate int8 ranges"),
    cache_dir: Path = typer.Option(Path("cache"), help="crop cache folder"),
) -> None:
    """Export MODEL (ONNX: input 'input' float32 NCHW normalised; outputs 'age', 'gender_logit', or 'logits' for
    a classifier) and check parity with PyTorch."""
    from rich.table import Table

    from ..export.formats import ExportError, export_model, get_format
    from .main import console, fail

    try:
        fmt = get_format(format)
    except ExportError as e:
        fail(str(e))
    if not model.is_file():
        fail(f"model file not found: {model}")
    options: dict = {"opset": opset} if "opset" in fmt.options else {}
    if fmt.calibrated:
        options.update(_calibration(model, calib_data, root, n_calib, cache_dir))
    try:
        with console.status(f"exporting {model.name} to {fmt.name} ..."):
            res = export_model(model, fmt.name, out, **options)
    except ExportError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - exporter internals raise many types; show one line
        fail(f"export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    console.print(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB) in {res.seconds:.1f}s", highlight=False)
    if (check_data or "").lower() == "none" or fmt.runner is None or fmt.name == "torch":
        console.print("[yellow]parity check skipped[/]")
        return
    from ..evaluation.parity import check_parity
    from ..runtime import ModelFileError, load_runner
    from ..tasks import task_for_model

    try:
        ref = load_runner(model, "torch")
        candidate = load_runner(res.path, fmt.name)
    except ModelFileError as e:
        fail(str(e))
    task = task_for_model(ref.cfg.name)
    check_data, root = task.default_check_data(ref.meta, check_data, root)
    try:
        x, source = task.parity_inputs(check_data, ref.cfg, n_check, root, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(f"parity inputs: {str(e).strip(chr(39))}")
    age_tol, mean_tol, prob_tol = fmt.parity_tolerances
    tolerance = age_tol if tolerance is None else tolerance
    prob_tolerance = prob_tol if prob_tolerance is None else prob_tolerance
    rep = check_parity(ref, candidate, x, source, tolerance, prob_tolerance, compare=task.compare,
                       mean_age_tolerance=mean_tol)
    t = Table("check", "max |diff|", "mean |diff|", "tolerance", "ok", title=f"parity {fmt.name} vs PyTorch on {source}")

    def row(name: str, diff: float, mean: str, tol: float) -> None:
        if diff == diff:  # not NaN: the model has this output
            t.add_row(name, f"{diff:.2e}", mean, f"{tol:g}", "yes" if diff <= tol else "[red]NO[/]")

    row("age (years)", rep.max_age_diff, f"{rep.mean_age_diff:.2e}" + (f" (<= {mean_tol:g})" if mean_tol < float("inf") else ""),
        tolerance)
    row("P(female)", rep.max_p_female_diff, "", prob_tolerance)
    row("class probability", rep.max_class_prob_diff, "", prob_tolerance)
    row("age std (years)", rep.max_age_std_diff, "", tolerance)
    row("age distribution", rep.max_age_dist_diff, "", prob_tolerance)
    console.print(t)
    if rep.top1_agreement == rep.top1_agreement:
        console.print(f"same top-1 class on {100 * rep.top1_agreement:.1f}% of {rep.n} inputs", highlight=False)
    if not rep.passed:
        worst = " / ".join(w for d, w in ((rep.max_age_diff, f"{rep.max_age_diff:.3g} years (mean {rep.mean_age_diff:.3g})"),
                                          (rep.max_p_female_diff, f"{rep.max_p_female_diff:.3g} in P(female)"),
                                          (rep.max_class_prob_diff, f"{rep.max_class_prob_diff:.3g} in class probability"),
                                          (rep.max_age_std_diff, f"{rep.max_age_std_diff:.3g} years of age std"),
                                          (rep.max_age_dist_diff, f"{rep.max_age_dist_diff:.3g} in age probability"))
                       if d == d)  # the outputs this model has (NaN: absent)
        fail(f"parity check failed: the {fmt.name} file differs from PyTorch by up to {worst} "
             f"(tolerance {tolerance:g} / {prob_tolerance:g})", code=1)


def _calibration(model: Path, calib_data: Optional[str], root: Optional[str], n: int, cache_dir: Path) -> dict:
    """``calibration``/``calibration_source`` options for an int8 export: ``n`` training-split crops through the
    one crop path (the task's parity inputs, split ``train``), never random tensors."""
    from ..runtime import ModelFileError, load_runner
    from ..tasks import task_for_model
    from .main import fail

    try:
        ref = load_runner(model, "torch")
    except ModelFileError as e:
        fail(str(e))
    task = task_for_model(ref.cfg.name)
    data, root = task.default_check_data(ref.meta, calib_data, root)
    if data is None:  # the task's default: its dataset when it is here
        from ..config.roots import dataset_root

        r = dataset_root("utkface", root)
        data = "utkface" if r and Path(r).is_dir() else None
    if data is None or str(data).lower() in ("random", "none"):
        fail("int8 calibration needs real face crops: pass --calib-data utkface (or a manifest / a folder of crops)")
    try:
        x, source = task.parity_inputs(data, ref.cfg, n, root, split="train", cache_dir=cache_dir, seed=1)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(f"calibration inputs: {str(e).strip(chr(39))}")
    return {"calibration": x, "calibration_source": source}
