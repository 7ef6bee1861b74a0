"""Report figures (matplotlib, Agg backend: works on servers without a display)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_scatter", "plot_mae_by_group"]


def plot_scatter(pred: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Predicted vs true age with the y = x line: bias shows as a drift away from the diagonal."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=120)
    true, est = pred["age"].to_numpy(), pred["pred"].to_numpy()
    ax.scatter(true, est, s=6, alpha=0.35 if len(pred) > 500 else 0.7, edgecolors="none", color="tab:blue")
    hi = float(max(np.nanmax(true), np.nanmax(est), 1.0)) * 1.05
    ax.plot([0, hi], [0, hi], "--", color="black", lw=1, label="y = x")
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="true age (years)", ylabel="predicted age (years)",
           title=f"{title or 'Predicted vs true age'}\n(n={len(pred)}, MAE {np.mean(np.abs(est - true)):.2f} years)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_mae_by_group(groups: list[dict[str, Any]], path: str | Path, title: str = "MAE by age bin",
                      xlabel: str = "true age (years)") -> Path:
    """Bar chart of per-group MAE with 95% CI error bars and the group size on each bar."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    names = [g["group"] for g in groups]
    vals = np.array([g["mae"]["value"] for g in groups], dtype=float)
    lo = np.array([g["mae"]["ci_low"] for g in groups], dtype=float)
    hi = np.array([g["mae"]["ci_high"] for g in groups], dtype=float)
    x = np.arange(len(names))
    ax.bar(x, vals, color="tab:orange", yerr=np.vstack([vals - lo, hi - vals]), capsize=4, ecolor="black")
    for xi, v, h, g in zip(x, vals, hi, groups):
        ax.annotate(f"n={g['n']}", (xi, h if np.isfinite(h) else v), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, names)
    ax.set(xlabel=xlabel, ylabel="MAE (years)", title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
