"""Scoring a face+body model (MiVOLO) on a labelled split, and its parity inputs.

The crops come from the same decode-once caches as training (:func:`agekit.data.cache.build_face_body_cache`:
faces through CropSpec, bodies through ``body_crop``). ``inputs`` chooses what the model is shown, so one
model answers "does the body help?": ``face+body`` (every crop a row has), ``face`` (bodies masked out; rows
without a face are not scored) or ``body`` (faces masked out). The metrics are the face task's
(:func:`agekit.evaluation.evaluate.summarize`), plus a breakdown by the inputs each row actually had.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.cache import FaceBodyCrops, build_face_body_cache
from ..data.crops import CropSpec
from ..data.manifest import has_intervals, interval_rows
from ..data.transforms import normalize
from ..models.registry import AgeModelCfg
from ..runtime import Runner, load_runner
from ..runtime.runner import age_interval, model_age_range, reported_gender
from .evaluate import EvalResult, _group_rows, add_group_columns, load_eval_table, require_split, summarize
from .metrics import group_set

__all__ = ["INPUT_CHOICES", "FaceBodySplit", "face_body_inputs", "evaluate_face_body", "face_body_parity_inputs"]

INPUT_CHOICES = {"face+body": (True, True), "face": (True, False), "body": (False, True)}
INPUT_GROUPS = ["face+body", "face", "body"]


def face_body_inputs(crops: FaceBodyCrops, index: np.ndarray, cfg: AgeModelCfg, use_face: bool = True,
                     use_body: bool = True) -> dict[str, np.ndarray]:
    """The named, normalised inputs of a face+body model for table rows ``index`` (missing crops: zeros, mask 0)."""
    face, body, fm, bm = crops.batch(index, use_face, use_body)

    def norm(a: np.ndarray, m: np.ndarray) -> np.ndarray:
        x = normalize(torch.from_numpy(a).permute(0, 3, 1, 2), cfg).numpy()
        x[m == 0] = 0.0
        return np.ascontiguousarray(x)

    return {"face": norm(face, fm), "body": norm(body, bm), "face_mask": fm, "body_mask": bm}


def _inputs_label(fm: np.ndarray, bm: np.ndarray) -> np.ndarray:
    return np.where((fm > 0) & (bm > 0), "face+body", np.where(fm > 0, "face", "body")).astype(object)


@dataclass
class FaceBodySplit:
    """A labelled table and its face+body crop cache at one input size: loaded once, scored for any inputs."""

    df: pd.DataFrame
    data_name: str
    crops: FaceBodyCrops
    spec: CropSpec

    @classmethod
    def load(cls, data: str | Path, size: int, root: str | Path | None = None, cache_dir: str | Path = "cache",
             crop: str = "auto") -> "FaceBodySplit":
        df, data_name = load_eval_table(data, root)
        spec = CropSpec(crop)  # type: ignore[arg-type]
        return cls(df, data_name, build_face_body_cache(df, size, cache_dir, spec), spec)

    def check_split(self, split: str) -> None:
        require_split(self.df, split)

    def rows(self, split: str, inputs: str, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                               np.ndarray]:
        """(index of the rows to score, in-split mask, shown mask): rows of ``split`` with a crop ``inputs`` can show."""
        if inputs not in INPUT_CHOICES:
            raise ValueError(f"inputs must be one of {', '.join(INPUT_CHOICES)}, got {inputs!r}")
        self.check_split(split)
        use_face, use_body = INPUT_CHOICES[inputs]
        in_split = (self.df["split"] == split).to_numpy()
        shown = ((self.crops.face_pos >= 0) & use_face) | ((self.crops.body_pos >= 0) & use_body)
        index = np.flatnonzero(in_split & shown)
        if limit is not None and limit < len(index):
            index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
        if len(index) == 0:
            raise ValueError(f"split {split!r} has no rows with a {inputs} input that could be read")
        return index, in_split, shown

    def predictions(self, runner: Runner, index: np.ndarray, inputs: str, batch_size: int = 64,
                    tta_flip: bool = True) -> tuple[pd.DataFrame, np.ndarray | None, float]:
        """(per-row predictions as ``agekit predict`` gives them, the data's age groups or None, seconds)."""
        use_face, use_body = INPUT_CHOICES[inputs]
        outs, labels, seconds = _predict(runner, self.crops, index, use_face, use_body, batch_size, tta_flip)
        if runner.calibration and "age_low" in outs:  # each row's interval for the inputs it had, as predict gives it
            for lab in np.unique(labels):
                rows = labels == lab
                lo_hi = age_interval({k: outs[k][rows] for k in ("age", "age_std") if k in outs},
                                     runner.calibration, model_age_range(runner.cfg, runner.meta), inputs=str(lab))
                outs["age_low"][rows], outs["age_high"][rows] = lo_hi
        sub = self.df.iloc[index]
        prob = outs.get("p_female", np.full(len(index), np.nan))
        pred_gender, gender_prob = reported_gender(prob)
        pred = pd.DataFrame({
            "path": sub["path"].to_numpy(), "age": sub["age"].to_numpy(dtype=np.float64), "pred": outs["age"],
            "gender": sub["gender"].to_numpy(), "p_female": prob, "pred_gender": pred_gender,
            "gender_prob": gender_prob, "race": sub["race"].to_numpy(), "inputs": labels,
            "source": sub["source"].to_numpy() if "source" in sub.columns else self.data_name,
        })
        for key in ("age_std", "age_low", "age_high"):
            if key in outs:
                pred[key] = outs[key]
        groups = None
        if has_intervals(sub):  # age groups (PETA): scored as the face evaluation scores them
            pred["age_lo"] = sub["age_lo"].to_numpy(dtype=np.float64)
            pred["age_hi"] = sub["age_hi"].to_numpy(dtype=np.float64)
            g = self.df[interval_rows(self.df).to_numpy()]
            groups = group_set(g["age_lo"].to_numpy(), g["age_hi"].to_numpy())
            pred = add_group_columns(pred, groups)
        pred["gender"] = pred["gender"].astype("Int64")
        return pred, groups, seconds


def evaluate_face_body(model: str | Path | Runner, data: str | Path = "aaf", split: str = "test",
                       root: str | Path | None = None, inputs: str = "face+body", cs_k: float = 5,
                       batch_size: int = 64, tta_flip: bool = True, backend: str | None = None,
                       threads: int | None = None, cache_dir: str | Path = "cache", n_boot: int = 1000, seed: int = 0,
                       limit: int | None = None, work_dir: str | Path | None = None, crop: str = "auto",
                       degrade: str | None = None, loaded: FaceBodySplit | None = None, **_: Any) -> EvalResult:
    """Run a face+body ``model`` on ``split`` of ``data`` showing it ``inputs`` and score it (see the module
    docstring); same report structure as :func:`agekit.evaluation.evaluate.evaluate`, plus ``by_inputs``.
    ``loaded``: the table and crops already loaded (:meth:`FaceBodySplit.load`), for several scorings of one split."""
    if inputs not in INPUT_CHOICES:
        raise ValueError(f"inputs must be one of {', '.join(INPUT_CHOICES)}, got {inputs!r}")
    if degrade is not None:
        raise ValueError("--degrade is implemented for face models only")
    runner = model if isinstance(model, Runner) else load_runner(model, backend, threads=threads, cache_dir=work_dir)
    if not runner.takes_pairs:
        raise ValueError(f"{runner.cfg.name} is a face model; score it with the face evaluation")
    fb = loaded or FaceBodySplit.load(data, runner.cfg.input_size[-1], root, cache_dir, crop)
    index, in_split, shown = fb.rows(split, inputs, limit, seed)
    pred, groups, seconds = fb.predictions(runner, index, inputs, batch_size, tta_flip)
    from .. import __version__

    crops = fb.crops
    results = {
        "agekit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {**runner.info(), "input_size": list(runner.cfg.input_size), "tta_flip": tta_flip, "inputs": inputs},
        "data": {"data": str(data), "name": fb.data_name, "split": split, "n": int(len(index)),
                 "n_split": int(in_split.sum()), "n_not_shown": int((in_split & ~shown).sum()),
                 "n_unreadable": int((in_split & ~crops.ok).sum()), "crop": fb.spec.mode, "limit": limit},
        "settings": {"cs_k": cs_k, "n_boot": n_boot, "seed": seed, "ci": "95% percentile bootstrap",
                     "batch_size": batch_size},
        **summarize(pred, cs_k, n_boot, seed, groups=groups),
        "by_inputs": _group_rows(pred, "inputs", INPUT_GROUPS, n_boot, seed, cs_k),
        "timing": {"seconds": seconds, "pairs_per_s": len(index) * (2 if tta_flip else 1) / max(seconds, 1e-9),
                   "note": "forward passes per second (TTA doubles them)"},
    }
    if crops.errors:
        results["data"]["unreadable_examples"] = crops.errors[:5]
    return EvalResult(pred, results)


def _predict(runner: Runner, crops: FaceBodyCrops, index: np.ndarray, use_face: bool, use_body: bool,
             batch_size: int, tta_flip: bool) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    import time

    parts: dict[str, list[np.ndarray]] = {}
    labels = []
    t0 = time.perf_counter()
    for start in range(0, len(index), batch_size):
        x = face_body_inputs(crops, index[start:start + batch_size], runner.cfg, use_face, use_body)
        labels.append(_inputs_label(x["face_mask"], x["body_mask"]))
        for k, v in runner.predict(x, tta_flip=tta_flip).items():
            if np.asarray(v).ndim == 1:
                parts.setdefault(k, []).append(np.asarray(v))
    seconds = time.perf_counter() - t0
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}, np.concatenate(labels), seconds


