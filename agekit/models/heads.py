"""Output heads shared by the age models.

The age part of :class:`AgeGenderHead` is one of four kinds (``age_head``):

- ``"regression"`` (default): one bounded scalar (:class:`BoundedAge`). Outputs ``age``.
- ``"dldl"`` / ``"mean_variance"``: a softmax over the integer ages ``0..K-1`` (:class:`AgeDistribution`),
  ``K = floor(max_age) + 1``; ages outside the model's age range get no probability. The two kinds are the
  same network and differ only in the loss they are meant for (DLDL-v2, Gao et al. 2018; mean-variance,
  Pan et al. 2018). Outputs ``age``, ``age_std``, ``age_dist``.
- ``"gaussian"``: a bounded mean and a predicted sigma (softplus), trained with a Gaussian NLL
  (``age_std = MIN_SIGMA + softplus(score)``). Outputs ``age``, ``age_std``.

``age`` is always the distribution's **mean** (the expectation), not its median: the mean is a smooth,
differentiable function of the probabilities (DLDL-v2 trains it directly with an L1 term; the mean-variance
loss penalises it), it is exactly what TTA averaging of the distribution preserves (the mean of the averaged
distribution is the average of the means), and for the unimodal, nearly symmetric distributions these heads
learn the two differ by a fraction of a year. A median over integer bins would be piecewise constant.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AGE_HEADS", "DISTRIBUTION_HEADS", "DISTRIBUTION_LOSSES", "LOSS_HEADS", "AgeDistribution", "AgeGenderHead",
           "BoundedAge", "loss_head_error", "num_age_bins"]

AGE_HEADS = ("regression", "dldl", "mean_variance", "gaussian")
DISTRIBUTION_HEADS = ("dldl", "mean_variance")  # heads with an ``age_dist`` output (softmax over integer ages)
# losses that need more than the point estimate ``age``, and the age heads (model kwarg age_head) that give it
DISTRIBUTION_LOSSES = ("dldl", "mean_variance", "gaussian_nll")
LOSS_HEADS = {"dldl": ("dldl", "mean_variance"), "mean_variance": ("dldl", "mean_variance"),
              "gaussian_nll": ("gaussian",)}


def loss_head_error(loss: str, age_head: str) -> str | None:
    """A one-line reason why ``loss.age=loss`` cannot train ``age_head``, or None when they pair.

    Distribution losses need the head that produces what they score (``age_dist`` / ``age_std``); the
    Gaussian head's sigma is learnt only from the Gaussian NLL, so it needs that loss. Point losses
    (l1, mse, adaptive, weighted_mse) train ``age`` of any other head, a distribution head's mean included.
    """
    need = LOSS_HEADS.get(loss)
    if need is not None and age_head not in need:
        return (f"loss.age={loss} needs model.kwargs.age_head in ({', '.join(need)}), got {age_head!r}")
    if age_head == "gaussian" and loss != "gaussian_nll":
        return (f"model.kwargs.age_head=gaussian learns its sigma only from loss.age=gaussian_nll, got {loss!r}")
    return None


MIN_SIGMA = 0.1  # years: floor of the Gaussian head's sigma, so the NLL cannot collapse onto one sample


def num_age_bins(age_range: tuple[float, float]) -> int:
    """K, the number of integer-age bins ``0..K-1`` of a distribution head for ``age_range``."""
    return int(math.floor(float(age_range[1]))) + 1


class BoundedAge(nn.Module):
    """Maps a raw score to an age inside [min_age, max_age] with a scaled sigmoid.

    Bounding keeps early training from predicting negative or absurd ages and lets the
    range follow the dataset (e.g. 0-100 for UTKFace, 0-70 for FG-NET).
    """

    def __init__(self, min_age: float = 0.0, max_age: float = 100.0) -> None:
        super().__init__()
        if not max_age > min_age:
            raise ValueError(f"age range must satisfy min < max, got [{min_age}, {max_age}]")
        self.register_buffer("min_age", torch.tensor(float(min_age)), persistent=False)
        self.register_buffer("span", torch.tensor(float(max_age - min_age)), persistent=False)

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        return self.min_age + self.span * torch.sigmoid(score)


class AgeDistribution(nn.Module):
    """Logits over integer ages (B, K) -> ``{age, age_std, age_dist}``.

    Bins outside ``[min_age, max_age]`` get a large negative logit offset (not -inf, which some runtimes and
    fp16 handle badly), so their probability is 0 and ``age`` stays inside the range.
    """

    def __init__(self, min_age: float = 0.0, max_age: float = 100.0) -> None:
        super().__init__()
        if not max_age > min_age or min_age < 0:
            raise ValueError(f"a distribution head needs an age range 0 <= min < max, got [{min_age}, {max_age}]")
        k = num_age_bins((min_age, max_age))
        valid = [min_age <= a <= max_age for a in range(k)]  # plain Python: the model may be built on "meta"
        if sum(valid) < 2:
            raise ValueError(f"age range [{min_age}, {max_age}] holds fewer than 2 integer ages")
        self.num_bins = k
        self.register_buffer("ages", torch.arange(k, dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.tensor([0.0 if v else -1e4 for v in valid]), persistent=False)

    def forward(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        p = torch.softmax(logits.float() + self.offset, dim=-1)
        age = (p * self.ages).sum(-1)
        var = (p * (self.ages - age.unsqueeze(-1)) ** 2).sum(-1)
        return {"age": age, "age_std": torch.sqrt(var.clamp_min(1e-6)), "age_dist": p}


class AgeGenderHead(nn.Module):
    """Compact head: features -> Linear(hidden) -> GELU -> Dropout -> {age outputs, gender logit}.

    ``num_layers=1`` drops the hidden layer (the "one linear layer" ablation). ``age_head`` picks the age
    output (see the module docstring); ``"regression"`` keeps the parameter names and outputs of the
    original head, so models trained before the other kinds existed load and predict unchanged.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
        age_range: tuple[float, float] = (0.0, 100.0),
        gender: bool = True,
        age_head: str = "regression",
    ) -> None:
        super().__init__()
        if num_layers not in (1, 2):
            raise ValueError(f"head num_layers must be 1 or 2, got {num_layers}")
        if age_head not in AGE_HEADS:
            raise ValueError(f"age_head must be one of {', '.join(AGE_HEADS)}, got {age_head!r}")
        if num_layers == 2:
            self.body: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout))
            out_dim = hidden
        else:
            self.body = nn.Dropout(dropout)
            out_dim = in_features
        self.age_head = age_head
        if age_head in DISTRIBUTION_HEADS:
            self.dist = AgeDistribution(*age_range)
            self.age_out = nn.Linear(out_dim, self.dist.num_bins)
            nn.init.zeros_(self.age_out.bias)  # start from the uniform distribution over the range
        else:
            self.age_out = nn.Linear(out_dim, 1)
            self.bound = BoundedAge(*age_range)
            # Start the age score at the middle of the range so the sigmoid is in its steep part.
            nn.init.zeros_(self.age_out.bias)
        if age_head == "gaussian":
            self.sigma_out = nn.Linear(out_dim, 1)
            # start with sigma ~ a tenth of the range: wide enough that early errors do not explode the NLL
            start = max(float(age_range[1] - age_range[0]) / 10.0 - MIN_SIGMA, 0.5)
            nn.init.constant_(self.sigma_out.bias, math.log(math.expm1(start)))
        self.gender_out = nn.Linear(out_dim, 1) if gender else None

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(feats)
        if self.age_head in DISTRIBUTION_HEADS:
            out = self.dist(self.age_out(h))
        elif self.age_head == "gaussian":
            out = {"age": self.bound(self.age_out(h).squeeze(-1)),
                   "age_std": MIN_SIGMA + F.softplus(self.sigma_out(h).squeeze(-1).float())}
        else:
            out = {"age": self.bound(self.age_out(h).squeeze(-1))}
        if self.gender_out is not None:
            out["gender_logit"] = self.gender_out(h).squeeze(-1)
        return out
