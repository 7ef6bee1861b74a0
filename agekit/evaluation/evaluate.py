"""Score a model on a labelled split: predictions per image, then metrics with bootstrap CIs.

Crops come from :func:`agekit.data.cache.build_crop_cache` over the whole table at the model's input
size, exactly as the training data module builds them, so the UTKFace test numbers here match the
training run's (and reuse its cache instead of decoding 23k JPEGs again). The crops follow the one
crop path (:class:`agekit.data.crops.CropSpec`): photos with landmarks are aligned exactly as
``agekit predict`` aligns its detections, so eval and predict score the same faces.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config.roots import dataset_root
from ..data.adapters import ADAPTERS, get_adapter
from ..data.cache import build_crop_cache
from ..data.crops import CropSpec
from ..data.datasets import resolve_manifest
from ..data.manifest import has_intervals, interval_rows, read_manifest
from ..data.transforms import normalize
from ..runtime import Runner, load_runner
from ..runtime.runner import reported_gender
from .metrics import age_bin_labels, age_bin_names, assign_groups, estimate, group_metrics, group_set, range_error

__all__ = ["EvalResult", "load_eval_table", "predict_outputs", "require_split", "scored_split", "ScoredSplit", "summarize",
           "add_group_columns", "fairness", "interval_summary", "crop_blur", "degrade_summary", "evaluate",
           "GENDER_NAMES", "FAIRNESS_GOAL", "FAIRNESS_GROUPINGS", "FAIRNESS_MIN_N"]

GENDER_NAMES = {0: "male", 1: "female"}
# Fairness (issue 8, section 7): per-group MAE for these groupings; the goal is worst group MAE <= 1.3x overall.
# Age bins are reported too but are not a fairness group: error grows with age by nature (a 70-year-old's age
# is less certain than a 5-year-old's), so a ratio over age bins would measure the task, not a bias.
FAIRNESS_GOAL = 1.3
FAIRNESS_GROUPINGS = {"gender": "by_gender", "race": "by_race", "source": "by_source"}
FAIRNESS_MIN_N = 30  # smaller groups are listed in the tables but not ranked: their MAE is mostly noise


def load_eval_table(data: str | Path, root: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """(manifest with a split column, short data name) for a manifest path or a dataset name.

    Several, comma-separated (``utkface,aaf``), are pooled into one table (paths made absolute, each row's
    ``source`` kept): a conformal calibration over both populations covers both.
    """
    data = str(data)
    p = Path(data)
    if "," in data and not p.is_file():
        if root is not None:
            raise ValueError("--root applies to one dataset; pool datasets found by their default roots")
        from ..data.manifest import resolve_paths

        parts, names = [], [d.strip() for d in data.split(",") if d.strip()]
        for name in names:
            part, short = load_eval_table(name)
            part = part.assign(path=[str(x) for x in resolve_paths(part)])
            part["source"] = part["source"].fillna(short).astype("string") if "source" in part else short
            parts.append(part)
        df = pd.concat(parts, ignore_index=True)
        df.attrs = {"root": "/"}
        return df, "+".join(names)
    if p.suffix.lower() in (".csv", ".parquet") or p.is_file():
        df = read_manifest(p)
        if "split" not in df.columns:
            raise ValueError(f"manifest {p} has no split column; add one (e.g. `agekit data prepare --split ...`)")
        return df, p.stem
    get_adapter(data)  # raises with the list of known names
    root = dataset_root(data, root)
    if root is None:
        raise ValueError(f"dataset {data!r} needs --root (known datasets: {', '.join(sorted(ADAPTERS))})")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{data} folder not found: {root} (pass --root)")
    return resolve_manifest(data, str(root), None, "default"), data


def predict_outputs(runner: Runner, crops: np.ndarray, index: np.ndarray, batch_size: int = 128,
                    tta_flip: bool = True, degrade: str | None = None,
                    degrade_seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """(every per-face output of :meth:`Runner.predict` for ``crops[index]``, seconds): age, p_female,
    age_std, age_low/age_high ... as the model has them (vector outputs such as ``age_dist`` are dropped).

    ``degrade``: a recipe of :data:`agekit.data.degrade.DEGRADATIONS` applied to each crop before the
    runner, seeded by ``(degrade_seed, row index)`` so every run degrades an image the same way.
    """
    import torch

    from ..data.degrade import degrade_indexed

    parts: dict[str, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    for start in range(0, len(index), batch_size):
        idx = index[start:start + batch_size]
        x = torch.from_numpy(np.asarray(crops[idx])).permute(0, 3, 1, 2)
        if degrade is not None:
            x = degrade_indexed(x.contiguous(), idx, degrade_seed, degrade)
        x = normalize(x, runner.cfg).numpy()
        out = runner.predict(x, tta_flip=tta_flip)
        for k, v in out.items():
            v = np.asarray(v)
            if v.ndim == 1:
                parts.setdefault(k, []).append(v)
    seconds = time.perf_counter() - t0
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}, seconds


@dataclass
class ScoredSplit:
    """One split of a labelled table, cropped by the one crop path at a runner's input size."""

    df: pd.DataFrame
    data_name: str
    crops: np.ndarray
    index: np.ndarray       # rows of df (and crops) to score
    in_split: np.ndarray    # bool per row of df
    ok: np.ndarray          # bool per row of df: the crop could be made
    errors: list
    spec: CropSpec


