"""Split-conformal calibration of the age interval (``agekit calibrate``).

On a calibration split that is not the test split (default: the dataset's ``val`` split) every face
gets a score: ``|y - age|`` for a model with a single age output (``score: "abs"``: one width for
every face), or ``|y - age| / age_std`` for a model that predicts its own spread (``"normalized"``:
wider where the model is less sure). ``q`` is the ceil((n + 1)(1 - alpha))-th smallest score, so
for exchangeable data ``[age - q, age + q]`` (or ``age -/+ q * age_std``) covers the true age with
probability at least 1 - alpha. The record goes into the model file's metadata (``calibration``) and
:meth:`agekit.runtime.runner.Runner.predict` turns it into ``age_low``/``age_high``.

The model runs through the same runner and crops as ``agekit eval``
(:func:`agekit.evaluation.evaluate.scored_split` / :func:`~agekit.evaluation.evaluate.predict_outputs`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import Runner, load_runner
from .evaluate import predict_outputs, scored_split

__all__ = ["conformal_quantile", "conformal_scores", "calibration_record", "calibrate", "write_calibrated",
           "default_calibrated_path"]


def conformal_quantile(scores: np.ndarray, alpha: float = 0.1) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score (finite-sample split-conformal quantile).

    ``inf`` when that rank exceeds n (too few scores for the level asked): the interval is then unbounded,
    which is the honest answer.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha))
    return float(s[k - 1]) if 1 <= k <= n else float("inf")


def conformal_scores(y: np.ndarray, age: np.ndarray, age_std: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(scores, kind): ``|y - age| / age_std`` ("normalized") when ``age_std`` is given, else ``|y - age|`` ("abs")."""
    err = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(age, dtype=np.float64))
    if age_std is None:
        return err, "abs"
    return err / np.maximum(np.asarray(age_std, dtype=np.float64), 1e-6), "normalized"


def calibration_record(y: np.ndarray, age: np.ndarray, age_std: np.ndarray | None = None, alpha: float = 0.1,
                       data: str = "", split: str = "val") -> dict[str, Any]:
    """The ``calibration`` metadata record for predictions ``age`` (and ``age_std``) of true ages ``y``."""
    scores, kind = conformal_scores(y, age, age_std)
    q = conformal_quantile(scores, alpha)
    if not math.isfinite(q):
        raise ValueError(f"{len(scores)} calibration faces are too few for alpha={alpha} "
                         f"(need at least {math.ceil((1 - alpha) / alpha)})")
    return {"method": "split_conformal", "alpha": float(alpha), "q": q, "score": kind, "data": str(data),
            "split": split, "n": int(len(scores))}


def calibrate(model: str | Path | Runner, data: str | Path = "utkface", split: str = "val",
              root: str | Path | None = None, alpha: float = 0.1, batch_size: int = 128, tta_flip: bool = True,
              backend: str | None = None, threads: int | None = None, cache_dir: str | Path = "cache",
              crop: str = "auto", limit: int | None = None, seed: int = 0,
              work_dir: str | Path | None = None) -> dict[str, Any]:
    """Run ``model`` on ``split`` of ``data`` (as ``agekit eval`` does) and return its calibration record.

    Uses ``age_std`` (normalised scores) when the model outputs it. Any calibration the model file
    already carries is ignored (the record describes the raw model).
    """
    if split == "test":
        raise ValueError("calibrate on a split other than the test split (e.g. val): the test split scores the interval")
    runner = model if isinstance(model, Runner) else load_runner(model, backend, threads=threads, cache_dir=work_dir)
    if runner.takes_pairs:
        return _calibrate_face_body(runner, data, split, root, alpha, batch_size, tta_flip, cache_dir, crop, limit,
                                    seed)
    ss = scored_split(runner, data, split, root, cache_dir, crop, limit, seed)
    outs, _ = predict_outputs(runner, ss.crops, ss.index, batch_size, tta_flip)
    y = ss.df["age"].to_numpy(dtype=np.float64)[ss.index]
    exact = ~np.isnan(y)  # conformal scores need exact ages; age-group rows cannot give one
    if not exact.any():
        raise ValueError(f"calibration needs exact ages; {ss.data_name}/{split} has age groups only")
    std = outs.get("age_std")
    rec = calibration_record(y[exact], outs["age"][exact], None if std is None else std[exact], alpha, ss.data_name,
                             split)
    rec.update(tta_flip=tta_flip, crop=ss.spec.mode)
    if limit is not None:
        rec["limit"] = limit
    return rec


