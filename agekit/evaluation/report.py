"""Writing an evaluation to disk (results.json, report.md, predictions.csv, PNG plots) and to the terminal."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from .evaluate import EvalResult
from .plots import plot_mae_by_group, plot_scatter

__all__ = ["write_report", "results_table", "markdown_report", "fairness_line", "fairness_lines", "degrade_lines",
           "degrade_verdict", "age_group_lines", "age_group_verdict"]


def _ci(e: dict[str, Any] | None, pct: bool = False, digits: int = 2) -> tuple[str, str]:
    if not e:
        return "-", "-"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.{digits}f}")
    return f(e["value"]), f"[{f(e['ci_low'])}, {f(e['ci_high'])}]"


def _cs_k(r: dict[str, Any]) -> float:
    """k of CS@k (the metric is None when no row has an exact age)."""
    return (r["metrics"].get("cs") or {}).get("k", (r.get("settings") or {}).get("cs_k", 5))


def _overall_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    m = r["metrics"]
    rows = []
    for label, key, pct in (("MAE (years)", "mae", False), (f"CS@{_cs_k(r):g}", "cs", True),
                            ("gender accuracy", "gender_acc", True), ("bias, pred - true (years)", "bias", False)):
        v, ci = _ci(m.get(key), pct)
        rows.append((label, v, ci, str(m[key]["n"]) if m.get(key) else "0"))
    return rows


def _group_lines(groups: list[dict[str, Any]], k: float) -> list[str]:
    lines = [f"| group | n | MAE | 95% CI | bias | CS@{k:g} | gender acc |", "|---|---:|---:|---|---:|---:|---:|"]
    for g in groups:
        v, ci = _ci(g["mae"])
        gacc = "-" if g["gender_acc"] is None else f"{100 * g['gender_acc']:.1f}%"
        lines.append(f"| {g['group']} | {g['n']} | {v} | {ci} | {g['bias']:+.2f} | {100 * g['cs']:.1f}% | {gacc} |")
    return lines


def _interval_lines(iv: dict[str, Any], cal: dict[str, Any]) -> list[str]:
    level = f"{100 * (1 - cal['alpha']):g}%" if cal.get("alpha") is not None else ""
    v, ci = _ci(iv["coverage"], pct=True)
    w, wci = _ci(iv["mean_width"])
    how = (f"split conformal on {cal.get('data')}/{cal.get('split')} (n = {cal.get('n')}), score {cal.get('score')}, "
           f"q = {cal['q']:.3f}" if cal.get("q") is not None else "")
    lines = [f"## Age interval ({level} calibrated)", "", *( [f"Calibration: {how}.", ""] if how else []),
             "| metric | value | 95% CI |", "|---|---:|---|",
             f"| coverage (true age in [age_low, age_high]) | {v} | {ci} |",
             f"| mean width (years) | {w} | {wci} |", f"| median width (years) | {iv['median_width']:.2f} | |"]
    for title, key, extra in (("By true age", "by_age_bin", False),
                              ("By blur (variance of the Laplacian of the crop; low = blurred)", "by_blur", True),
                              ("By face size (inter-ocular distance, source pixels)", "by_face_size", True)):
        if not iv.get(key):
            continue
        lines += ["", f"### {title}", "", "| group | n |" + (" range |" if extra else "") + " coverage | mean width |",
                  "|---|---:|" + ("---|" if extra else "") + "---:|---:|"]
        for g in iv[key]:
            rng = f" {g['range'][0]:.1f}-{g['range'][1]:.1f} |" if extra else ""
            lines.append(f"| {g['group']} | {g['n']} |{rng} {100 * g['coverage']:.1f}% | {g['mean_width']:.2f} |")
    return lines


def markdown_report(r: dict[str, Any], files: dict[str, str]) -> str:
    m, d, k = r["model"], r["data"], _cs_k(r)
    lines = [f"# Evaluation: {m.get('model_name', '')} on {d['name']} / {d['split']}", "",
             f"- model: `{m['path']}` (backend {m['backend']}, input {'x'.join(map(str, m['input_size'][1:]))}, "
             f"flip TTA {'on' if m['tta_flip'] else 'off'})",
             f"- data: `{d['data']}`, split `{d['split']}`: {d['n']} images scored"
             + (f", {d['n_unreadable']} unreadable skipped" if d["n_unreadable"] else "")
             + (f" (random subset of {d['limit']})" if d.get("limit") else ""),
             f"- intervals: {r['settings']['ci']} ({r['settings']['n_boot']} resamples, seed {r['settings']['seed']})",
             f"- agekit {r['agekit_version']}, {r['created']}", "",
             "## Overall", "", "| metric | value | 95% CI | n |", "|---|---:|---|---:|"]
    lines += [f"| {a} | {b} | {c} | {n} |" for a, b, c, n in _overall_rows(r)]
    if m.get("training_test_metrics"):
        t = m["training_test_metrics"]
        lines += ["", "Training run's own test metrics (from the weights file): "
                  + ", ".join(f"{key} = {val:.4g}" for key, val in t.items() if isinstance(val, (int, float)))]
    for title, key in (("By age (true age bin)", "by_age_bin"), ("By gender", "by_gender"), ("By race", "by_race"),
                       ("By source dataset", "by_source")):
        if r.get(key):
            lines += ["", f"## {title}", "", *_group_lines(r[key], k)]
    if r.get("fairness"):
        lines += ["", "## Fairness", "", *fairness_lines(r["fairness"])]
    if r.get("interval"):
        lines += ["", *_interval_lines(r["interval"], m.get("calibration") or {})]
    if r.get("age_groups"):
        lines += ["", *age_group_lines(r["age_groups"])]
    if r.get("degrade"):
        lines += ["", *degrade_lines(r["degrade"])]
    lines += ["", "## Plots", ""]
    for name in ("scatter", "mae_by_age"):
        if name in files:
            lines.append(f"![{name}]({Path(files[name]).name})")
    cols = "path, age, pred, gender, p_female = P(female), pred_gender, gender_prob = P(pred_gender), race, source"
    if r.get("age_groups"):
        cols += ", age_lo, age_hi, group, pred_group, range_error (age-group rows)"
    if r.get("interval"):
        cols += ", age_low, age_high (calibrated interval), blur, inter_ocular (when landmarks)"
    lines += ["", f"Per-image predictions: `{Path(files['predictions']).name}` ({cols}).", ""]
    return "\n".join(lines)


def age_group_verdict(g: dict[str, Any]) -> str:
    """One line: group accuracy with its CI against the majority-class rate."""
    a, mj = g["accuracy"], g["majority"]
    return (f"age-group accuracy {100 * a['value']:.1f}% [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] vs "
            f"majority class ({mj['group']}) {100 * mj['rate']:.1f}%: "
            + ("beats it beyond the 95% CI" if g["beats_majority"] else "does NOT beat it beyond the 95% CI")
            + f"; balanced accuracy {100 * g['balanced_accuracy']:.1f}%; MAE to the group's range "
              f"{g['range_mae']['value']:.2f} years (n = {g['n']})")


def age_group_lines(g: dict[str, Any]) -> list[str]:
    """Markdown: the verdict, the per-group table and the confusion matrix of an age-group evaluation."""
    v, ci = _ci(g["accuracy"], pct=True)
    rv, rci = _ci(g["range_mae"])
    lines = ["## Age groups (interval labels)", "", f"**{age_group_verdict(g)}**", "",
             "| metric | value | 95% CI |", "|---|---:|---|", f"| group accuracy | {v} | {ci} |",
             f"| majority-class rate ({g['majority']['group']}) | {100 * g['majority']['rate']:.1f}% | |",
             f"| balanced accuracy (mean per-group recall) | {100 * g['balanced_accuracy']:.1f}% | |",
             f"| MAE to the group's range (years) | {rv} | {rci} |", "",
             "| group | n | recall | MAE to range | mean predicted age | predicted as this group |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in g["by_group"]:
        if row["n"] == 0 and row["predicted"] == 0:
            continue
        rec = "-" if row["recall"] is None else f"{100 * row['recall']:.1f}%"
        rm = "-" if row["range_mae"] is None else f"{row['range_mae']:.2f}"
        mp = "-" if row["mean_pred"] is None else f"{row['mean_pred']:.1f}"
        lines.append(f"| {row['group']} | {row['n']} | {rec} | {rm} | {mp} | {row['predicted']} |")
    labels, mat = g["confusion"]["labels"], g["confusion"]["matrix"]
    lines += ["", "Confusion (rows: labelled group, columns: predicted group):", "",
              "| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |" for name, row in zip(labels, mat)]
    lines += ["", f"Convention: {g['convention']}."]
    return lines


def fairness_line(f: dict[str, Any]) -> str:
    """One line: the worst group, its MAE and its ratio to the overall MAE against the goal."""
    if f and f.get("overall_mae") is None:
        return "fairness: no exact ages to compare MAE on (age groups only)"
    if not f or f.get("worst_group") is None:
        return "fairness: no grouping has two groups large enough to compare"
    return (f"worst group {f['worst_group']}: MAE {f['worst_mae']:.2f} = {f['ratio']:.2f}x overall "
            f"{f['overall_mae']:.2f} (goal <= {f['goal']:g}x: {'met' if f['met'] else 'NOT met'})")


def fairness_lines(f: dict[str, Any]) -> list[str]:
    lines = [f"- {fairness_line(f)}"]
    for name, g in (f.get("groupings") or {}).items():
        lines.append(f"- {name}: worst {g['worst_group']} (n={g['n']}) MAE {g['worst_mae']:.2f}, "
                     f"{g['ratio']:.2f}x overall ({'met' if g['met'] else 'NOT met'})")
    lines.append(f"- groups: gender, race (UTKFace), source dataset; groups under {f.get('min_n')} images are "
                 "not ranked. Age bins are reported above but are not a fairness group (error grows with age).")
    return lines


def _deg_rows(dg: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(metric, clean, clean CI, degraded, degraded CI) rows of the degradation benchmark."""
    rows = []
    for label, key in (("MAE (years)", "mae"), ("bias, ages 0-12 (years)", "bias_0_12")):
        c, cci = _ci(dg["clean"][key])
        v, vci = _ci(dg["degraded"][key])
        rows.append((label, c, cci, v, vci))
    return rows