def require_split(df: pd.DataFrame, split: str) -> None:
    """A clear error for a split the table does not have, naming the ones it has."""
    splits = sorted(df["split"].dropna().unique())
    if split not in splits:
        raise ValueError(f"split {split!r} not in the data (has: {', '.join(map(str, splits))})")


def scored_split(runner: Runner, data: str | Path, split: str, root: str | Path | None = None,
                 cache_dir: str | Path = "cache", crop: str = "auto", limit: int | None = None,
                 seed: int = 0) -> ScoredSplit:
    """The rows of ``split`` to score and their crops: what ``agekit eval`` and ``agekit calibrate`` share.

    ``limit`` keeps a seeded random subset of the split.
    """
    df, data_name = load_eval_table(data, root)
    require_split(df, split)
    size = runner.cfg.input_size[-1]
    spec = CropSpec(crop)  # type: ignore[arg-type]
    crops, ok, errors = build_crop_cache(df, size, cache_dir, spec)
    in_split = (df["split"] == split).to_numpy()
    index = np.flatnonzero(in_split & ok)
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    if len(index) == 0:
        from ..data.manifest import FACE_BOX, PERSON_BOX, landmarks_array

        body = (df[FACE_BOX].isna().any(axis=1) & df[PERSON_BOX].notna().all(axis=1)).to_numpy()
        body = body & np.isnan(landmarks_array(df)).all(axis=(1, 2))
        if body[in_split].all():
            raise ValueError(f"{data_name}/{split} has person (body) crops only, no faces, and this model scores face "
                             "crops: evaluate a model that takes body crops")
        raise ValueError(f"split {split!r} has no readable images")
    return ScoredSplit(df, data_name, crops, index, in_split, ok, errors, spec)


