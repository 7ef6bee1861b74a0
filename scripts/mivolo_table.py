"""Issue 9's table: does the body help? The face+body model (configs/mivolo_lite0x2_aaf_peta.yaml), 3 seeds.

    python scripts/mivolo_table.py [--runs runs/mivolo_lite0x2_aaf_peta_s{0,1,2}] [--out docs/results/mivolo_body]

For every seed's model it scores, through `agekit eval`'s face+body path (agekit.evaluation.face_body):

* validation (what picks the shipped seed): AAF val face+body MAE and PETA val body-only age-group accuracy;
* test, once: AAF test shown face+body / face only / body only (the head-and-shoulders photo), PETA test body
  only (age-group accuracy against the majority-class rate, gender accuracy), UTKFace test face only.

Writes OUT.json and OUT.md (mean ± std over seeds, and the selected seed's 95% CIs). The selected seed is the
one with the lowest validation MAE the training run recorded (results.json: AAF val face+body rows and PETA
val's distance to the group's range together); test numbers never choose anything.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agekit.evaluation.face_body import evaluate_face_body  # noqa: E402
from agekit.runtime import load_runner  # noqa: E402

CELLS = [  # (name, data, split, inputs)
    ("aaf_val_face+body", "aaf", "val", "face+body"),
    ("peta_val_body", "peta", "val", "body"),
    ("aaf_test_face+body", "aaf", "test", "face+body"),
    ("aaf_test_face", "aaf", "test", "face"),
    ("aaf_test_body", "aaf", "test", "body"),
    ("peta_test_body", "peta", "test", "body"),
    ("utkface_test_face", "utkface", "test", "face"),
]


def _est(d: dict | None) -> dict | None:
    return None if d is None else {k: d[k] for k in ("value", "ci_low", "ci_high") if k in d}


def score(model: Path, threads: int | None) -> dict:
    runner = load_runner(model, "torch", threads=threads)
    out = {}
    for name, data, split, inputs in CELLS:
        t0 = time.perf_counter()
        res = evaluate_face_body(runner, data, split, inputs=inputs, n_boot=1000).results
        m = res["metrics"]
        cell = {"n": res["data"]["n"], "mae": _est(m["mae"]), "gender_acc": _est(m["gender_acc"]),
                "interval": {k: _est(v) for k, v in res.get("interval", {}).items() if k in ("coverage", "mean_width")}
                or None}
        g = res.get("age_groups")
        if g:
            cell["groups"] = {"accuracy": _est(g["accuracy"]), "majority": g["majority"],
                              "beats_majority": g["beats_majority"], "balanced_accuracy": g["balanced_accuracy"],
                              "range_mae": _est(g["range_mae"])}
        out[name] = cell
        print(f"  {name}: n={cell['n']} " + (f"MAE {cell['mae']['value']:.2f} " if cell["mae"] else "")
              + (f"groups {100 * g['accuracy']['value']:.1f}% (majority {100 * g['majority']['rate']:.1f}%) " if g else "")
              + (f"gender {100 * cell['gender_acc']['value']:.1f}% " if cell["gender_acc"] else "")
              + f"[{time.perf_counter() - t0:.0f}s]", flush=True)
    return out


def _values(rows: list[dict], cell: str, path: tuple[str, ...]) -> list[float]:
    vals = []
    for r in rows:
        v = r["scores"].get(cell)
        for k in path:
            v = None if v is None else v.get(k)
        if v is not None:
            vals.append(float(v))
    return vals


def _ms(vals: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    if not vals:
        return "-"
    a = np.asarray(vals) * scale
    return f"{a.mean():{fmt}} ± {a.std(ddof=1) if len(a) > 1 else 0.0:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=[f"runs/mivolo_lite0x2_aaf_peta_s{s}" for s in range(3)])
    ap.add_argument("--out", default="docs/results/mivolo_body")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", action="store_true",
                    help="one row per run (different models, one seed each) instead of mean ± std over seeds")
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="a JSON this script wrote (seeds or variants; repeatable): runs recorded there are not scored "
                         "again, so a table can be rebuilt after the run folders are gone")
    args = ap.parse_args()
    done = {}
    for path in args.reuse:
        if not path.is_file():
            raise SystemExit(f"error: --reuse {path}: no such file")
        doc = json.loads(path.read_text())
        done.update({r["run"]: r for r in doc.get("seeds", []) + doc.get("variants", [])})
    rows = []
    for run in map(Path, args.runs):
        if str(run) in done:
            rows.append(done[str(run)])
            continue
        model = run / "model.safetensors"
        if not model.is_file():
            print(f"skipping {run}: no model.safetensors (training not finished)")
            continue
        val_mae = json.loads((run / "results.json").read_text()).get("best_val_mae")
        print(f"{run.name}: best val MAE (training) {val_mae:.3f}", flush=True)
        rows.append({"run": str(run), "model": str(model), "best_val_mae": val_mae, "scores": score(model, args.threads)})
    if not rows:
        raise SystemExit("no finished runs")
    if args.variants:
        return write_variants(rows, Path(args.out))
    chosen = min(rows, key=lambda r: r["best_val_mae"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"config": "configs/mivolo_lite0x2_aaf_peta.yaml", "seeds": rows, "selected": chosen["run"],
           "selection": "lowest best_val_mae of the training run (validation only)",
           "command": "bash scripts/mivolo_seeds.sh && python scripts/mivolo_table.py"}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))

    lines = [
        "# Does the body help? MiVOLO face+body model, 3 seeds",
        "",
        f"Model `mivolo_lite0x2_128` trained by `configs/mivolo_lite0x2_aaf_peta.yaml` (AAF face + head-and-shoulders "
        f"with exact ages, PETA bodies with age groups; inputs dropped at 20% each), seeds {len(rows)}; every cell "
        "is one model shown the named inputs (`agekit eval MODEL --data D --split S --inputs I`). Mean ± std over "
        f"seeds; the selected seed ({Path(chosen['run']).name}, lowest validation MAE) with its 95% bootstrap CI.",
        "",
        "| data, split | inputs | n | MAE (mean ± std) | selected seed MAE [95% CI] | gender acc. (mean ± std) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, data, split, inputs in CELLS:
        if name == "peta_val_body" or name == "peta_test_body":
            continue
        c = chosen["scores"][name]
        ci = c["mae"]
        lines.append(f"| {data} {split} | {inputs} | {c['n']} | {_ms(_values(rows, name, ('mae', 'value')))} | "
                     f"{ci['value']:.2f} [{ci['ci_low']:.2f}, {ci['ci_high']:.2f}] | "
                     f"{_ms(_values(rows, name, ('gender_acc', 'value')), 100, '.1f')}% |")
    lines += ["", "PETA (GRID + MIT), bodies only (faces not used), five age groups:", "",
              "| split | n | group accuracy (mean ± std) | selected seed [95% CI] | majority-class rate | CI above majority | "
              "balanced acc. | distance to group range (y) | gender acc. |",
              "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name in ("peta_val_body", "peta_test_body"):
        c = chosen["scores"][name]
        g = c["groups"]
        lines.append(f"| {name.split('_')[1]} | {c['n']} | {_ms(_values(rows, name, ('groups', 'accuracy', 'value')), 100, '.1f')}% | "
                     f"{100 * g['accuracy']['value']:.1f}% [{100 * g['accuracy']['ci_low']:.1f}, {100 * g['accuracy']['ci_high']:.1f}] | "
                     f"{100 * g['majority']['rate']:.1f}% ({g['majority']['group']}) | {'yes' if g['beats_majority'] else 'no'} | "
                     f"{_ms(_values(rows, name, ('groups', 'balanced_accuracy')), 100, '.1f')}% | "
                     f"{_ms(_values(rows, name, ('groups', 'range_mae', 'value')))} | "
                     f"{_ms(_values(rows, name, ('gender_acc', 'value')), 100, '.1f')}% |")
    lines += ["", f"Command: `{doc['command']}` (JSON: [{out.with_suffix('.json').name}]({out.with_suffix('.json').name}))."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .json; selected {chosen['run']}")


def write_variants(rows: list[dict], out: Path) -> None:
    """One row per model variant (issue 9: "report all variants side by side")."""
    from agekit.models.weights import read_metadata

    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if all(k in r for k in ("model_name", "epochs", "params_m")):
            continue  # a row reused from an earlier JSON: its run folder may be gone
        logs = sorted(Path(r["run"]).glob("logs/version_*/metrics.csv"))
        if logs:  # validation MAE after each epoch: the like-for-like comparison when budgets differ
            m = pd.read_csv(logs[-1])
            r["val_mae_by_epoch"] = [round(float(v), 2) for v in m.dropna(subset=["val/mae"])["val/mae"]]
        md = read_metadata(r["model"])
        r["model_name"], r["epochs"] = md.get("model_name"), md.get("train_config", {}).get("trainer", {}).get("max_epochs")
        r["params_m"] = sum(t.numel() for t in __import__("safetensors.torch", fromlist=["load_file"]).load_file(r["model"]).values()) / 1e6
    out.with_suffix(".json").write_text(json.dumps({"variants": rows, "command": "python scripts/mivolo_table.py --variants "
                                                    "--runs " + " ".join(r["run"] for r in rows)}, indent=2))

    def mae(r: dict, cell: str) -> str:
        m = r["scores"][cell]["mae"]
        return f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]" if m else "-"

    lines = ["# MiVOLO variants side by side (one seed each, same data and recipe)", "",
             "Validation MAE after each epoch (AAF val face+body rows and PETA val's distance to the group range) is "
             "the like-for-like comparison; the test columns score each run's best checkpoint, whose epoch budget "
             "differs (column `epochs`).", "",
             "| model | params (M) | epochs | val MAE by epoch | AAF test face+body | AAF face only | AAF body only | "
             "PETA test group acc. (majority) | UTKFace test face only |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        g = r["scores"]["peta_test_body"]["groups"]
        by_epoch = ", ".join(f"{v:.2f}" for v in r.get("val_mae_by_epoch", [])) or f"{r['best_val_mae']:.2f}"
        lines.append(f"| `{r['model_name']}` | {r['params_m']:.1f} | {r['epochs']} | {by_epoch} | "
                     f"{mae(r, 'aaf_test_face+body')} | {mae(r, 'aaf_test_face')} | {mae(r, 'aaf_test_body')} | "
                     f"{100 * g['accuracy']['value']:.1f}% ({100 * g['majority']['rate']:.1f}%) | {mae(r, 'utkface_test_face')} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
