"""Metric functions on data whose answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agekit.evaluation import metrics
from agekit.evaluation.evaluate import summarize
from agekit.evaluation.metrics import (CumulativeScore, age_bin_labels, bootstrap_ci, cs_at_k, estimate,
                                       gender_accuracy, mae)


def test_bootstrap_ci_constant_values_has_zero_width():
    assert bootstrap_ci(np.full(50, 3.5)) == (3.5, 3.5, 3.5)


def test_bootstrap_ci_matches_normal_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=4000)
    est, lo, hi = bootstrap_ci(x, n_boot=1000, seed=0)
    assert est == pytest.approx(x.mean())
    assert lo < est < hi
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)  # percentile CI ~ normal CI for a mean


def test_bootstrap_ci_is_seeded_and_handles_empty():
    x = np.random.default_rng(2).exponential(5, 300)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    assert all(np.isnan(v) for v in bootstrap_ci(np.array([])))


def test_bootstrap_ci_chunked_resampling_gives_same_interval(monkeypatch):
    x = np.random.default_rng(3).exponential(5, 500)
    whole = bootstrap_ci(x, n_boot=2000)
    monkeypatch.setattr(metrics, "_BOOT_CELLS", 500 * 7)  # 7 resamples per chunk
    chunked = bootstrap_ci(x, n_boot=2000)
    assert chunked[0] == whole[0]
    assert chunked[1] == pytest.approx(whole[1], abs=0.1) and chunked[2] == pytest.approx(whole[2], abs=0.1)


def test_estimate_records_n():
    x = np.random.default_rng(4).exponential(3, 40)
    e = estimate(x, n_boot=100, seed=5)
    assert e.n == 40 and (e.value, e.ci_low, e.ci_high) == bootstrap_ci(x, n_boot=100, seed=5)


def test_cs_at_k_and_torchmetric_agree():
    pred, true = np.array([10, 14, 15.5, 30, 20]), np.array([10, 10, 10, 25, 26])
    # |err| = 0, 4, 5.5, 5, 6 -> within 5: 0, 4, 5 -> 3/5
    assert cs_at_k(pred, true, 5) == pytest.approx(0.6)
    assert cs_at_k(pred, true, 0) == pytest.approx(0.2)
    m = CumulativeScore(5)
    m.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(true, dtype=torch.float32))
    assert float(m.compute()) == pytest.approx(0.6)
    assert mae(pred, true) == pytest.approx((0 + 4 + 5.5 + 5 + 6) / 5)


def test_gender_accuracy_ignores_unknown():
    prob = np.array([0.9, 0.2, 0.6, 0.4, 0.99])
    gender = np.array([1, 0, 0, -1, -1])
    assert gender_accuracy(prob, gender) == pytest.approx(2 / 3)
    assert np.isnan(gender_accuracy(prob, np.full(5, -1)))


def test_age_bins():
    labels = age_bin_labels(np.array([0, 9.9, 10, 25, 69.5, 70, 101]))
    assert list(labels) == ["0-9", "0-9", "10-19", "20-29", "60-69", "70+", "70+"]


def test_summarize_groups_and_totals():
    pred = pd.DataFrame({
        "age": [5.0, 15, 25, 75, 30], "pred": [7.0, 15, 20, 70, 40],
        "gender": pd.array([0, 1, 1, pd.NA, 0], dtype="Int64"), "p_female": [0.1, 0.8, 0.3, 0.5, 0.7],
        "race": pd.array(["White", "Black", "White", pd.NA, "Asian"], dtype="string"),
    })
    s = summarize(pred, cs_k=5, n_boot=200)
    assert s["metrics"]["mae"]["value"] == pytest.approx((2 + 0 + 5 + 5 + 10) / 5)
    assert s["metrics"]["cs"]["value"] == pytest.approx(4 / 5) and s["metrics"]["cs"]["k"] == 5
    assert s["metrics"]["gender_acc"]["n"] == 4 and s["metrics"]["gender_acc"]["value"] == pytest.approx(2 / 4)
    assert s["metrics"]["bias"]["value"] == pytest.approx((2 + 0 - 5 - 5 + 10) / 5)
    bins = {g["group"]: g for g in s["by_age_bin"]}
    assert set(bins) == {"0-9", "10-19", "20-29", "30-39", "70+"}
    assert bins["70+"]["mae"]["value"] == 5 and bins["70+"]["gender_acc"] is None
    genders = {g["group"]: g["n"] for g in s["by_gender"]}
    assert genders == {"male": 2, "female": 2}
    races = {g["group"]: g["mae"]["value"] for g in s["by_race"]}
    assert races == {"Asian": 10, "Black": 0, "White": 3.5}