def crop_blur(crops: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sharpness per crop: variance of the Laplacian of the grey crop (low = blurred)."""
    import cv2

    out = np.empty(len(index), dtype=np.float64)
    for i, j in enumerate(index):
        grey = cv2.cvtColor(np.ascontiguousarray(crops[j]), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
    return out


def _inter_ocular(sub: pd.DataFrame) -> np.ndarray:
    """Distance between the eye landmarks in source pixels (NaN without landmarks): the face size of a photo."""
    from ..data.manifest import landmarks_array

    lms = landmarks_array(sub)
    return np.hypot(*(lms[:, 0] - lms[:, 1]).T)


def _group_rows(pred: pd.DataFrame, col: str, order: list[str], n_boot: int, seed: int, k: float) -> list[dict]:
    rows = []
    for g in order:
        sub = pred[pred[col] == g]
        if len(sub) == 0:
            continue
        err = (sub["pred"] - sub["age"]).to_numpy(dtype=np.float64)
        known = sub["gender"].notna() & sub["p_female"].notna()
        correct = ((sub.loc[known, "p_female"] > 0.5) == (sub.loc[known, "gender"] == 1)).to_numpy(dtype=np.float64)
        rows.append({
            "group": g, "n": int(len(sub)),
            "mae": estimate(np.abs(err), n_boot=n_boot, seed=seed).to_dict(),
            "bias": float(err.mean()),
            "cs": float(np.mean(np.abs(err) <= k)),
            "gender_acc": float(correct.mean()) if len(correct) else None,
        })
    return rows


def _interval_rows(pred: pd.DataFrame, groups: pd.Series, order: list[str]) -> list[dict[str, Any]]:
    rows = []
    for g in order:
        sub = pred[(groups == g).to_numpy()]
        if len(sub):
            rows.append({"group": g, "n": int(len(sub)), "coverage": float(sub["_inside"].mean()),
                         "mean_width": float(sub["_width"].mean())})
    return rows


def _tercile_rows(pred: pd.DataFrame, col: str, names: tuple[str, str, str]) -> list[dict[str, Any]]:
    v = pred[col].to_numpy(dtype=np.float64)
    fin = np.isfinite(v)
    if fin.sum() < 3:
        return []
    edges = np.quantile(v[fin], [1 / 3, 2 / 3])
    t = np.where(~fin, -1, np.digitize(v, edges))
    rows = []
    for k, name in enumerate(names):
        m = t == k
        if m.any():
            rows.append({"group": name, "n": int(m.sum()), "range": [float(v[m].min()), float(v[m].max())],
                         "coverage": float(pred["_inside"].to_numpy()[m].mean()),
                         "mean_width": float(pred["_width"].to_numpy()[m].mean())})
    return rows


def interval_summary(pred: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Coverage of the calibrated interval (share of true ages in [age_low, age_high]) with a bootstrap CI,
    mean width, and both per true-age bin, per blur tercile (variance of the Laplacian of the crop) and
    per face-size tercile (inter-ocular distance, photos with landmarks)."""
    lo, hi, y = (pred[c].to_numpy(dtype=np.float64) for c in ("age_low", "age_high", "age"))
    inside = ((lo <= y) & (y <= hi)).astype(np.float64)
    width = hi - lo
    p = pred.assign(_inside=inside, _width=width)
    out: dict[str, Any] = {
        "coverage": estimate(inside, n_boot=n_boot, seed=seed).to_dict(),
        "mean_width": estimate(width, n_boot=n_boot, seed=seed).to_dict(),
        "median_width": float(np.median(width)) if len(width) else float("nan"),
        "by_age_bin": _interval_rows(p, pd.Series(age_bin_labels(y)), age_bin_names()),
        "by_blur": _tercile_rows(p, "blur", ("blurriest third", "middle third", "sharpest third"))
        if "blur" in p.columns else [],
        "by_face_size": _tercile_rows(p, "inter_ocular", ("smallest third", "middle third", "largest third"))
        if "inter_ocular" in p.columns else [],
    }
    return out


def _worst(groups: list[dict], overall: float, min_n: int, prefix: str = "") -> dict[str, Any] | None:
    ranked = [g for g in groups if g["n"] >= min_n]
    if not ranked:
        return None
    w = max(ranked, key=lambda g: g["mae"]["value"])
    ratio = w["mae"]["value"] / overall if overall > 0 else float("inf")
    return {"worst_group": f"{prefix}{w['group']}", "worst_mae": float(w["mae"]["value"]), "overall_mae": overall,
            "ratio": float(ratio), "goal": FAIRNESS_GOAL, "met": bool(ratio <= FAIRNESS_GOAL), "n": int(w["n"]),
            "groups_ranked": len(ranked)}


def fairness(summary: dict[str, Any], min_n: int = FAIRNESS_MIN_N) -> dict[str, Any]:
    """Worst group MAE against the overall MAE, per grouping (gender, race, source) and over all of them.

    ``{worst_group, worst_mae, overall_mae, ratio, goal, met, n, groupings: {name: {...same keys}}}``; a
    grouping with fewer than two groups of at least ``min_n`` rows cannot be compared and is left out.
    """
    if not summary["metrics"].get("mae"):  # no exact ages (age groups only): nothing to rank by MAE
        return {"worst_group": None, "worst_mae": None, "overall_mae": None, "ratio": None, "goal": FAIRNESS_GOAL,
                "met": None, "n": None, "groupings": {}, "min_n": min_n, "note": "no exact ages in the data"}
    overall = float(summary["metrics"]["mae"]["value"])
    per: dict[str, Any] = {}
    for name, key in FAIRNESS_GROUPINGS.items():
        groups = summary.get(key) or []
        if sum(g["n"] >= min_n for g in groups) >= 2:
            per[name] = _worst(groups, overall, min_n)
    worst = max(((n, w) for n, w in per.items()), key=lambda t: t[1]["worst_mae"], default=None)
    top = ({**worst[1], "worst_group": f"{worst[0]}={worst[1]['worst_group']}"} if worst else
           {"worst_group": None, "worst_mae": None, "overall_mae": overall, "ratio": None, "goal": FAIRNESS_GOAL,
            "met": None, "n": None, "groups_ranked": 0})
    top.pop("groups_ranked", None)
    return {**top, "groupings": per, "min_n": min_n,
            "note": "groups: gender, race (UTKFace), source dataset; age bins are reported but are not a "
                    "fairness group (error grows with age by nature)"}


def summarize(pred: pd.DataFrame, cs_k: float = 5, n_boot: int = 1000, seed: int = 0,
              fairness_min_n: int = FAIRNESS_MIN_N, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics with 95% percentile-bootstrap CIs from a predictions table.

    ``pred`` needs columns age, pred, gender (0/1/NA), p_female (P(female)) and optionally race and
    source (the dataset of each row). Works from the table alone, so a saved predictions.csv can be
    re-scored later. ``by_source`` breaks the metrics down by source dataset; ``fairness`` names the
    worst gender / race / source group and its ratio to the overall MAE (see :func:`fairness`).

    Age groups: rows with no exact age but ``age_lo``/``age_hi`` (PETA) are scored in ``age_groups`` by
    :func:`agekit.evaluation.metrics.group_metrics` (group accuracy against the majority-class rate, MAE to the
    group's range; ``groups`` is the data's full group set). MAE, CS@k, bias and the per-bin tables use the
    exact-age rows only (``None`` when there are none); gender accuracy uses every row with a known gender.
    """
    known = (pred["gender"].notna() & pred["p_female"].notna()).to_numpy()
    correct = ((pred["p_female"][known] > 0.5) == (pred["gender"][known] == 1)).to_numpy(dtype=np.float64)
    by_group = _group_rows_mask(pred)
    full = pred
    pred = pred[pred["age"].notna().to_numpy()]
    err = (pred["pred"] - pred["age"]).to_numpy(dtype=np.float64)
    exact = len(err) > 0
    metrics = {
        "mae": estimate(np.abs(err), n_boot=n_boot, seed=seed).to_dict() if exact else None,
        "cs": {"k": cs_k, **estimate((np.abs(err) <= cs_k).astype(np.float64), n_boot=n_boot, seed=seed).to_dict()}
        if exact else None,
        "gender_acc": estimate(correct, n_boot=n_boot, seed=seed).to_dict() if len(correct) else None,
        "bias": estimate(err, n_boot=n_boot, seed=seed).to_dict() if exact else None,
    }
    pred = pred.assign(age_bin=age_bin_labels(pred["age"].to_numpy()),
                       gender_name=pred["gender"].map(GENDER_NAMES).astype(object))
    out = {"metrics": metrics,
           "by_age_bin": _group_rows(pred, "age_bin", age_bin_names(), n_boot, seed, cs_k),
           "by_gender": _group_rows(pred, "gender_name", list(GENDER_NAMES.values()), n_boot, seed, cs_k),
           "by_race": []}
    if "race" in pred.columns and pred["race"].notna().any():
        races = sorted(str(r) for r in pred["race"].dropna().unique())
        out["by_race"] = _group_rows(pred.assign(race=pred["race"].astype(object)), "race", races, n_boot, seed, cs_k)
    out["by_source"] = []
    if "source" in pred.columns and pred["source"].notna().any():
        srcs = sorted(str(r) for r in pred["source"].dropna().unique())
        out["by_source"] = _group_rows(pred.assign(source=pred["source"].astype(object)), "source", srcs,
                                       n_boot, seed, cs_k)
    out["fairness"] = fairness(out, fairness_min_n)
    if exact and "age_low" in pred.columns and "age_high" in pred.columns:
        out["interval"] = interval_summary(pred, n_boot, seed)
    if by_group.any():
        g = full[by_group]
        out["age_groups"] = group_metrics(g["pred"].to_numpy(), g["age_lo"].to_numpy(), g["age_hi"].to_numpy(),
                                          groups, n_boot, seed)
    return out


def _group_rows_mask(pred: pd.DataFrame) -> np.ndarray:
    """Rows of a predictions table labelled by an age group only."""
    if "age_lo" not in pred.columns or "age_hi" not in pred.columns:
        return np.zeros(len(pred), dtype=bool)
    return (pred["age"].isna() & pred["age_lo"].notna() & pred["age_hi"].notna()).to_numpy()


def add_group_columns(pred: pd.DataFrame, groups: np.ndarray) -> pd.DataFrame:
    """``group`` (labelled), ``pred_group`` (containing the predicted age) and ``range_error`` on group rows."""
    from ..data.manifest import interval_name

    rows = _group_rows_mask(pred)
    if not rows.any():
        return pred
    names = np.array([interval_name(a, b) for a, b in groups], dtype=object)
    sub = pred[rows]
    out = pred.copy()
    out["group"] = pd.Series(pd.NA, index=pred.index, dtype="string")
    out["pred_group"] = pd.Series(pd.NA, index=pred.index, dtype="string")
    out["range_error"] = np.nan
    out.loc[rows, "group"] = [interval_name(a, b) for a, b in zip(sub["age_lo"], sub["age_hi"])]
    out.loc[rows, "pred_group"] = names[assign_groups(sub["pred"].to_numpy(), groups)]
    out.loc[rows, "range_error"] = range_error(sub["pred"], sub["age_lo"], sub["age_hi"])
    return out


CHILD_AGES = (0, 12)  # the degradation bar's age range (inclusive)
DEGRADE_BAR = {"mae_ratio_max": 1.2, "child_bias_abs_max": 2.0}


def _child_bias(pred: pd.DataFrame, col: str, n_boot: int, seed: int) -> dict[str, Any] | None:
    kids = pred[(pred["age"] >= CHILD_AGES[0]) & (pred["age"] <= CHILD_AGES[1])]
    if len(kids) == 0:
        return None
    return estimate((kids[col] - kids["age"]).to_numpy(dtype=np.float64), n_boot=n_boot, seed=seed).to_dict()


def degrade_summary(pred: pd.DataFrame, recipe: str, seed: int, cs_k: float = 5, n_boot: int = 1000,
                    boot_seed: int = 0) -> dict[str, Any]:
    """Clean vs degraded: MAE (95% CIs, via :func:`summarize`), bias for ages 0-12, and the bar.

    ``pred`` holds ``pred`` (clean) and ``pred_degraded`` for the same rows (and ``p_female_degraded``,
    for the degraded gender accuracy).
    """
    deg_cols = {"pred": pred["pred_degraded"]}
    if "p_female_degraded" in pred.columns:
        deg_cols["p_female"] = pred["p_female_degraded"]
    degraded = pred.assign(**deg_cols).drop(columns=["age_low", "age_high", "blur", "inter_ocular"], errors="ignore")
    if "age_low_degraded" in pred.columns:  # does the calibrated interval still cover degraded faces?
        degraded = degraded.assign(age_low=pred["age_low_degraded"], age_high=pred["age_high_degraded"])
    deg = summarize(degraded, cs_k, n_boot, boot_seed)
    mae_ci = estimate(np.abs(pred["pred"] - pred["age"]).to_numpy(dtype=np.float64), n_boot=n_boot,
                      seed=boot_seed).to_dict()
    clean_mae = mae_ci["value"]
    kid_clean, kid_deg = _child_bias(pred, "pred", n_boot, boot_seed), _child_bias(pred, "pred_degraded", n_boot,
                                                                                    boot_seed)
    ratio = deg["metrics"]["mae"]["value"] / clean_mae if clean_mae > 0 else float("nan")
    passes = {"mae_ratio": bool(ratio <= DEGRADE_BAR["mae_ratio_max"]),
              "child_bias": None if kid_deg is None else bool(abs(kid_deg["value"]) <= DEGRADE_BAR["child_bias_abs_max"])}
    return {
        "recipe": recipe, "seed": seed, "doc": "docs/degradation.md",
        "clean": {"mae": mae_ci, "bias_0_12": kid_clean},
        "degraded": {"mae": deg["metrics"]["mae"], "cs": deg["metrics"]["cs"], "bias": deg["metrics"]["bias"],
                     "gender_acc": deg["metrics"]["gender_acc"], "bias_0_12": kid_deg,
                     "by_age_bin": deg["by_age_bin"]},
        "mae_ratio": ratio, "bar": DEGRADE_BAR, "passes": passes,
        "passes_all": bool(passes["mae_ratio"] and passes["child_bias"] is not False),
        **({"interval": deg["interval"]} if "interval" in deg else {}),
    }


@dataclass
class EvalResult:
    """``predictions``: one row per scored image; ``results``: everything that goes into results.json."""

    predictions: pd.DataFrame
    results: dict[str, Any] = field(default_factory=dict)


def evaluate(model: str | Path, data: str | Path = "utkface", split: str = "test", root: str | Path | None = None,
             cs_k: float = 5, batch_size: int = 128, tta_flip: bool = True, backend: str | None = None,
             threads: int | None = None, cache_dir: str | Path = "cache", n_boot: int = 1000, seed: int = 0,
             limit: int | None = None, work_dir: str | Path | None = None, crop: str = "auto",
             degrade: str | None = None, degrade_seed: int = 0) -> EvalResult:
    """Run ``model`` (.safetensors or .onnx) on ``split`` of ``data`` and score it.

    ``limit`` keeps a seeded random subset of the split (quick looks; not for reported numbers).
    ``work_dir``: where ``backend="onnx"`` on a ``.safetensors`` model caches its export (default:
    the user cache).
    ``crop``: the :class:`CropSpec` mode (``auto``: align rows with landmarks, chips as they are).
    ``degrade``: also score the same crops degraded by this recipe (``old-photo``, docs/degradation.md),
    image ``i`` seeded by ``(degrade_seed, i)``; adds ``pred_degraded`` to the predictions and a
    ``degrade`` section (clean vs degraded MAE, 0-12 bias, the bar) to the results.
    """
    if degrade is not None:
        from ..data.degrade import DEGRADATIONS

        if degrade not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {degrade!r}; known: {', '.join(DEGRADATIONS)}")
    runner = load_runner(model, backend, threads=threads, cache_dir=work_dir)
    model_info = runner.info()
    ss = scored_split(runner, data, split, root, cache_dir, crop, limit, seed)
    df, data_name, index, in_split, ok, errors, spec = ss.df, ss.data_name, ss.index, ss.in_split, ss.ok, ss.errors, ss.spec
    outs, seconds = predict_outputs(runner, ss.crops, index, batch_size, tta_flip)
    age_pred = outs["age"]
    prob = outs.get("p_female", np.full(len(index), np.nan))
    sub = df.iloc[index]
    pred_gender, gender_prob = reported_gender(prob)
    pred = pd.DataFrame({
        "path": sub["path"].to_numpy(), "age": sub["age"].to_numpy(dtype=np.float64), "pred": age_pred,
        "gender": sub["gender"].to_numpy(), "p_female": prob, "pred_gender": pred_gender,
        "gender_prob": gender_prob, "race": sub["race"].to_numpy(),
        "source": sub["source"].to_numpy() if "source" in sub.columns else data_name,
    })
    for key in ("age_std", "age_low", "age_high"):
        if key in outs:
            pred[key] = outs[key]
    groups = None
    if has_intervals(sub):  # age groups: the labelled range, and the data's full group set for the predicted one
        pred["age_lo"] = sub["age_lo"].to_numpy(dtype=np.float64)
        pred["age_hi"] = sub["age_hi"].to_numpy(dtype=np.float64)
        g = df[interval_rows(df).to_numpy()]
        groups = group_set(g["age_lo"].to_numpy(), g["age_hi"].to_numpy())
        pred = add_group_columns(pred, groups)
    if "age_low" in outs:  # what the interval width is compared against: image quality and face size
        pred["blur"] = crop_blur(ss.crops, index)
        iod = _inter_ocular(sub)
        if np.isfinite(iod).any():
            pred["inter_ocular"] = iod
    pred["gender"] = pred["gender"].astype("Int64")
    deg_seconds = None
    if degrade is not None and not pred["age"].notna().any():
        raise ValueError(f"--degrade compares MAE on exact ages; {data_name}/{split} has age groups only")
    if degrade is not None:
        douts, deg_seconds = predict_outputs(runner, ss.crops, index, batch_size, tta_flip, degrade, degrade_seed)
        pred["pred_degraded"] = douts["age"]
        pred["p_female_degraded"] = douts.get("p_female", np.full(len(index), np.nan))
        for key in ("age_low", "age_high"):
            if key in douts:
                pred[f"{key}_degraded"] = douts[key]
    from .. import __version__

    results = {
        "agekit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {**model_info, "input_size": list(runner.cfg.input_size), "tta_flip": tta_flip},
        "data": {"data": str(data), "name": data_name, "split": split, "n": int(len(index)),
                 "n_split": int(in_split.sum()), "n_unreadable": int((in_split & ~ok).sum()),
                 "crop": spec.mode, "limit": limit},
        "settings": {"cs_k": cs_k, "n_boot": n_boot, "seed": seed, "ci": "95% percentile bootstrap",
                     "batch_size": batch_size},
        **summarize(pred, cs_k, n_boot, seed, groups=groups),
        "timing": {"seconds": seconds, "images_per_s": len(index) * (2 if tta_flip else 1) / max(seconds, 1e-9),
                   "note": "forward passes per second (TTA doubles them)"},
    }
    if degrade is not None:
        results["degrade"] = {**degrade_summary(pred, degrade, degrade_seed, cs_k, n_boot, seed),
                              "seconds": deg_seconds}
    if errors:
        results["data"]["unreadable_examples"] = errors[:5]
    return EvalResult(pred, results)
