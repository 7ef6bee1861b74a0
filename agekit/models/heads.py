"""Output heads shared by the age models."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BoundedAge", "AgeGenderHead"]


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


class AgeGenderHead(nn.Module):
    """Compact head: features -> Linear(hidden) -> GELU -> Dropout -> {bounded age, gender logit}.

    ``num_layers=1`` drops the hidden layer (the "one linear layer" ablation).
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
        age_range: tuple[float, float] = (0.0, 100.0),
        gender: bool = True,
    ) -> None:
        super().__init__()
        if num_layers not in (1, 2):
            raise ValueError(f"head num_layers must be 1 or 2, got {num_layers}")
        if num_layers == 2:
            self.body: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout))
            out_dim = hidden
        else:
            self.body = nn.Dropout(dropout)
            out_dim = in_features
        self.age_out = nn.Linear(out_dim, 1)
        self.gender_out = nn.Linear(out_dim, 1) if gender else None
        self.bound = BoundedAge(*age_range)
        # Start the age score at the middle of the range so the sigmoid is in its steep part.
        nn.init.zeros_(self.age_out.bias)

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(feats)
        out = {"age": self.bound(self.age_out(h).squeeze(-1))}
        if self.gender_out is not None:
            out["gender_logit"] = self.gender_out(h).squeeze(-1)
        return out
