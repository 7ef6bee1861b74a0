"""Does the exported file compute what the PyTorch model computes? Checked on real face crops.

Both sides are :class:`agekit.runtime.Runner` objects, compared through ``runner(x)`` (raw outputs,
no TTA), so any pair of formats in the table can be checked against each other.

Random tensors exercise every op but not the value ranges real faces produce (and so miss e.g.
sigmoid saturation or fused-BN precision issues near the decision boundary), so the default check
uses test crops from the same decode-once cache as training and evaluation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.cache import build_crop_cache
from ..data.crops import CropSpec
from ..data.imageio import load_rgb
from ..data.transforms import crops_to_batch, normalize
from ..models.registry import AgeModelCfg
from ..runtime import Runner
from ..runtime.runner import batch_len, sigmoid, slice_inputs

__all__ = ["ParityReport", "parity_inputs", "check_parity", "compare_outputs", "OUTPUT_COMPARISONS", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ParityReport:
    """Largest disagreements between two runners on the same inputs."""

    n: int
    source: str
    max_age_diff: float = float("nan")  # years (NaN for classifiers)
    mean_age_diff: float = float("nan")
    max_p_female_diff: float = float("nan")  # |P(female) difference|, 0..1 (NaN without a gender head)
    age_tolerance: float = 0.1
    prob_tolerance: float = 0.01
    max_class_prob_diff: float = float("nan")  # classifiers: largest |softmax difference| (NaN for age models)
    max_age_std_diff: float = float("nan")  # years (NaN without an age_std output)
    max_age_dist_diff: float = float("nan")  # largest |probability difference| of age_dist (NaN without one)
    top1_agreement: float = float("nan")  # classifiers: share of inputs with the same predicted class

    @property
    def passed(self) -> bool:
        def within(diff: float, tol: float) -> bool:  # NaN: the output does not exist in this model
            return bool(np.isnan(diff) or diff <= tol)

        return (within(self.max_age_diff, self.age_tolerance) and within(self.max_p_female_diff, self.prob_tolerance)
                and within(self.max_class_prob_diff, self.prob_tolerance)
                and within(self.max_age_std_diff, self.age_tolerance)
                and within(self.max_age_dist_diff, self.prob_tolerance))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _random(cfg: AgeModelCfg, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *cfg.input_size)).astype(np.float32)


def parity_inputs(check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64, root: str | Path | None = None,
                  split: str = "test", cache_dir: str | Path = "cache", seed: int = 0) -> tuple[np.ndarray, str]:
    """(normalised float32 batch, description) for a parity check of a face model (a task's
    ``parity_inputs``; classifiers use their own, in agekit.tasks.classification).

    ``check_data``: ``"random"``; a dataset name (``utkface``) or a manifest path, whose ``split`` rows
    are sampled (seeded) and cropped through the crop cache; a folder of face crops or one image.
    ``None`` means UTKFace when its folder exists, else random inputs.
    """
    from ..config.roots import dataset_root
    from .evaluate import load_eval_table

    fallback = ""
    if check_data is None:
        r = dataset_root("utkface", root)
        check_data = "utkface" if r and Path(r).is_dir() else "random"
        fallback = " (UTKFace not found; pass --check-data for real crops)" if check_data == "random" else ""
    check_data = str(check_data)
    if check_data == "random":
        return _random(cfg, n, seed), f"{n} random normal inputs{fallback}"
    p = Path(check_data)
    if p.is_dir() and p.suffix.lower() not in (".csv", ".parquet"):
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
        return crops_to_batch([load_rgb(f) for f in files], cfg).numpy(), f"{len(files)} images from {p}"
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return crops_to_batch([load_rgb(p)], cfg).numpy(), f"image {p}"
    df, name = load_eval_table(check_data, root)
    rows = np.flatnonzero((df["split"] == split).to_numpy()) if split in set(df["split"].dropna()) else np.arange(len(df))
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))
    sub = df.iloc[rows].reset_index(drop=True)
    crops, ok, _ = build_crop_cache(sub, cfg.input_size[-1], cache_dir, CropSpec())
    if not ok.any():
        raise ValueError(f"none of the {len(sub)} sampled images of {check_data} could be read")
    x = normalize(torch.from_numpy(np.asarray(crops[ok])).permute(0, 3, 1, 2), cfg).numpy()
    return x, f"{len(x)} {split} crops of {name}"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _age_diffs(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    d = np.abs(ref - cand)
    return {"max_age_diff": float(d.max()), "mean_age_diff": float(d.mean())}


def _gender_diffs(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    return {"max_p_female_diff": float(np.abs(sigmoid(ref.astype(np.float64)) - sigmoid(cand.astype(np.float64))).max())}


def _class_diffs(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    return {"max_class_prob_diff": float(np.abs(_softmax(ref) - _softmax(cand)).max()),
            "top1_agreement": float((ref.argmax(-1) == cand.argmax(-1)).mean())}


def _age_std_diffs(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    return {"max_age_std_diff": float(np.abs(ref - cand).max())}


def _age_dist_diffs(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    return {"max_age_dist_diff": float(np.abs(ref - cand).max())}


# output name -> how two runners' values of it are compared (a task's ``compare`` picks its outputs)
OUTPUT_COMPARISONS = {"age": _age_diffs, "gender_logit": _gender_diffs, "logits": _class_diffs,
                      "age_std": _age_std_diffs, "age_dist": _age_dist_diffs}


def compare_outputs(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], names=None) -> dict[str, float]:
    """ParityReport fields for every output in ``names`` (default: all) that both runners produced."""
    out: dict[str, float] = {}
    for k in (names if names is not None else OUTPUT_COMPARISONS):
        if k in ref and k in cand and k in OUTPUT_COMPARISONS:
            out.update(OUTPUT_COMPARISONS[k](ref[k], cand[k]))
    return out


def check_parity(reference: Runner, candidate: Runner, x: np.ndarray, source: str = "", age_tolerance: float = 0.1,
                 prob_tolerance: float = 0.01, batch_size: int = 16, compare=None) -> ParityReport:
    """Run both runners (``runner(x) -> {"age", "gender_logit"}`` or ``{"logits"}``) on ``x`` (a batch, or
    the named inputs of a face+body model) without TTA
    and compare the outputs they share with ``compare(ref, cand) -> ParityReport fields`` (a task's
    ``compare``; default: every output that has a comparison)."""
    outs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    n = batch_len(x)
    for s in range(0, n, batch_size):
        xb = slice_inputs(x, s, s + batch_size)
        a, b = reference(xb), candidate(xb)
        for k in set(a) & set(b):
            ref_parts, cand_parts = outs.setdefault(k, ([], []))
            ref_parts.append(np.asarray(a[k], dtype=np.float64))
            cand_parts.append(np.asarray(b[k], dtype=np.float64))
    if not outs:
        raise ValueError("the two models share no output to compare")
    ref = {k: np.concatenate(v[0]) for k, v in outs.items()}
    cand = {k: np.concatenate(v[1]) for k, v in outs.items()}
    fields = (compare or compare_outputs)(ref, cand)
    return ParityReport(n=n, source=source, age_tolerance=age_tolerance, prob_tolerance=prob_tolerance, **fields)
