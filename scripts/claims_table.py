"""The evidence column of docs/results/README.md: for a claim "cell B beats cell A" in a committed grid result
(docs/results/<grid>.json, written by `agekit experiment run`), the difference of the seed means with a 95%
Welch t-interval over the per-seed test metrics.

    python scripts/claims_table.py docs/results/hybrid_vs_convnext_cpu.json convnext hybrid_direct49

Prints one line: mean(A), mean(B), B - A with its interval. With 3 seeds the interval is wide: that is
the honest width of the evidence.

With fewer than two seeds per cell a seed interval cannot be had. Then give each cell's per-image predictions
on the same test images (`agekit eval <cell>/seed0/model.safetensors --out D` writes D/predictions.csv):

    python scripts/claims_table.py --paired A/predictions.csv B/predictions.csv

prints B - A in MAE with a paired 95% bootstrap interval over the test images. It measures test-set sampling only,
not seed-to-seed variation, so it is narrower than the Welch interval and says so.

A same-setting control run (docs/results/controls/*.json: one seed of a cell trained again in a later session)
joins a cell as one more run with ``--control CELL=PATH`` (repeatable), so the "control counted" intervals on the
claims page come from this script too:

    python scripts/claims_table.py docs/results/lite_hybrid_depth_cpu.json depth12 depth1 \
        --control depth12=docs/results/controls/lite_hybrid_direct49_seed0_rerun.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(mean(b) - mean(a), low, high) of the 95% Welch t-interval."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(b.mean() - a.mean())
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else float("inf")
    t = float(stats.t.ppf(0.975, df)) if math.isfinite(df) else 1.96
    return diff, diff - t * se, diff + t * se


def paired(a_csv: Path, b_csv: Path, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, float, float, int]:
    """(MAE of A, MAE of B, B - A, low, high, n): a paired percentile bootstrap over the images both scored."""
    import pandas as pd

    a, b = (pd.read_csv(p, usecols=["path", "age", "pred"]).dropna() for p in (a_csv, b_csv))
    m = a.merge(b, on=["path", "age"], suffixes=("_a", "_b"))
    if len(m) == 0:
        raise SystemExit(f"{a_csv} and {b_csv} share no scored images")
    ea, eb = (np.abs(m[f"pred_{k}"].to_numpy() - m["age"].to_numpy()) for k in ("a", "b"))
    d = eb - ea
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    return float(ea.mean()), float(eb.mean()), float(d.mean()), float(lo), float(hi), len(d)


def control_value(spec: str, rows: dict[str, dict], cells: tuple[str, str]) -> tuple[str, float]:
    """``CELL=PATH`` -> (cell, the control record's value of the metric the grid's row reports)."""
    cell, sep, path = spec.partition("=")
    if not sep or not cell or not path:
        raise SystemExit(f"--control {spec!r}: expected CELL=PATH")
    if cell not in cells:
        raise SystemExit(f"--control {spec!r}: cell {cell!r} is neither {cells[0]!r} nor {cells[1]!r}")
    metric = rows[cell]["metric"]
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SystemExit(f"--control {spec!r}: cannot read {path} ({e.strerror})") from None
    try:
        test = json.loads(text)["record"]["results"]["test"]
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--control {spec!r}: not a control record ({e!r})") from None
    if metric not in test:
        raise SystemExit(f"--control {spec!r}: the record has no {metric!r} (it has {', '.join(test)})")
    return cell, float(test[metric])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="grid result JSON, or with --paired A's predictions.csv")
    ap.add_argument("a", help="baseline cell, or with --paired B's predictions.csv")
    ap.add_argument("b", nargs="?", help="compared cell")
    ap.add_argument("--paired", action="store_true", help="per-image paired bootstrap of two predictions.csv")
    ap.add_argument("--control", action="append", default=[], metavar="CELL=PATH",
                    help="add a control re-run (docs/results/controls/*.json) to CELL as one more run")
    args = ap.parse_args()
    if args.paired:
        ma, mb, d, lo, hi, n = paired(args.result, Path(args.a))
        print(f"A {ma:.2f} | B {mb:.2f} | B - A = {d:+.2f} [{lo:+.2f}, {hi:+.2f}] (95% paired bootstrap over {n} "
              f"test images; one seed each: test-set sampling only, not seed variation)")
        return
    if args.b is None:
        ap.error("give the grid result, the baseline cell and the compared cell")
    rows = {r["cell"]: r for r in json.loads(args.result.read_text())["rows"]}
    for c in (args.a, args.b):
        if c not in rows:
            raise SystemExit(f"{args.result}: no cell {c!r} (cells: {', '.join(rows)})")
        if len(rows[c]["per_seed"]) < 2:
            raise SystemExit(f"{args.result}: cell {c!r} has one seed, so no seed interval; use --paired on the "
                             f"two runs' predictions.csv")
    extra: dict[str, list[float]] = {}
    for spec in args.control:
        cell, value = control_value(spec, rows, (args.a, args.b))
        extra.setdefault(cell, []).append(value)
    a, b = (np.array(list(rows[c]["per_seed"].values()) + extra.get(c, []), dtype=np.float64)
            for c in (args.a, args.b))
    d, lo, hi = welch(a, b)
    runs = f"{len(a)} + {len(b)} " + ("runs, controls counted" if extra else "seeds")
    print(f"{args.a} {a.mean():.2f} ± {a.std(ddof=1):.2f} | {args.b} {b.mean():.2f} ± {b.std(ddof=1):.2f} | "
          f"{args.b} - {args.a} = {d:+.2f} [{lo:+.2f}, {hi:+.2f}] (95% Welch t, {runs})")


if __name__ == "__main__":
    main()
