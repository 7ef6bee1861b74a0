"""The cross-dataset protocol: train on A, test on B, as one table of MAEs with 95% CIs.

Every measured cell is :func:`agekit.evaluation.evaluate.evaluate` -- the very function behind
``agekit eval`` -- on the test split of one dataset (one path: the same crops, TTA and bootstrap CIs).
A model's training set is read from its own metadata (``train_config.data``: ``sources``, else the
manifest, else the dataset), never typed in by hand. Configs of models that are not trained yet can be
listed too (``pending``): their row shows the training set the config names and "not trained yet".
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["pooled", "train_set_of", "train_set_of_config", "cross_dataset", "cross_dataset_markdown", "write_cross_dataset",
           "NOT_TRAINED"]

NOT_TRAINED = "not trained yet"


def _label(names: list[tuple[str, float]]) -> str:
    if len(names) == 1:
        return names[0][0]
    return "+".join(f"{n}" if w == 1.0 else f"{n}(w={w:g})" for n, w in names)


def train_set_of(model: str | Path) -> dict[str, Any]:
    """``{"label", "datasets"}`` of the data a model file was trained on, from its metadata."""
    from ..models.weights import read_metadata

    from pydantic import ValidationError

    from ..config.train import TrainConfig

    meta = read_metadata(model)
    data = (meta.get("train_config") or {}).get("data")
    if not data:
        return {"label": "unknown (no train_config in the model file)", "datasets": []}
    try:
        return _train_set(TrainConfig.model_validate({"data": data}))
    except ValidationError:
        return {"label": "unknown (the model file's train_config.data does not validate)", "datasets": []}


def train_set_of_config(config: str | Path) -> dict[str, Any]:
    """The same, for a training config that has not been trained yet."""
    from ..config.train import load_config

    return _train_set(load_config(config))


def _train_set(cfg: Any) -> dict[str, Any]:
    """Label and dataset names of a TrainConfig's sources (``data.sources``, else its one dataset/manifest)."""
    names = [(s.name, s.weight) for s in cfg.data.source_list()]
    return {"label": _label(names), "datasets": [n for n, _ in names]}