def default_calibrated_path(model: str | Path) -> Path:
    """``MODEL stem + _calibrated.safetensors`` next to the model."""
    model = Path(model)
    return model.with_name(f"{model.stem}_calibrated{model.suffix}")


def write_calibrated(model: str | Path, record: dict[str, Any], out: str | Path | None = None,
                     overwrite: bool = False) -> Path:
    """A copy of the agekit ``.safetensors`` ``model`` with ``record`` as its ``calibration`` metadata.

    The tensors are copied as they are (same names, dtypes, bytes); every other metadata key is kept.
    Writing over ``model`` itself needs ``overwrite=True`` (and goes through a temporary file).
    """
    import os
    import tempfile

    from safetensors import safe_open
    from safetensors.numpy import save_file

    model = Path(model)
    if model.suffix != ".safetensors":
        raise ValueError(f"{model}: calibrate an agekit .safetensors model (then export it: ONNX/TFLite carry the record)")
    out = Path(out) if out is not None else default_calibrated_path(model)
    if out.resolve() == model.resolve() and not overwrite:
        raise FileExistsError(f"{out} is the input model; pass a different --out (or --overwrite to replace it)")
    if out.exists() and out.resolve() != model.resolve() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    # numpy framework: every dtype the model holds round-trips byte for byte (no torch conversion)
    with safe_open(str(model), framework="np") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["calibration"] = json.dumps(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=out.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, model.stat().st_mode & 0o777)  # mkstemp makes 0600; the copy keeps the input's mode
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _calibrate_face_body(runner: Runner, data: str | Path, split: str, root: str | Path | None, alpha: float,
                         batch_size: int, tta_flip: bool, cache_dir: str | Path, crop: str, limit: int | None,
                         seed: int) -> dict[str, Any]:
    """A face+body model: one conformal quantile per input combination it can be shown (face+body, face, body),
    each on the rows of ``split`` that have it (``agekit eval --inputs``' path), so the interval widens by what
    the missing input actually costs (:func:`agekit.runtime.runner.age_interval` reads ``by_inputs``). Rows with
    age groups only (PETA) cannot give a conformal score and are left out."""
    from .face_body import FaceBodySplit

    fb = FaceBodySplit.load(data, runner.cfg.input_size[-1], root, cache_dir, crop)  # table + crops once
    fb.check_split(split)  # a wrong split is an error; a missing input combination below is not
    records: dict[str, dict[str, Any]] = {}
    for inputs in ("face+body", "face", "body"):
        try:
            index, _, _ = fb.rows(split, inputs, limit, seed)
        except ValueError:
            continue  # no rows with this input combination here
        pred, _, _ = fb.predictions(runner, index, inputs, batch_size, tta_flip)
        pred = pred[(pred["inputs"] == inputs) & pred["age"].notna()]
        if len(pred) == 0:
            continue
        std = pred["age_std"].to_numpy() if "age_std" in pred.columns else None
        rec = calibration_record(pred["age"].to_numpy(), pred["pred"].to_numpy(), std, alpha, str(data), split)
        records[inputs] = {**rec, "inputs": inputs}
    if not records:
        raise ValueError(f"calibration needs exact ages; {data}/{split} has none a face+body model can be shown")
    main = records.get("face+body") or next(iter(records.values()))
    out = {**main, "by_inputs": records, "tta_flip": tta_flip, "crop": crop}
    if limit is not None:
        out["limit"] = limit
    return out
