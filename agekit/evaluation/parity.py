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
from ..runtime.runner import sigmoid

__all__ = ["ParityReport", "parity_inputs", "check_parity", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ParityReport:
    """Largest disagreements between two runners on the same inputs."""

    n: int
    source: str
    max_age_diff: float  # years
    mean_age_diff: float
    max_p_female_diff: float  # |P(female) difference|, 0..1 (NaN without a gender head)
    age_tolerance: float
    prob_tolerance: float
    max_class_prob_diff: float = float("nan")  # classifiers: largest |softmax difference| (NaN for age models)
    top1_agreement: float = float("nan")  # classifiers: share of inputs with the same predicted class

    @property
    def passed(self) -> bool:
        def within(diff: float, tol: float) -> bool:  # NaN: the output does not exist in this model
            return bool(np.isnan(diff) or diff <= tol)

        return (within(self.max_age_diff, self.age_tolerance) and within(self.max_p_female_diff, self.prob_tolerance)
                and within(self.max_class_prob_diff, self.prob_tolerance))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _random(cfg: AgeModelCfg, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *cfg.input_size)).astype(np.float32)


def parity_inputs(check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64, root: str | Path | None = None,
                  split: str = "test", cache_dir: str | Path = "cache", seed: int = 0) -> tuple[np.ndarray, str]:
    """(normalised float32 batch, description) for a parity check.

    ``check_data``: ``"random"``; a dataset name (``utkface``) or a manifest path, whose ``split`` rows
    are sampled (seeded) and cropped through the crop cache; a folder of face crops or one image.
    ``None`` means UTKFace when its folder exists, else random inputs.
    """
    from ..data.classification import is_classification_dataset
    from ..config.roots import dataset_root
    from .evaluate import load_eval_table

    if cfg.task == "classification" or is_classification_dataset(str(check_data)):
        return _classification_inputs(check_data, cfg, n, root, seed)
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


def _classification_inputs(check_data: str | Path | None, cfg: AgeModelCfg, n: int, root: str | Path | None,
                           seed: int) -> tuple[np.ndarray, str]:
    """Test images of a classification dataset (``fashion_mnist``, ``cifar100``), or random inputs."""
    from ..data.classification import ClassificationDataset, is_classification_dataset, load_classification

    if check_data is None or str(check_data) == "random":
        return _random(cfg, n, seed), f"{n} random normal inputs" + (
            " (pass --check-data fashion_mnist or cifar100 for real images)" if check_data is None else "")
    if not is_classification_dataset(str(check_data)):
        raise ValueError(f"{cfg.name} is a classifier: --check-data must be fashion_mnist, cifar100 or random, "
                         f"not {check_data!r}")
    data = load_classification(str(check_data), root)
    idx = np.sort(np.random.default_rng(seed).choice(len(data.test_y), min(n, len(data.test_y)), replace=False))
    ds = ClassificationDataset(data.test_x, data.test_y, idx, cfg.input_size[-1])
    x = normalize(torch.stack([ds[i][0] for i in range(len(ds))]), cfg).numpy()
    return x, f"{len(x)} test images of {check_data}"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_parity(reference: Runner, candidate: Runner, x: np.ndarray, source: str = "", age_tolerance: float = 0.1,
                 prob_tolerance: float = 0.01, batch_size: int = 16) -> ParityReport:
    """Run both runners (``runner(x) -> {"age", "gender_logit"}`` or ``{"logits"}``) on ``x`` without TTA
    and compare every output they share: age in years, P(female), class probabilities."""
    outs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for s in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[s:s + batch_size], dtype=np.float32)
        a, b = reference(xb), candidate(xb)
        for k in set(a) & set(b):
            ref_parts, cand_parts = outs.setdefault(k, ([], []))
            ref_parts.append(np.asarray(a[k], dtype=np.float64))
            cand_parts.append(np.asarray(b[k], dtype=np.float64))
    if not outs:
        raise ValueError("the two models share no output to compare")
    ref = {k: np.concatenate(v[0]) for k, v in outs.items()}
    cand = {k: np.concatenate(v[1]) for k, v in outs.items()}
    nan = np.array([np.nan])
    d_age = np.abs(ref["age"] - cand["age"]) if "age" in ref else nan
    d_p = np.abs(sigmoid(ref["gender_logit"]) - sigmoid(cand["gender_logit"])) if "gender_logit" in ref else nan
    d_cls, agree = nan, float("nan")
    if "logits" in ref:
        d_cls = np.abs(_softmax(ref["logits"]) - _softmax(cand["logits"]))
        agree = float((ref["logits"].argmax(-1) == cand["logits"].argmax(-1)).mean())
    return ParityReport(len(x), source, float(d_age.max()), float(d_age.mean()), float(d_p.max()),
                        age_tolerance, prob_tolerance, float(d_cls.max()), agree)
