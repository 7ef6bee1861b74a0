"""`agekit eval`: score a model on a labelled split and write a report (logic in agekit.evaluation)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def eval_cmd(
    model: Optional[Path] = typer.Argument(None, help="agekit .safetensors/.ckpt model or exported .onnx/.tflite "
                                           "(default: the bundled model)"),
    data: str = typer.Option("utkface", "--data", "-d", help="manifest (CSV/Parquet with a split column) or a dataset name"),
    split: str = typer.Option("test", help="which split to score"),
    root: Optional[str] = typer.Option(None, help="dataset folder for a dataset name [default: AGEKIT_<NAME>_ROOT, "
                                                  "$AGEKIT_DATA_ROOT/<Folder> or ../shared/data/<Folder>]"),
    cs_k: float = typer.Option(5, "--cs-k", help="k for CS@k (share within k years)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="report folder (default: runs/eval/MODEL-DATA-SPLIT)"),
    batch_size: int = typer.Option(128, min=1),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="flip TTA (what training's val/test metrics use)"),
    backend: Optional[str] = typer.Option(None, help="torch, onnx, onnx-int8, tflite or tflite-int8 (default: by file type; onnx or tflite on a "
                                          ".safetensors exports it once into the user cache)"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for inference"),
    cache_dir: Path = typer.Option(Path("cache"), help="decode-once crop cache (shared with training)"),
    n_boot: int = typer.Option(1000, min=10, help="bootstrap resamples for the 95% CIs"),
    seed: int = typer.Option(0, help="bootstrap / subset seed"),
    limit: Optional[int] = typer.Option(None, min=1, help="score a random subset of this many images (quick look)"),
    degrade: Optional[str] = typer.Option(None, "--degrade", help="also score the same crops degraded by this recipe "
                                          "(old-photo; docs/degradation.md): clean vs degraded MAE, 0-12 bias"),
    degrade_seed: int = typer.Option(0, "--degrade-seed", help="seed of the deterministic degradation"),
    inputs: Optional[str] = typer.Option(None, "--inputs", help="face+body models (mivolo_*): what the model is "
                                         "shown: face+body (default), face or body"),
) -> None:
    """Evaluate MODEL: MAE, CS@k, gender accuracy with 95% bootstrap CIs; per age bin, gender, race.

    A classifier (research grids) on fashion_mnist / cifar100 gets top-1 (95% CI), top-5 and per-class top-1.
    """
    from ..data.manifest import ManifestError
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import age_group_verdict, degrade_verdict, fairness_line, results_table, write_report
    from ..export.formats import runner_formats
    from ..models.weights import WeightsError
    from ..runtime import bundled_model_path
    from .main import console, fail

    if backend is not None and backend not in runner_formats():
        fail(f"unknown backend {backend!r}; choose one of {', '.join(runner_formats())}")
    model = model if model is not None else bundled_model_path()
    if not model.is_file():
        fail(f"model file not found: {model}")
    out = out or Path("runs/eval") / (f"{model.stem}-{Path(data).stem}-{split}" + (f"-{degrade}" if degrade else ""))
    task = _task(model, data)
    if task.datasets:  # a task with its own array datasets (classification): one summary line
        if degrade:
            fail("--degrade is for age models (face crops)")
        return _eval_arrays(task, model, data, root, split, out, limit, batch_size, n_boot, seed)
    options = {}
    if inputs is not None:
        if not task.input_kinds:
            fail(f"--inputs is for face+body models; {model.name} takes one face crop")
        options["inputs"] = inputs
    if task.input_kinds and degrade:
        fail("--degrade is implemented for face models only")
    try:
        with console.status(f"evaluating {model.name} on {data}/{split} ..."):
            res = (task.evaluate if task.input_kinds else evaluate)(
                model, data, split, root, cs_k=cs_k, batch_size=batch_size, tta_flip=tta, backend=backend,
                threads=threads, cache_dir=cache_dir, n_boot=n_boot, seed=seed, limit=limit, degrade=degrade,
                degrade_seed=degrade_seed, **options)
    except (FileNotFoundError, ValueError, KeyError, ManifestError, WeightsError) as e:
        fail(str(e).strip("'\""))
    files = write_report(res, out)
    for t in results_table(res.results):
        console.print(t)
    console.print(fairness_line(res.results.get("fairness", {})), highlight=False)
    if res.results.get("age_groups"):
        console.print(age_group_verdict(res.results["age_groups"]), highlight=False)
    dg = res.results.get("degrade")
    if dg:
        console.print(f"clean MAE {dg['clean']['mae']['value']:.2f} -> degraded ({dg['recipe']}) MAE "
                      f"{dg['degraded']['mae']['value']:.2f}; {degrade_verdict(dg)}", highlight=False)
    line = training_test_line(model, data, split)
    if line:
        console.print(line, highlight=False)
    console.print(f"report: {files['report']}  results: {files['results']}  predictions: {files['predictions']}",
                  highlight=False)


def training_test_line(model: Path, data: str, split: str) -> str | None:
    """The training run's own test MAE, only when this evaluation scored the same data and split it did.

    Training scores test only on request (``trainer.test``), so the metrics may be absent. Both the
    metrics and the run's config come from the agekit ``.safetensors`` metadata; other files print nothing.
    """
    from ..models.weights import WeightsError, read_metadata

    if split != "test" or model.suffix != ".safetensors":
        return None
    try:
        meta = read_metadata(model)
    except WeightsError:
        return None
    tm = meta.get("test") or {}
    d = (meta.get("train_config") or {}).get("data") or {}
    if "test/mae" not in tm or d.get("limit_test"):
        return None
    if d.get("manifest"):
        same = Path(data).is_file() and Path(data).resolve() == Path(d["manifest"]).resolve()
    else:  # a dataset name: agekit eval uses the shipped split, as training does with split_file: default
        same = data == d.get("dataset") and not Path(data).is_file() and d.get("split_file", "default") == "default"
    return f"training run reported test/mae {tm['test/mae']:.3f} on the same data and split" if same else None


def _task(model: Path, data: str):
    """The model's task (from its metadata), else the task whose datasets include ``data``, else age."""
    from ..models.registry import is_model
    from ..models.weights import WeightsError, read_metadata
    from ..tasks import TASKS, get_task, task_for_model

    try:
        name = read_metadata(model).get("model_name", "") if model.suffix == ".safetensors" else ""
    except WeightsError:
        name = ""  # evaluate() reports the unreadable file
    if name and is_model(name):
        return task_for_model(name)
    return next((t for t in TASKS.values() if t.uses_dataset(data)), get_task("age"))


def _eval_arrays(task, model: Path, data: str, root: str | None, split: str, out: Path, limit: int | None,
                 batch_size: int, n_boot: int, seed: int) -> None:
    import json

    from ..models.weights import WeightsError
    from .main import console, fail

    try:
        res = task.evaluate(model, data, split, root, batch_size=batch_size, limit=limit, seed=seed, n_boot=n_boot)
    except (FileNotFoundError, ValueError, WeightsError) as e:
        fail(str(e).strip("'\""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    lo, hi = res["top1_ci95"]
    console.print(f"{res['model_name']} on {data}/{split} (n={res['n']}): top-1 {100 * res['top1']:.2f}% "
                  f"[{100 * lo:.2f}, {100 * hi:.2f}], top-5 {100 * res['top5']:.2f}%", highlight=False)
    console.print(f"results: {out / 'results.json'}", highlight=False)
