"""The face task: age regression (+ gender) on aligned face crops."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.classification import BinaryAccuracy

from ..evaluation.metrics import CumulativeScore
from ..models.heads import DISTRIBUTION_LOSSES, LOSS_HEADS, loss_head_error
from ..models.registry import AgeModelCfg
from .base import Task, register_task

if TYPE_CHECKING:
    from ..config.train import TrainConfig

__all__ = ["AgeTask", "DISTRIBUTION_LOSSES", "LOSS_HEADS", "age_loss", "adaptive_loss", "age_loss_from_outputs",
           "dldl_loss", "gaussian_label_distribution", "gaussian_nll_age_loss", "gender_loss", "loss_head_error",
           "mean_variance_loss", "interval_log_mass", "interval_censored_loss", "interval_distance", "label_target"]


def _weighted_mean(v: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return v.mean()
    weight = weight.to(v.dtype)
    return torch.sum(weight * v) / weight.sum().clamp_min(1e-8)


def _log_probs(dist: torch.Tensor) -> torch.Tensor:
    """log of the head's probabilities. The heads output probabilities (what ONNX exports and TTA averages),
    not logits; the clamp only guards bins at exactly 0 (outside the age range, or underflow)."""
    return torch.log(dist.float().clamp_min(1e-12))


def gaussian_label_distribution(target: torch.Tensor, num_bins: int, sigma: float,
                                support: torch.Tensor | None = None) -> torch.Tensor:
    """DLDL label distribution: N(y, sigma^2) evaluated at the integer ages ``0..num_bins-1``, normalised
    (over ``support``, the bins the head can predict, when given)."""
    ages = torch.arange(num_bins, device=target.device, dtype=torch.float32)
    q = torch.exp(-0.5 * ((ages - target.float().unsqueeze(-1)) / sigma) ** 2)
    if support is not None:
        q = q * support
    return q / q.sum(-1, keepdim=True).clamp_min(1e-12)


def dldl_loss(dist: torch.Tensor, age: torch.Tensor, target: torch.Tensor, sigma: float = 2.0,
              lam: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """DLDL-v2 (Gao et al., IJCAI 2018): ``KL(q || p) + lam * |E_p[age] - y|``.

    ``q`` is the Gaussian label distribution with ``sigma`` over all K bins (:func:`gaussian_label_distribution`),
    ``p`` the predicted distribution and ``E_p[age]`` its mean (the head's ``age``). The paper uses sigma 2
    and lambda 1. With an age range that starts above 0, the tail of ``q`` below it meets bins of probability 0:
    a constant term (the clamp in the log stops its gradient), so the optimum is unchanged.
    """
    q = gaussian_label_distribution(target, dist.shape[-1], sigma)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - _log_probs(dist))).sum(-1)
    return _weighted_mean(kl + lam * (age.float() - target.float()).abs(), weight)


def mean_variance_loss(dist: torch.Tensor, target: torch.Tensor, lambda_mean: float = 0.2,
                       lambda_var: float = 0.05, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-variance loss (Pan et al., CVPR 2018): ``CE + lambda_mean * (m - y)^2 / 2 + lambda_var * v``.

    ``m`` and ``v`` are the mean and variance of the predicted distribution over integer ages. The
    cross-entropy's target is the label; a non-integer label is split between its two neighbouring ages
    (linear interpolation), which is the one-hot of the paper for integer labels. The paper's weights are
    lambda_mean 0.2 and lambda_var 0.05.
    """
    k = dist.shape[-1]
    y = target.float().clamp(0, k - 1)
    lo = y.floor().long().clamp(max=k - 1)
    hi = (lo + 1).clamp(max=k - 1)
    frac = y - lo.float()
    logp = _log_probs(dist)
    logp_lo, logp_hi = logp.gather(-1, lo.unsqueeze(-1)).squeeze(-1), logp.gather(-1, hi.unsqueeze(-1)).squeeze(-1)
    ce = -((1 - frac) * logp_lo + frac * logp_hi)
    ages = torch.arange(k, device=dist.device, dtype=torch.float32)
    p = dist.float()
    m = (p * ages).sum(-1)
    v = (p * (ages - m.unsqueeze(-1)) ** 2).sum(-1)
    return _weighted_mean(ce + lambda_mean * 0.5 * (m - target.float()) ** 2 + lambda_var * v, weight)


def gaussian_nll_age_loss(age: torch.Tensor, age_std: torch.Tensor, target: torch.Tensor,
                          weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian negative log-likelihood of the label under N(age, age_std^2)
    (:func:`torch.nn.functional.gaussian_nll_loss`, with its constant term)."""
    import torch.nn.functional as F

    nll = F.gaussian_nll_loss(age.float(), target.float(), age_std.float() ** 2, full=True, reduction="none")
    return _weighted_mean(nll, weight)


def adaptive_loss(pred: torch.Tensor, target: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``1 + sigma * mean((y - y_hat)^2 / (|y - y_hat| + sigma))`` (ConvNeXt-ViT paper).

    Quadratic for errors well below sigma, linear (L1-like) for large ones: robust to label noise.
    """
    d = target - pred
    return 1.0 + sigma * torch.mean(d * d / (d.abs() + sigma))


# -- learning from age groups: interval-censored losses ------------------------------------------------------
# A group label [lo, hi] (inclusive whole years) covers the continuous span [lo - 0.5, hi + 0.5): the integer-age
# bin a of a distribution head stands for [a - 0.5, a + 0.5), so "16-30" is exactly the bins 16..30.
HALF_YEAR = 0.5
_LOG_TINY = math.log(1e-12)  # floor of a log-probability: the same 1e-12 as _log_probs


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d < 0, accurate at both ends (Maechler 2012): expm1 near 0, log1p far below."""
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def _gaussian_log_mass(mu: torch.Tensor, sigma: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)), a = (lo - 0.5 - mu) / sigma, b = (hi + 0.5 - mu) / sigma, in log space.

    Written as log Phi(upper) + log(1 - Phi(lower) / Phi(upper)) with ``torch.special.log_ndtr``; an interval above
    the mean is mirrored (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)) so both ends sit in Phi's lower tail, where log_ndtr
    stays exact. So an interval 40 sigmas away still gives a finite log mass and a useful gradient (no 0 - 0).
    """
    sigma = sigma.float().clamp_min(1e-6)
    a = (lo.float() - HALF_YEAR - mu.float()) / sigma
    b = (hi.float() + HALF_YEAR - mu.float()) / sigma
    mirror = (a + b) > 0
    upper = torch.where(mirror, -a, b)
    lower = torch.where(mirror, -b, a)
    log_up, log_low = torch.special.log_ndtr(upper), torch.special.log_ndtr(lower)
    d = (log_low - log_up).clamp(max=-1e-7)  # < 0; equal only when both ends round to the same float
    return log_up + _log1mexp(d)


def _dist_log_mass(dist: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log of the probability a softmax-over-integer-ages head puts on the bins a with lo - 0.5 <= a < hi + 0.5.

    A logsumexp over the in-range log-probabilities: no sum of tiny probabilities underflows first. Only exact
    zeros are floored (at float32's smallest normal number, not at 1e-12 as the other losses do): a confident wrong
    prediction puts ~1e-18 on the group's bins, and a 1e-12 clamp would leave exactly those rows without a
    gradient. A group wholly beyond the head's last bin cannot be learnt: its log mass is the constant log(1e-12).
    """
    ages = torch.arange(dist.shape[-1], device=dist.device, dtype=torch.float32)
    inside = (ages >= lo.float().unsqueeze(-1) - HALF_YEAR) & (ages < hi.float().unsqueeze(-1) + HALF_YEAR)
    logp = torch.log(dist.float().clamp_min(torch.finfo(torch.float32).tiny)).masked_fill(~inside, float("-inf"))
    some = inside.any(-1)
    # a row with no bin in range would be a logsumexp of -inf only (a NaN gradient): give it zeros, then the constant
    out = torch.logsumexp(torch.where(some.unsqueeze(-1), logp, torch.zeros_like(logp)), dim=-1)
    return torch.where(some, out, torch.full_like(out, _LOG_TINY))  # a range beyond the last bin


def interval_log_mass(out: dict[str, torch.Tensor], lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per row, log P(age in [lo, hi]) under the model's predicted age distribution (``age_dist``, else the
    Gaussian ``age``/``age_std``). The interval-censored likelihood: what a group label says about the age."""
    if "age_dist" in out:
        return _dist_log_mass(out["age_dist"], lo, hi)
    if "age_std" in out:
        return _gaussian_log_mass(out["age"], out["age_std"], lo, hi)
    raise ValueError("an age-group label needs a distribution (age_dist) or Gaussian (age_std) head for its "
                     "likelihood; point losses use interval_distance")


def interval_distance(age: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """How far a point prediction lies outside [lo - 0.5, hi + 0.5] (0 inside): the censored L1 of a group label."""
    age = age.float()
    return torch.relu(lo.float() - HALF_YEAR - age) + torch.relu(age - hi.float() - HALF_YEAR)


def interval_censored_loss(kind: str, out: dict[str, torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                           weight: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of rows labelled by an age group [lo, hi] under age loss ``kind``.

    Distribution losses (``dldl``, ``mean_variance``, ``gaussian_nll``): ``-log P(lo <= age <= hi)``, the
    probability mass the predicted distribution puts inside the group (the sum of the bins in range, or
    Phi((hi + 0.5 - mu) / sigma) - Phi((lo - 0.5 - mu) / sigma)), computed in log space. Point losses score
    ``age`` by its distance to the group: ``l1``/``adaptive`` the distance, ``mse``/``weighted_mse`` its square.
    """
    if kind in DISTRIBUTION_LOSSES:
        return _weighted_mean(-interval_log_mass(out, lo, hi), weight)
    dist = interval_distance(out["age"], lo, hi)
    if kind in ("l1", "adaptive"):
        return _weighted_mean(dist, weight)
    if kind in ("mse", "weighted_mse"):
        return _weighted_mean(dist ** 2, weight)
    raise ValueError(f"unknown age loss {kind!r}")


def label_target(pred: torch.Tensor, age: torch.Tensor, lo: torch.Tensor | None = None,
                 hi: torch.Tensor | None = None) -> torch.Tensor:
    """The point of each row's label nearest to ``pred``: the age itself, or for an age-group row (age NaN)
    ``pred`` clamped into [lo - 0.5, hi + 0.5], so ``|pred - label_target|`` is the MAE to the group's range."""
    if lo is None or hi is None:
        return age
    group = torch.isnan(age)
    nearest = torch.minimum(torch.maximum(pred.float(), lo.float() - HALF_YEAR), hi.float() + HALF_YEAR)
    return torch.where(group, nearest.to(age.dtype), age)


def age_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             sigma: float = 2.0) -> torch.Tensor:
    import torch.nn.functional as F

    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "adaptive":
        return adaptive_loss(pred, target, sigma)
    if kind == "weighted_mse":
        if weight is None:
            raise ValueError("weighted_mse needs LDS weights")
        return torch.sum(weight * (pred - target) ** 2) / weight.sum().clamp_min(1e-8)
    if kind in DISTRIBUTION_LOSSES:
        raise ValueError(f"age loss {kind!r} needs the model's outputs, not only age: use age_loss_from_outputs")
    raise ValueError(f"unknown age loss {kind!r}")


def age_loss_from_outputs(kind: str, out: dict[str, torch.Tensor], target: torch.Tensor,
                          weight: torch.Tensor | None = None, cfg: Any = None, lo: torch.Tensor | None = None,
                          hi: torch.Tensor | None = None) -> torch.Tensor:
    """The age loss ``kind`` of a model's outputs; ``cfg`` is the config's ``loss`` section (sigma, lambdas).

    Point losses score ``out["age"]``; ``dldl``/``mean_variance`` need ``age_dist`` (a distribution head),
    ``gaussian_nll`` needs ``age_std`` (the Gaussian head).

    Age groups: with ``lo``/``hi``, rows whose ``target`` is NaN are labelled by the group [lo, hi] and get
    :func:`interval_censored_loss`; the other rows keep the usual loss. One batch can mix both: the result is
    the (sample-weighted) mean over all labelled rows. Rows with neither label are ignored.
    """
    if lo is not None and hi is not None:
        group = torch.isnan(target) & torch.isfinite(lo) & torch.isfinite(hi)
        if bool(group.any()):
            return _mixed_loss(kind, out, target, weight, cfg, lo, hi, group)
    return _exact_loss(kind, out, target, weight, cfg)


def _mixed_loss(kind: str, out: dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor | None,
                cfg: Any, lo: torch.Tensor, hi: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Exact-age rows with the usual loss and group rows with the censored one, averaged over both by weight."""
    exact = ~torch.isnan(target)
    w = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.float()
    total = interval_censored_loss(kind, _rows(out, group), lo[group], hi[group], w[group]) * w[group].sum()
    if bool(exact.any()):
        # the exact rows' own loss (e.g. unweighted l1 ignores weight) with their share of the total weight
        total = total + _exact_loss(kind, _rows(out, exact), target[exact],
                                    None if weight is None else weight[exact], cfg) * w[exact].sum()
    return total / w[group | exact].sum().clamp_min(1e-8)


def _rows(out: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[mask] for k, v in out.items()}


def _exact_loss(kind: str, out: dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor | None,
                cfg: Any) -> torch.Tensor:
    sigma = getattr(cfg, "sigma", 2.0)
    if kind not in DISTRIBUTION_LOSSES:
        return age_loss(kind, out["age"], target, weight, sigma)
    need = "age_dist" if kind in ("dldl", "mean_variance") else "age_std"
    if need not in out:
        heads = ", ".join(LOSS_HEADS[kind])
        raise ValueError(f"loss.age={kind} needs the {need} output of an age_head in ({heads}); "
                         f"the model gives {', '.join(out)}")
    if kind == "dldl":
        return dldl_loss(out["age_dist"], out["age"], target, sigma, getattr(cfg, "dldl_lambda", 1.0), weight)
    if kind == "mean_variance":
        return mean_variance_loss(out["age_dist"], target, getattr(cfg, "mv_lambda_mean", 0.2),
                                  getattr(cfg, "mv_lambda_var", 0.05), weight)
    return gaussian_nll_age_loss(out["age"], out["age_std"], target, weight)


def gender_loss(logit: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
    """BCE over rows with a known gender (gender < 0 means unknown)."""
    import torch.nn.functional as F

    known = gender >= 0
    if not bool(known.any()):
        return logit.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logit[known], gender[known].float())


@register_task("age")
class AgeTask(Task):
    """Batches: (uint8 crops, age, gender (-1 unknown), sample weight[, age_lo, age_hi]).

    With age groups in the data the batch also carries each row's group; ``age`` is NaN on group rows.
    """

    output_names = ("age", "gender_logit", "age_std", "age_dist")
    monitor = ("val/mae", "min")
    report_metric = "test/mae"
    report_label = "MAE (years)"
    batch_augment = True

    def prepare_config(self, cfg: TrainConfig) -> TrainConfig:
        """Input dropping is for models with two inputs (face+body); a face model has nothing to drop."""
        d = cfg.data
        if d.drop_face_p or d.drop_body_p:
            from ..config.base import ConfigError

            raise ConfigError(f"data.drop_face_p / data.drop_body_p apply to face+body models (mivolo_*); "
                              f"{cfg.model.name} takes one face crop")
        return cfg

    def datamodule(self, cfg: TrainConfig, model_cfg: AgeModelCfg):
        from ..data.datamodule import AgeDataModule

        return AgeDataModule(cfg, model_cfg)

    def loss(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
        _, age, gender, weight, *bounds = batch
        l = cfg.loss
        loss = age_loss_from_outputs(l.age, out, age, weight, l, *bounds)
        if "gender_logit" in out and l.gender_weight > 0:
            loss = loss + l.gender_weight * gender_loss(out["gender_logit"], gender)
        return loss

    def metrics(self, cfg: TrainConfig, model_cfg: AgeModelCfg) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError(), f"cs@{cfg.eval.cs_k:g}": CumulativeScore(cfg.eval.cs_k),
                "gender_acc": BinaryAccuracy()}

    def update_metrics(self, metrics: nn.ModuleDict, out: dict[str, torch.Tensor],
                       batch: Sequence[torch.Tensor]) -> list[str]:
        """``mae``: |age - label| for exact ages; for age-group rows the distance to the group (0 inside), so a
        data set of groups only still has a validation MAE to select checkpoints on. CS@k: exact ages only."""
        _, age, gender, _, *bounds = batch
        pred = out["age"]
        names = []
        for n in metrics:
            if n == "gender_acc":
                continue
            if n == "mae":
                metrics[n].update(pred, label_target(pred, age, *bounds))
            else:
                exact = ~torch.isnan(age)
                if not bool(exact.any()):
                    continue
                metrics[n].update(pred[exact], age[exact])
            names.append(n)
        if "gender_logit" in out:
            known = gender >= 0
            if bool(known.any()):
                metrics["gender_acc"].update(torch.sigmoid(out["gender_logit"][known]), gender[known])
            names.append("gender_acc")
        return names

    def train_log(self, out: dict[str, torch.Tensor], batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = out["age"].detach()
        return {"mae": (pred - label_target(pred, batch[1], *batch[4:])).abs().mean()}

    def eval_tta(self, cfg: TrainConfig) -> bool:
        return cfg.eval.tta_flip

    def example_batch(self, cfg: TrainConfig, model_cfg: AgeModelCfg, batch_size: int) -> tuple[torch.Tensor, ...]:
        (x,) = super().example_batch(cfg, model_cfg, batch_size)
        return x, torch.rand(batch_size) * 80, torch.randint(0, 2, (batch_size,)), torch.ones(batch_size)

    def evaluate(self, model: str | Path, data: str, split: str = "test", root: str | None = None, **kwargs: Any):
        """agekit.evaluation.evaluate.evaluate: MAE, CS@k, gender accuracy with bootstrap CIs."""
        from ..evaluation.evaluate import evaluate

        return evaluate(model, data, split, root, **kwargs)

    def compare(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
        from ..evaluation.parity import compare_outputs

        return compare_outputs(ref, cand, self.output_names)

    def parity_inputs(self, check_data: str | Path | None, cfg: AgeModelCfg, n: int = 64,
                      root: str | Path | None = None, **kwargs: Any) -> tuple[np.ndarray, str]:
        from ..evaluation.parity import parity_inputs

        return parity_inputs(check_data, cfg, n, root, **kwargs)
