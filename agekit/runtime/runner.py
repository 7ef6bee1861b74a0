"""The one model-runner interface: what every backend (PyTorch, ONNX Runtime, LiteRT) shares.

A backend only implements ``__call__`` (raw outputs for a normalised batch). Everything else is
written here once and inherited: checking and loading model files safely, flip TTA, and turning the
gender logit into P(female) and into the reported gender. The Predictor, ``agekit eval``, parity
checks and benchmarks all go through :meth:`Runner.predict` / :meth:`Runner.__call__`, so they
cannot disagree on what a model says.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

__all__ = ["Runner", "ModelFileError", "check_model_file", "load_torch_model", "decode_metadata", "per_sample",
           "sigmoid", "reported_gender", "bundled_model_path", "bundled_person_model_path", "age_interval", "model_age_range", "INPUT_WIDTH",
           "batch_len", "slice_inputs"]

BUNDLED_MODEL = "mobileagenet_lite0_utk_aaf.safetensors"
# the face+body (MiVOLO) model that person mode (`agekit predict --persons`, `--crops person`) uses by default
BUNDLED_PERSON_MODEL = "mivolo_lite0x2_aaf_peta.safetensors"


class ModelFileError(FileNotFoundError):
    """The model file is missing or unusable; the message (one line) says which file and what is wrong."""


def bundled_model_path() -> Path:
    """The trained model shipped in ``agekit/assets`` (the default of ``predict`` and ``eval``)."""
    return Path(__file__).resolve().parents[1] / "assets" / BUNDLED_MODEL


def bundled_person_model_path() -> Path:
    """The face+body model shipped in ``agekit/assets`` (person mode's default: faces, bodies, or both)."""
    return Path(__file__).resolve().parents[1] / "assets" / BUNDLED_PERSON_MODEL


def check_model_file(path: str | Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_torch_model(path: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, AgeModelCfg, metadata) from an agekit ``.safetensors`` file or a Lightning ``.ckpt``
    (:func:`agekit.models.load_model`: safetensors, or ``torch.load(weights_only=True)``)."""
    from ..models import WeightsError, load_model

    path = check_model_file(path)
    try:
        return load_model(path)
    except WeightsError as e:
        raise ModelFileError(_first_line(e)) from None


def decode_metadata(md: Mapping[str, str]) -> dict[str, Any]:
    """String metadata (ONNX ``metadata_props``, the TFLite sidecar) with JSON values decoded."""
    out: dict[str, Any] = {}
    for k, v in md.items():
        try:
            out[k] = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            out[k] = v
    return out


def per_sample(out: Any, n: int) -> np.ndarray:
    """(B,) for per-face outputs (age, gender_logit, age_std), (B, K) for vector outputs such as class logits
    and age_dist."""
    out = np.asarray(out)
    return out.reshape(n) if out.size == n else out.reshape(n, -1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def reported_gender(p_female: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gender label, probability of that label) from P(female): ``female`` when p > 0.5, else ``male``.

    This is what ``FaceResult.gender``/``gender_prob`` and the ``pred_gender``/``gender_prob`` columns
    of an evaluation mean. NaN in (no gender head) gives ``None`` and NaN.
    """
    p = np.asarray(p_female, dtype=np.float64)
    female = p > 0.5
    label = np.where(np.isnan(p), None, np.where(female, "female", "male")).astype(object)
    return label, np.where(female, p, 1.0 - p)


def model_age_range(cfg: Any, meta: Mapping[str, Any]) -> tuple[float, float]:
    """The model's age range: its ``model_kwargs.age_range`` when the file has one, else the registry cfg's."""
    kwargs = meta.get("model_kwargs") or {}
    lo, hi = kwargs.get("age_range") or getattr(cfg, "age_range", None) or (0.0, 120.0)
    return float(lo), float(hi)


# How much wider the interval gets when a model sees fewer inputs than its calibration record was fitted
# on, until the record holds a quantile per input combination (``by_inputs``: {"face": {...}, ...}).
# The factors follow the error they must cover: MiVOLO reports MAE ~4.1 with face+body and 6.66-6.87
# with the body alone on IMDB-clean, and a few percent more with the face alone. A record without
# ``inputs`` was fitted on faces (every face model's calibration).
INPUT_WIDTH = {"face+body": 1.0, "face": 1.1, "body": 1.6}


def age_interval(out: Mapping[str, np.ndarray], calibration: Mapping[str, Any] | None,
                 age_range: tuple[float, float], inputs: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(age_low, age_high) from a split-conformal ``calibration`` record, or None without one.

    ``score: "abs"``: age -/+ q (one width for every face); ``"normalized"``: age -/+ q * age_std (wider
    where the model says it is less sure). Clipped to the model's age range. The record comes from
    :func:`agekit.evaluation.calibration.calibrate` (``agekit calibrate``). ``inputs`` (``"face+body"``,
    ``"face"``, ``"body"``): what the estimates were made from; the record's ``by_inputs`` entry for them
    when it has one, else its half-width times ``INPUT_WIDTH[inputs] / INPUT_WIDTH[record's inputs]``.
    """
    if not calibration or "age" not in out:
        return None
    factor = 1.0
    if inputs is not None:
        if inputs not in INPUT_WIDTH:
            raise ValueError(f"inputs must be one of {', '.join(INPUT_WIDTH)}, got {inputs!r}")
        by_inputs = calibration.get("by_inputs") or {}
        if inputs in by_inputs:
            calibration = by_inputs[inputs]
        else:
            factor = INPUT_WIDTH[inputs] / INPUT_WIDTH[calibration.get("inputs", "face")]
    age = np.asarray(out["age"], dtype=np.float64)
    q = float(calibration["q"]) * factor
    if calibration.get("score", "abs") == "normalized":
        if "age_std" not in out:
            raise ValueError("the calibration record uses normalized scores but the model has no age_std output")
        half = q * np.asarray(out["age_std"], dtype=np.float64)
    else:
        half = np.full_like(age, q)
    lo, hi = age_range
    return np.clip(age - half, lo, hi), np.clip(age + half, lo, hi)


def _as_batch(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; kept duck-typed so this module does not need torch
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)



def _as_inputs(x: Any) -> np.ndarray | dict[str, np.ndarray]:
    return {k: _as_batch(v) for k, v in x.items()} if isinstance(x, Mapping) else _as_batch(x)


def batch_len(x: Any) -> int:
    """Number of samples in an input batch (an array, or named arrays that share their first axis)."""
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def _map_inputs(x: Any, fn: Any) -> Any:
    return {k: fn(v) for k, v in x.items()} if isinstance(x, Mapping) else fn(x)


def _mirror(x: Any) -> Any:
    """The horizontally mirrored inputs: every image (4-d) input flipped, masks unchanged."""
    return _map_inputs(x, lambda v: v[..., ::-1] if v.ndim == 4 else v)


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping):
        return {k: np.concatenate([a[k], b[k]]) for k in a}
    return np.concatenate([a, b])


def slice_inputs(x: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of an input batch (see :func:`batch_len`), as contiguous float32."""
    return _map_inputs(x, lambda v: np.ascontiguousarray(v[start:stop], dtype=np.float32))


class Runner:
    """A loaded model: ``runner(x)`` gives raw outputs, ``runner.predict(x)`` adds flip TTA and P(female).

    Attributes set by every backend: ``cfg`` (AgeModelCfg: input size, mean/std), ``meta`` (the
    file's agekit metadata as a dict), ``path``, ``output_names``; ``backend`` is the format name.
    Input: float32 NCHW normalised with ``cfg`` (``agekit.data.transforms.crops_to_batch``).
    """

    backend: str = ""  # the format name; load_runner sets it per row (one class serves onnx and onnx-int8)
    from_torch: ClassVar[bool] = False  # can convert an agekit .safetensors itself (rows with from_torch=True use it)
    cfg: Any
    meta: dict[str, Any]
    path: Path
    output_names: tuple[str, ...]
    input_names: tuple[str, ...] = ("input",)  # face+body models: face, body, face_mask, body_mask

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs per sample: age (B,), gender_logit (B,), age_std (B,), age_dist (B, K), logits (B, C),
        as the model has them. ``x``: one normalised batch, or for a face+body model a mapping of its
        named inputs (:attr:`input_names`)."""
        raise NotImplementedError

    @property
    def takes_pairs(self) -> bool:
        """Whether the model takes a face crop and a body crop (MiVOLO) rather than one face crop."""
        from ..models.mivolo import FACE_BODY_INPUTS

        return tuple(self.input_names) == FACE_BODY_INPUTS

    def predict_pairs(self, faces: list[np.ndarray | None], bodies: list[np.ndarray | None],
                      tta_flip: bool = True) -> dict[str, np.ndarray]:
        """:meth:`predict` for a face+body model on pairs of crops: ``faces[i]`` a face chip (CropSpec) and
        ``bodies[i]`` a body crop (``agekit.data.crops.body_crop``), HxWx3 uint8 RGB, ``None`` where missing
        (a pair needs at least one). Same outputs as :meth:`predict` (age, p_female, age_low/age_high ...)."""
        if not self.takes_pairs:
            raise ValueError(f"{self.cfg.name} takes one face crop, not face/body pairs; use predict()")
        from ..data.transforms import face_body_batch

        if not len(faces) and not len(bodies):
            return {}
        return self.predict(face_body_batch(list(faces), list(bodies), self.cfg), tta_flip)

    def predict(self, x: np.ndarray | Mapping[str, np.ndarray], tta_flip: bool = True) -> dict[str, np.ndarray]:
        """Outputs averaged over the image and its mirror (``tta_flip``; for a face+body model both crops are
        mirrored, the masks kept), plus ``p_female`` with a gender head,
        plus ``age_low``/``age_high`` (the calibrated interval, :func:`age_interval`) when the model's
        metadata holds a ``calibration`` record.

        The mirror is run in the same call as the image (one batch of 2B), as the training module's
        evaluation does; raw outputs (logits) are averaged, then the sigmoid is applied.

        Distribution heads: averaging ``age_dist`` averages probabilities, the right way to combine two
        distributions (a mixture), and ``age`` (each one's mean) stays the mean of the averaged ``age_dist``.
        ``age_std`` is the average of the two standard deviations, not the mixture's (which also counts the
        spread between the two means); the two views of one face rarely disagree by more than a fraction of
        their spread, and a calibration fitted on these same outputs (``Runner.predict``) absorbs the
        difference.
        """
        x = _as_inputs(x)
        n = batch_len(x)
        if tta_flip and n:
            both = self(_concat(x, _mirror(x)))
            out = {k: (v[:n] + v[n:]) / 2 for k, v in both.items()}
        else:
            out = self(x)
        if "gender_logit" in out:
            out["p_female"] = sigmoid(out["gender_logit"])
        interval = age_interval(out, self.calibration, model_age_range(self.cfg, self.meta))
        if interval is not None:
            out["age_low"], out["age_high"] = interval
        return out

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The model's split-conformal calibration record (``agekit calibrate``), or None."""
        rec = (getattr(self, "meta", None) or {}).get("calibration")
        return rec if isinstance(rec, dict) else None

    def info(self) -> dict[str, Any]:
        """What a report says about the model: file, backend, name and the training run's own figures."""
        out: dict[str, Any] = {"path": str(self.path), "backend": self.backend, "model_name": self.cfg.name,
                               "training_test_metrics": self.meta.get("test")}
        if self.meta.get("val_mae") is not None:
            out["val_mae"] = self.meta["val_mae"]
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if getattr(self, "source_path", None) is not None:
            out.update(path=str(self.source_path), **{f"exported_{self.backend}": str(self.path)})
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model={self.cfg.name!r})"
