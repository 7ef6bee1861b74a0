"""The evidence column of docs/results/README.md: for a claim "cell B beats cell A" in a committed grid result
(docs/results/<grid>.json, written by `agekit experiment run`), the difference of the seed means with a 95%
Welch t-interval over the per-seed test metrics.

    python scripts/claims_table.py docs/results/hybrid_vs_convnext_cpu.json convnext hybrid_direct49

Prints one line: mean(A), mean(B), B - A with its interval. With 3 seeds the interval is wide: that is
the honest width of the evidence.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path)
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    rows = {r["cell"]: r for r in json.loads(args.result.read_text())["rows"]}
    a, b = (np.array(list(rows[c]["per_seed"].values()), dtype=np.float64) for c in (args.a, args.b))
    d, lo, hi = welch(a, b)
    print(f"{args.a} {a.mean():.2f} ± {a.std(ddof=1):.2f} | {args.b} {b.mean():.2f} ± {b.std(ddof=1):.2f} | "
          f"{args.b} - {args.a} = {d:+.2f} [{lo:+.2f}, {hi:+.2f}] (95% Welch t, {len(a)} + {len(b)} seeds)")


if __name__ == "__main__":
    main()
