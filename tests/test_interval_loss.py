"""Learning from age groups: the interval-censored loss on known distributions, mixed batches, the age task."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agekit.models.heads import AgeDistribution
from agekit.tasks.age import (age_loss_from_outputs, dldl_loss, interval_censored_loss, interval_distance,
                              interval_log_mass, label_target)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _dist(p: np.ndarray) -> dict[str, torch.Tensor]:
    p = torch.tensor(p, dtype=torch.float32)
    ages = torch.arange(p.shape[-1], dtype=torch.float32)
    return {"age_dist": p, "age": (p * ages).sum(-1)}


def test_distribution_head_mass_is_the_sum_of_the_bins_in_range():
    k = 101
    uniform = np.full((1, k), 1 / k)
    lo, hi = torch.tensor([16.0]), torch.tensor([30.0])
    assert interval_log_mass(_dist(uniform), lo, hi).item() == pytest.approx(math.log(15 / k), abs=1e-5)
    # a known, uneven distribution: mass on 14..17 is 0.1 each, the rest spread evenly
    p = np.full(k, 0.6 / (k - 4))
    p[14:18] = 0.1
    out = _dist(p[None])
    assert -interval_censored_loss("dldl", out, lo, hi).item() == pytest.approx(
        math.log(0.2 + 13 * 0.6 / (k - 4)), abs=1e-5)  # bins 16, 17 (0.1 each) + 18..30
    assert interval_log_mass(out, torch.tensor([0.0]), torch.tensor([15.0])).item() == pytest.approx(
        math.log(0.2 + 14 * 0.6 / (k - 4)), abs=1e-5)
    # open top [61, 130] on a 0..100 head: the bins 61..100
    assert interval_log_mass(_dist(uniform), torch.tensor([61.0]), torch.tensor([130.0])).item() == pytest.approx(
        math.log(40 / k), abs=1e-5)
    # all the mass inside: zero loss; a group beyond the head's last bin: finite (the 1e-12 floor)
    one = np.zeros((1, k))
    one[0, 20] = 1.0
    assert interval_censored_loss("mean_variance", _dist(one), lo, hi).item() == pytest.approx(0.0, abs=1e-6)
    far = interval_censored_loss("dldl", _dist(one), torch.tensor([110.0]), torch.tensor([120.0]))
    assert torch.isfinite(far) and far.item() == pytest.approx(-math.log(1e-12), rel=1e-4)
    logits = torch.zeros(2, k, requires_grad=True)  # that row in a batch leaves the other rows' gradients intact
    loss = interval_censored_loss("dldl", AgeDistribution(0, 100)(logits), torch.tensor([110.0, 16.0]),
                                  torch.tensor([120.0, 30.0]))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


def test_distribution_loss_from_logits_is_finite_and_pulls_mass_into_the_group():
    head = AgeDistribution(0, 100)
    logits = torch.zeros(1, 101)
    logits[0, 70] = 40.0  # nearly all mass at 70: the group's bins hold about exp(-40) each (underflow zone)
    logits.requires_grad_(True)
    out = head(logits)
    loss = interval_censored_loss("dldl", out, torch.tensor([16.0]), torch.tensor([30.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 70] > 0 and (logits.grad[0, 16:31] <= 0).all()  # descent raises the in-range logits


def test_gaussian_mass_matches_phi_and_stays_finite_far_in_the_tails():
    lo, hi = torch.tensor([16.0, 61.0, 0.0]), torch.tensor([30.0, 130.0, 15.0])
    mu, sd = torch.tensor([25.0, 40.0, 33.0]), torch.tensor([5.0, 10.0, 6.0])
    got = interval_log_mass({"age": mu, "age_std": sd}, lo, hi)
    want = [math.log(_phi((h + 0.5 - m) / s) - _phi((l - 0.5 - m) / s))
            for l, h, m, s in zip(lo.tolist(), hi.tolist(), mu.tolist(), sd.tolist())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # 400 sigmas away, on both sides: the naive Phi(b) - Phi(a) is 0 - 0 (log = -inf); log space is finite
    mu = torch.tensor([20.0, 100.0], requires_grad=True)
    sd = torch.tensor([0.1, 0.1], requires_grad=True)
    lm = interval_log_mass({"age": mu, "age_std": sd}, torch.tensor([61.0, 16.0]), torch.tensor([130.0, 30.0]))
    assert torch.isfinite(lm).all() and (lm < -1e4).all()
    # for the lower tail, log Phi(x) ~ -x^2/2 - log(-x) - log(2 pi)/2 (Mills ratio)
    x = (60.5 - 20.0) / 0.1
    assert lm[0].item() == pytest.approx(-x * x / 2 - math.log(x) - 0.5 * math.log(2 * math.pi), rel=1e-4)
    (-lm.sum()).backward()
    assert torch.isfinite(mu.grad).all() and mu.grad[0] < 0 < mu.grad[1]  # pushes each mean towards its group
    # a tiny interval against a huge sigma: ends round close together, still a finite, correct log mass
    lm = interval_log_mass({"age": torch.tensor([30.0]), "age_std": torch.tensor([1e4])}, torch.tensor([30.0]),
                           torch.tensor([30.0]))
    assert lm.item() == pytest.approx(math.log(1 / (1e4 * math.sqrt(2 * math.pi))), rel=1e-2)


def test_point_heads_use_the_distance_to_the_group():
    age = torch.tensor([10.0, 20.0, 35.0])
    lo, hi = torch.full((3,), 16.0), torch.full((3,), 30.0)
    np.testing.assert_allclose(interval_distance(age, lo, hi).numpy(), [5.5, 0.0, 4.5])
    assert interval_censored_loss("l1", {"age": age}, lo, hi).item() == pytest.approx(10 / 3)
    assert interval_censored_loss("mse", {"age": age}, lo, hi).item() == pytest.approx((5.5 ** 2 + 4.5 ** 2) / 3)
    np.testing.assert_allclose(label_target(age, torch.full((3,), float("nan")), lo, hi).numpy(), [15.5, 20, 30.5])
    with pytest.raises(ValueError, match="distribution"):
        interval_log_mass({"age": age}, lo, hi)


def test_one_batch_mixes_exact_ages_and_groups():
    torch.manual_seed(0)
    head = AgeDistribution(0, 100)
    logits = torch.randn(6, 101, requires_grad=True)
    out = head(logits)
    target = torch.tensor([25.0, float("nan"), 40.0, float("nan"), 7.0, float("nan")])
    lo = torch.tensor([25.0, 16.0, 40.0, 31.0, 7.0, 61.0])
    hi = torch.tensor([25.0, 30.0, 40.0, 45.0, 7.0, 130.0])
    w = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0, 1.0])
    exact, group = ~torch.isnan(target), torch.isnan(target)
    mixed = age_loss_from_outputs("dldl", out, target, w, None, lo, hi)
    sub = lambda m: {k: v[m] for k, v in out.items()}  # noqa: E731
    e = dldl_loss(out["age_dist"][exact], out["age"][exact], target[exact], weight=w[exact])
    g = interval_censored_loss("dldl", sub(group), lo[group], hi[group], w[group])
    want = (e * w[exact].sum() + g * w[group].sum()) / w.sum()
    assert mixed.item() == pytest.approx(want.item(), rel=1e-6)
    mixed.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad.abs().sum(-1) > 0).all()  # every row learns
    # without group rows the loss is exactly the usual one
    plain = age_loss_from_outputs("dldl", sub(exact), target[exact], w[exact], None, lo[exact], hi[exact])
    assert plain.item() == pytest.approx(e.item(), rel=1e-6)
    # the Gaussian head mixes its NLL with the censored Phi mass the same way
    gout = {"age": torch.tensor([25.0, 20.0]), "age_std": torch.tensor([4.0, 4.0])}
    gl = age_loss_from_outputs("gaussian_nll", gout, torch.tensor([25.0, float("nan")]), None, None,
                               torch.tensor([25.0, 16.0]), torch.tensor([25.0, 30.0]))
    nll = 0.5 * math.log(2 * math.pi * 16)
    mass = _phi((30.5 - 20) / 4) - _phi((15.5 - 20) / 4)
    assert gl.item() == pytest.approx((nll - math.log(mass)) / 2, rel=1e-5)


def test_age_task_trains_on_groups_and_reports_mae_to_the_range():
    from agekit.config.train import load_config
    from agekit.tasks import get_task

    task = get_task("age")
    cfg = load_config(None, ["loss.age=dldl", "model.kwargs.age_head=dldl"])
    head = AgeDistribution(0, 100)
    logits = torch.zeros(4, 101)
    logits[:, 40] = 30.0  # every row predicts 40
    out = head(logits)
    nan = float("nan")
    batch = (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([40.0, nan, nan, 35.0]),
             torch.tensor([0, 1, -1, 0]), torch.ones(4), torch.tensor([40.0, 16.0, 31.0, 35.0]),
             torch.tensor([40.0, 30.0, 45.0, 35.0]))
    loss = task.loss(out, batch, cfg)
    assert torch.isfinite(loss)
    metrics = torch.nn.ModuleDict(task.metrics(cfg, None))
    names = task.update_metrics(metrics, out, batch)
    assert "mae" in names and "cs@5" in names
    # |40-40|, 40 vs [15.5, 30.5] -> 9.5, 40 inside [30.5, 45.5] -> 0, |40-35| = 5
    assert metrics["mae"].compute().item() == pytest.approx((0 + 9.5 + 0 + 5) / 4, abs=1e-3)
    assert metrics["cs@5"].compute().item() == pytest.approx(1.0)  # exact rows only: 0 and 5 years off
    assert task.train_log(out, batch)["mae"].item() == pytest.approx(14.5 / 4, abs=1e-3)


def test_training_on_exact_ages_and_groups_together(tmp_path):
    """One tiny epoch end to end (datamodule -> 6-item batches -> mixed loss -> val MAE) on synthetic chips
    where half the rows carry only PETA-style groups."""
    import pandas as pd

    from test_training_core import _synthetic_utkface

    from agekit.config.train import load_config
    from agekit.data.adapters import get_adapter
    from agekit.data.manifest import write_manifest
    from agekit.data.splits import random_split
    from agekit.training.runner import train

    df = random_split(get_adapter("utkface")(_synthetic_utkface(tmp_path / "utk", n=32)), fracs=(0.5, 0.25, 0.25))
    edges = [(0, 15), (16, 30), (31, 45), (46, 60), (61, 130)]
    group = np.arange(len(df)) % 2 == 1
    lo_hi = [next(e for e in edges if e[0] <= a <= e[1] + 0.99) for a in df["age"]]
    df["age_lo"] = np.where(group, [e[0] for e in lo_hi], np.nan)
    df["age_hi"] = np.where(group, [e[1] for e in lo_hi], np.nan)
    df.loc[group, "age"] = np.nan
    write_manifest(df, tmp_path / "m.csv")
    cfg = load_config(None, [f"data.manifest={tmp_path / 'm.csv'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "data.batch_size=8", f"trainer.out_dir={tmp_path / 'run'}", "trainer.progress=none",
                             "model.pretrained=false", "model.kwargs.age_head=dldl", "loss.age=dldl",
                             "model.kwargs.head_hidden=16", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
                             "trainer.channels_last=false", "eval.tta_flip=false"])
    train(cfg)
    log = pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    assert np.isfinite(log["train/loss"].dropna()).all() and np.isfinite(log["val/mae"].dropna()).all()
    assert log["val/mae"].notna().any()