def _shown(path: str | Path) -> str:
    """A model path as the table shows it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _cell(res: Any) -> dict[str, Any]:
    r = res.results
    m = r["metrics"]
    f = r.get("fairness") or {}
    return {"mae": m["mae"]["value"], "ci_low": m["mae"]["ci_low"], "ci_high": m["mae"]["ci_high"], "n": r["data"]["n"],
            "bias": m["bias"]["value"], "gender_acc": (m["gender_acc"] or {}).get("value"),
            "fairness": {k: f.get(k) for k in ("worst_group", "worst_mae", "overall_mae", "ratio", "goal", "met")}}


def pooled(predictions: Sequence[Any], **summary_kwargs: Any) -> dict[str, Any]:
    """One model's test sets pooled (their eval predictions tables concatenated): MAE with CI, by source, and
    the fairness record, so the source grouping (UTKFace vs AAF) is ranked against the pooled MAE."""
    import pandas as pd

    from ..evaluation.evaluate import summarize

    df = pd.concat(list(predictions), ignore_index=True)
    df["gender"] = df["gender"].astype("Int64")
    s = summarize(df, **summary_kwargs)
    m = s["metrics"]["mae"]
    return {"mae": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": m["n"],
            "by_source": [{"group": g["group"], "n": g["n"], "mae": g["mae"]["value"]} for g in s["by_source"]],
            "fairness": s["fairness"]}


def cross_dataset(models: Sequence[str | Path], datas: Sequence[str], split: str = "test",
                  pending: Sequence[str | Path] = (), reports_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None, **eval_kwargs: Any) -> dict[str, Any]:
    """Score every model on ``split`` of every dataset in ``datas``; returns the table as a dict.

    ``eval_kwargs`` go to :func:`evaluate` unchanged (cache_dir, n_boot, seed, tta_flip, backend, ...).
    ``reports_dir``: also write each cell's full ``agekit eval`` report (report.md, results.json) there.
    """
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import write_report

    rows = []
    for model in models:
        ts = train_set_of(model)
        cells, preds = {}, []
        for data in datas:
            if progress:
                progress(f"{Path(model).name} ({ts['label']}) -> {data}/{split}")
            res = evaluate(model, data, split, **eval_kwargs)
            cells[data] = {**_cell(res), "in_domain": data in ts["datasets"], "status": "measured"}
            preds.append(res.predictions)
            if reports_dir is not None:
                write_report(res, Path(reports_dir) / f"{Path(model).stem}-{Path(data).stem}-{split}")
        row = {"model": _shown(model), "train_set": ts["label"], "train_datasets": ts["datasets"], "cells": cells}
        if len(preds) > 1:
            row["pooled"] = pooled(preds, n_boot=eval_kwargs.get("n_boot", 1000), seed=eval_kwargs.get("seed", 0))
        rows.append(row)
    for config in pending:
        ts = train_set_of_config(config)
        rows.append({"model": None, "config": str(config), "train_set": ts["label"], "train_datasets": ts["datasets"],
                     "cells": {d: {"status": NOT_TRAINED, "in_domain": d in ts["datasets"]} for d in datas}})
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in eval_kwargs.items()}
    return {"split": split, "data": list(datas), "rows": rows, "settings": settings,
            "ci": "95% percentile bootstrap over test images (agekit eval)",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _fmt(c: dict[str, Any]) -> str:
    if c.get("status") != "measured":
        return c.get("status", "-")
    return f"{c['mae']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" + (" (in-domain)" if c["in_domain"] else "")


def cross_dataset_markdown(table: dict[str, Any], command: str | None = None) -> str:
    datas, split = table["data"], table["split"]
    lines = [f"# Cross-dataset MAE: train set -> test set ({split} split)", "",
             "Each measured cell is `agekit eval`'s own `evaluate()` on the dataset's shipped test split: MAE in "
             f"years with its {table['ci']} CI. The training set is read from each model file's metadata; "
             "\"in-domain\" marks a test set the model was trained on.", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    lines += ["| train set | model | " + " | ".join(f"-> {d}" for d in datas) + " |",
              "|---|---|" + "---|" * len(datas)]
    for r in table["rows"]:
        who = f"`{r['model']}`" if r.get("model") else f"config `{r['config']}`"
        lines.append(f"| {r['train_set']} | {who} | " + " | ".join(_fmt(r["cells"][d]) for d in datas) + " |")
    measured = [(r, d, r["cells"][d]) for r in table["rows"] for d in datas if r["cells"][d].get("status") == "measured"]
    if measured:
        lines += ["", "| train set -> test set | n | MAE | 95% CI | bias | gender acc | worst fairness group |",
                  "|---|---:|---:|---|---:|---:|---|"]
        for r, d, c in measured:
            f = c["fairness"]
            worst = ("-" if not f.get("worst_group") else
                     f"{f['worst_group']}: {f['worst_mae']:.2f} = {f['ratio']:.2f}x overall "
                     f"({'meets' if f['met'] else 'misses'} <= {f['goal']:g}x)")
            gacc = "-" if c["gender_acc"] is None else f"{100 * c['gender_acc']:.1f}%"
            lines.append(f"| {r['train_set']} -> {d} | {c['n']} | {c['mae']:.2f} | [{c['ci_low']:.2f}, {c['ci_high']:.2f}] "
                         f"| {c['bias']:+.2f} | {gacc} | {worst} |")
    for r in table["rows"]:
        if r.get("pooled"):
            p, f = r["pooled"], r["pooled"]["fairness"]
            lines += ["", f"Pooled test sets of `{r['model']}` ({r['train_set']}): MAE {p['mae']:.2f} "
                      f"[{p['ci_low']:.2f}, {p['ci_high']:.2f}], n = {p['n']}; "
                      + ", ".join(f"{g['group']} {g['mae']:.2f} (n = {g['n']})" for g in p["by_source"]) + "."]
            for name, g in (f.get("groupings") or {}).items():
                lines.append(f"- fairness, {name}: worst {g['worst_group']} MAE {g['worst_mae']:.2f} = {g['ratio']:.2f}x "
                             f"pooled ({'meets' if g['met'] else 'misses'} the <= {g['goal']:g}x goal)")
            if f.get("worst_group"):
                lines.append(f"- worst group overall: {f['worst_group']}, {f['ratio']:.2f}x "
                             f"({'met' if f['met'] else 'NOT met'}). Age bins are not a fairness group.")
    lines.append("")
    return "\n".join(lines)


def write_cross_dataset(table: dict[str, Any], out: str | Path, command: str | None = None) -> tuple[Path, Path]:
    """``out``.md and ``out``.json (``out`` without suffix, or with .md/.json)."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix in (".md", ".json") else out
    base.parent.mkdir(parents=True, exist_ok=True)
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    md.write_text(cross_dataset_markdown(table, command))
    js.write_text(json.dumps({**table, "command": command}, indent=2, default=str))
    return md, js
