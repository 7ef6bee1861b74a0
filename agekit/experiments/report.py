"""Grid results -> one row per cell: mean ± std over seeds, parameter counts, final gate values."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cell_params", "render_markdown", "summarize", "write_tables"]



def _metric(task) -> tuple[str, str, str, float, str]:
    """(test metric key, best-val key, label, scale for display, better) from the task object."""
    return (task.report_metric, f"best_val_{task.monitor[0].split('/', 1)[1]}", task.report_label, task.report_scale,
            task.report_better)


def cell_params(config: dict[str, Any]) -> int:
    """Total parameters of the cell's model (meta-device build, exactly what trained)."""
    from ..models.baselines import model_params
    from ..config.train import TrainConfig
    from ..training.runner import task_of

    cfg = TrainConfig.model_validate(config)
    cfg = task_of(cfg).prepare_config(cfg)
    return model_params(cfg.model.name, **cfg.model.kwargs)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample std); the std is None for a single seed: it is undefined there, not 0."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None


def summarize(grid, preset: str, records: list[dict[str, Any]],
              missing: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from ..training.runner import task_of

    cells: dict[str, dict[str, Any]] = {}
    for rec in records:
        c = cells.setdefault(rec["cell"], {"cell": rec["cell"], "runs": []})
        c["runs"].append(rec)
    rows = []
    for name, c in cells.items():
        first = c["runs"][0]["config"]
        task = task_of(first)
        key, vkey, _, scale, _ = _metric(task)
        test = [r["results"].get("test", {}).get(key) for r in c["runs"]]
        val = [r["results"].get(vkey) for r in c["runs"]]
        gates: dict[str, list[float]] = {}
        for r in c["runs"]:
            for g, v in r["gates"].items():
                gates.setdefault(g, []).append(v)
        m, s = _mean_std([None if t is None else t * scale for t in test])
        vm, vs = _mean_std([None if v is None else v * scale for v in val])
        secs = [r["seconds"] for r in c["runs"] if r["seconds"] is not None]
        rows.append({
            "cell": name, "model": first["model"]["name"], "model_kwargs": first["model"]["kwargs"], "task": task.name,
            "metric": key, "n_seeds": len(c["runs"]), "mean": m, "std": s, "val_mean": vm, "val_std": vs,
            "per_seed": {r["seed"]: (None if t is None else t * scale) for r, t in zip(c["runs"], test)},
            "params": cell_params(first),
            "gates": {g: {"mean": _mean_std(v)[0], "std": _mean_std(v)[1], "per_seed": v} for g, v in gates.items()},
            "seconds_per_run": float(np.mean(secs)) if secs else None,
            "run_dirs": [r["out_dir"] for r in c["runs"]],
        })
    base = next((r for r in rows if r["cell"] == grid.baseline_cell), rows[0])
    for r in rows:
        r["params_added"] = r["params"] - base["params"]
    return {"grid": grid.name, "description": grid.description, "paper": grid.paper, "preset": preset,
            "baseline": base["cell"], "seeds": sorted({rec["seed"] for rec in records}), "rows": rows,
            # every run's own record: what `agekit experiment run --merge` joins into a later table
            "records": records,
            # (cell, seed) runs asked for but neither finished nor merged (`--no-train`): the table is partial
            "missing": missing or []}


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if abs(n) >= 1e5 else f"{n / 1e3:.1f}K" if abs(n) >= 1e3 else str(n)


def _pm(m: float, s: float | None, digits: int) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"  # one seed: no std


def render_markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    from ..tasks import get_task

    tasks = [get_task(t) for t in sorted({r["task"] for r in rows})]
    label = " / ".join(_metric(t)[2] for t in tasks)
    better = " / ".join(_metric(t)[4] for t in tasks)
    lines = [f"# {summary['grid']} (preset `{summary['preset']}`, seeds {summary['seeds']})", ""]
    if summary["description"]:
        lines += [summary["description"].strip(), ""]
    lines += [(f"Test {label}, {better} is better: mean ± sample std (ddof=1) over seeds; the checkpoint of each run "
               f"is the best on validation. Params added are relative to `{summary['baseline']}`."), ""]
    lines.append(f"| cell | model | seeds | test {label} | val {label} | params | params added | final gates (per seed) "
                 "| s/run |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = 2
        # per seed, not the mean: a learnt gate's sign differs between seeds, so a mean near 0 would read as "unused"
        gates = ", ".join(f"{g.removesuffix('.gate')}=" + " / ".join(f"{x:+.3f}" for x in v["per_seed"])
                          for g, v in r["gates"].items()) or "–"
        secs = f"{r['seconds_per_run']:.0f}" if r["seconds_per_run"] is not None else "–"
        added = ("+" if r["params_added"] > 0 else "") + _fmt_params(r["params_added"]) if r["params_added"] else "0"
        lines.append(f"| {r['cell']} | {r['model']} | {r['n_seeds']} | {_pm(r['mean'], r['std'], d)} "
                     f"| {_pm(r['val_mean'], r['val_std'], d)} "
                     f"| {_fmt_params(r['params'])} | {added} | {gates} | {secs} |")
    shared: dict[tuple[str, str, str], list[int]] = {}
    for rec in summary.get("records", []):
        if src := rec.get("shared_from"):
            shared.setdefault((rec["cell"], src["grid"], src["cell"]), []).append(rec["seed"])
    if missing := summary.get("missing"):
        by_cell: dict[str, list[int]] = {}
        for m in missing:
            by_cell.setdefault(m["cell"], []).append(m["seed"])
        lines += ["", "Not run yet (this table is partial; the same command without `--no-train` trains them): "
                  + "; ".join(f"`{c}` seeds {sorted(v)}" for c, v in by_cell.items())]
    if shared:
        lines += ["", "Runs shared with another grid (the same config and seed, trained once):"]
        lines += [f"- `{cell}` seeds {sorted(seeds)}: grid `{g}`, cell `{c}`" for (cell, g, c), seeds in shared.items()]
    return "\n".join(lines) + "\n"


def write_tables(summary: dict[str, Any], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=str))
    paths["markdown"].write_text(render_markdown(summary))
    return paths