def face_body_parity_inputs(check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                            root: str | Path | None = None, split: str = "test", cache_dir: str | Path = "cache",
                            seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """(named inputs, description) for a parity check of a face+body model: real test rows of ``check_data``
    (a dataset name or manifest; ``None``: AAF when its folder is here, else random inputs). A third of the
    rows are fed with their face masked out and a third with their body masked out, so the exported graph is
    compared on all three input cases."""
    from .parity import default_check_data

    check_data, fallback = default_check_data(check_data, "aaf", root)
    rng = np.random.default_rng(seed)
    if check_data == "random":
        size = cfg.input_size[-1]
        x = {k: rng.standard_normal((n, 3, size, size)).astype(np.float32) for k in ("face", "body")}
        x["face_mask"] = (np.arange(n) % 3 != 2).astype(np.float32)
        x["body_mask"] = (np.arange(n) % 3 != 1).astype(np.float32)
        for k in ("face", "body"):
            x[k][x[f"{k}_mask"] == 0] = 0.0
        return x, f"{n} random normal inputs, all three input cases{fallback}"
    df, name = load_eval_table(check_data, root)
    rows = np.flatnonzero((df["split"] == split).to_numpy()) if split in set(df["split"].dropna()) else np.arange(len(df))
    rows = np.sort(rng.choice(rows, min(n, len(rows)), replace=False))
    sub = df.iloc[rows].reset_index(drop=True)
    sub.attrs.update(df.attrs)
    crops = build_face_body_cache(sub, cfg.input_size[-1], cache_dir, CropSpec())
    ok = np.flatnonzero(crops.ok)
    if not len(ok):
        raise ValueError(f"none of the {len(sub)} sampled rows of {check_data} could be cropped")
    x = face_body_inputs(crops, ok, cfg)
    both = np.flatnonzero((x["face_mask"] > 0) & (x["body_mask"] > 0))
    for k, pick in (("face", both[1::3]), ("body", both[2::3])):  # all three cases on real crops
        x[f"{k}_mask"][pick] = 0.0
        x[k][pick] = 0.0
    cases = _inputs_label(x["face_mask"], x["body_mask"])
    counts = ", ".join(f"{int((cases == c).sum())} {c}" for c in INPUT_GROUPS if (cases == c).any())
    return x, f"{len(ok)} {split} rows of {name} ({counts})"