def degrade_verdict(dg: dict[str, Any]) -> str:
    bar, ok = dg["bar"], dg["passes"]
    kid = dg["degraded"]["bias_0_12"]
    kid_txt = "no ages 0-12 in the data" if kid is None else (
        f"degraded 0-12 bias {kid['value']:+.2f} (bar within +-{bar['child_bias_abs_max']:g}): "
        f"{'pass' if ok['child_bias'] else 'FAIL'}")
    return (f"degraded/clean MAE {dg['mae_ratio']:.2f}x (bar <= {bar['mae_ratio_max']:g}x): "
            f"{'pass' if ok['mae_ratio'] else 'FAIL'}; {kid_txt}")


def degrade_lines(dg: dict[str, Any]) -> list[str]:
    lines = [f"## Degraded benchmark: `{dg['recipe']}` (seed {dg['seed']}, recipe in {dg['doc']})", "",
             "Same crops, each degraded deterministically (seeded by its index) before the runner.", "",
             "| metric | clean | 95% CI | degraded | 95% CI |", "|---|---:|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in _deg_rows(dg)]
    lines += ["", f"**{degrade_verdict(dg)}**"]
    if dg.get("interval"):
        cv, cci = _ci(dg["interval"]["coverage"], pct=True)
        w, _ = _ci(dg["interval"]["mean_width"])
        lines += ["", f"Calibrated interval on the degraded faces: coverage {cv} {cci}, mean width {w} years."]
    if dg["degraded"].get("by_age_bin"):
        lines += ["", "Degraded, by true age:", "", *_group_lines(dg["degraded"]["by_age_bin"],
                                                                   dg["degraded"]["cs"]["k"])]
    return lines


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, str]:
    """Write all artefacts into ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = result.results
    files = {"predictions": str(out / "predictions.csv"), "results": str(out / "results.json"),
             "report": str(out / "report.md")}
    result.predictions.to_csv(files["predictions"], index=False)
    exact = result.predictions[result.predictions["age"].notna()]
    if len(exact):
        files["scatter"] = str(plot_scatter(exact, out / "scatter.png",
                                            f"{r['model'].get('model_name', '')} on {r['data']['name']}/{r['data']['split']}"))
    if r["by_age_bin"]:
        files["mae_by_age"] = str(plot_mae_by_group(r["by_age_bin"], out / "mae_by_age.png"))
    r["files"] = {k: Path(v).name for k, v in files.items()}
    Path(files["results"]).write_text(json.dumps(r, indent=2, default=str))
    Path(files["report"]).write_text(markdown_report(r, files))
    return files


def results_table(r: dict[str, Any]) -> list[Table]:
    """Rich tables: overall metrics, then MAE per age bin / gender / race."""
    m, d = r["model"], r["data"]
    overall = Table("metric", "value", "95% CI", "n",
                    title=f"{m.get('model_name', '')} [{m['backend']}] on {d['name']}/{d['split']} (n={d['n']})")
    for row in _overall_rows(r):
        overall.add_row(*row)
    tables = [overall]
    for title, key in (("by true age", "by_age_bin"), ("by gender", "by_gender"), ("by race", "by_race"),
                       ("by source", "by_source"), ("by inputs shown (face+body models)", "by_inputs")):
        if not r.get(key):
            continue
        t = Table("group", "n", "MAE", "95% CI", "bias", title=f"MAE {title}")
        for g in r[key]:
            v, ci = _ci(g["mae"])
            t.add_row(g["group"], str(g["n"]), v, ci, f"{g['bias']:+.2f}")
        tables.append(t)
    ag = r.get("age_groups")
    if ag:
        t = Table("group", "n", "recall", "MAE to range", "mean pred", "predicted as",
                  title="age groups (interval labels)", caption=age_group_verdict(ag))
        for row in ag["by_group"]:
            if row["n"] or row["predicted"]:
                t.add_row(row["group"], str(row["n"]), "-" if row["recall"] is None else f"{100 * row['recall']:.1f}%",
                          "-" if row["range_mae"] is None else f"{row['range_mae']:.2f}",
                          "-" if row["mean_pred"] is None else f"{row['mean_pred']:.1f}", str(row["predicted"]))
        tables.append(t)
    iv = r.get("interval")
    if iv:
        cv, cci = _ci(iv["coverage"], pct=True)
        w, wci = _ci(iv["mean_width"])
        t = Table("group", "n", "coverage", "mean width", title=f"age interval: coverage {cv} {cci}, mean width {w} {wci}")
        for key in ("by_age_bin", "by_blur", "by_face_size"):
            for g in iv.get(key) or []:
                t.add_row(g["group"], str(g["n"]), f"{100 * g['coverage']:.1f}%", f"{g['mean_width']:.2f}")
        tables.append(t)
    if r.get("degrade"):
        dg = r["degrade"]
        t = Table("metric", "clean", "95% CI", "degraded", "95% CI",
                  title=f"degraded benchmark: {dg['recipe']} (seed {dg['seed']})", caption=degrade_verdict(dg))
        for row in _deg_rows(dg):
            t.add_row(*row)
        tables.append(t)
    return tables
