"""Do two runners compute the same thing? Output-by-output comparison of any two formats in the table.

This is the comparison only (pure numpy on :class:`Runner` outputs), so the runtime's own default-backend
choice (:func:`agekit.inference.backend.default_runner`) and ``agekit export`` share it; which inputs a
check uses (real crops of a dataset) is :mod:`agekit.evaluation.parity`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .runner import Runner, batch_len, sigmoid, slice_inputs

__all__ = ["ParityReport", "check_parity", "compare_outputs", "OUTPUT_COMPARISONS"]


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
    mean_age_tolerance: float = math.inf  # int8 formats: a bound on the mean |age difference| too

    @property
    def passed(self) -> bool:
        def within(diff: float, tol: float) -> bool:  # NaN: the output does not exist in this model
            return bool(np.isnan(diff) or diff <= tol)

        return (within(self.max_age_diff, self.age_tolerance) and within(self.max_p_female_diff, self.prob_tolerance)
                and within(self.mean_age_diff, self.mean_age_tolerance)
                and within(self.max_class_prob_diff, self.prob_tolerance)
                and within(self.max_age_std_diff, self.age_tolerance)
                and within(self.max_age_dist_diff, self.prob_tolerance))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


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
                 prob_tolerance: float = 0.01, batch_size: int = 16, compare=None,
                 mean_age_tolerance: float = math.inf) -> ParityReport:
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
    return ParityReport(n=n, source=source, age_tolerance=age_tolerance, prob_tolerance=prob_tolerance,
                        mean_age_tolerance=mean_age_tolerance, **fields)
