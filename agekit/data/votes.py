"""Crowd-vote age labels (MiVOLO's LAGENDA protocol): weigh each annotator by their error on control items.

Every annotator sees some control items ("honeypots") whose age is known. An annotator's honeypot MAE says
how far their votes usually are from the truth, whatever the reason (noise, a habit of guessing high, not
looking); each vote then counts with the weight ``w = exp(-MAE / tau)`` and an item's age is the weighted mean
of its votes. No maintained library does this exact scheme (crowd-kit's aggregators are for categorical
labels or fit latent-truth models without control items), so it is written here; it is a few lines of pandas.

``tau`` (years) sets how fast trust falls with error: two annotators whose MAEs differ by ``tau`` differ by a
factor e in weight. Default ``"auto"``: half the median honeypot MAE of the scored annotators (at least
:data:`MIN_TAU`). Why: for unbiased Gaussian noise the best weights are inverse-variance, ``w ~ 1/sigma^2
~ 1/MAE^2``, whose log falls with slope ``-2/MAE``; ``exp(-MAE/tau)`` falls with slope ``-1/tau``. Taking
``tau = MAE_typical / 2`` makes both agree for the typical annotator, while the exponential still cuts much
harder than ``1/MAE^2`` for the far worse ones (spammers, strongly biased voters), which is the point of the
protocol; and it follows the data's scale (children's ages vs adults') instead of a fixed number of years.

Decided where the protocol is silent:

- annotators with no honeypot (or fewer than ``min_control``) are unscored; ``unscored="min"`` (default)
  gives them the lowest weight among scored annotators (they count, but no more than the least trusted one),
  ``"median"`` the median weight, ``"zero"`` drops their votes;
- the aggregate is computed for every voted item, honeypots included (``is_control`` marks them; their known
  age is in ``control_age``), so a honeypot's aggregate can be compared with its truth;
- agreement per item: the weighted standard deviation of its votes, the number of votes, and the effective
  number of votes ``(sum w)^2 / sum w^2`` (how many equally trusted votes the weighted mean is worth);
- one annotator voting twice on one item is an error (which vote counts is not ours to guess).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .adapters.folder import LabelFileError, parse_ages, read_label_csv

__all__ = ["VoteResult", "aggregate_votes", "read_votes", "read_control", "annotator_scores", "resolve_tau",
           "simulate_votes", "MIN_TAU", "UNSCORED_POLICIES"]

DEFAULT_CONTROL_COLUMN = "control_age"
MIN_TAU = 0.5  # years: floor of the automatic tau, so near-perfect annotators do not make weights explode
UNSCORED_POLICIES = ("min", "median", "zero")
Unscored = Literal["min", "median", "zero"]


@dataclass
class VoteResult:
    """``items``: one row per item; ``annotators``: one row per annotator; ``tau`` used; ``notes``."""

    items: pd.DataFrame
    annotators: pd.DataFrame
    tau: float
    notes: list[str] = field(default_factory=list)


def read_votes(path: str | Path, item: str = "item", annotator: str = "annotator", age: str = "age",
               control: str | None = None) -> pd.DataFrame:
    """Votes as (item, annotator, age[, control_age], line); errors name the file and line.

    ``control``: a column of the same file holding the known age of honeypot items (empty elsewhere); by
    default ``control_age`` when the file has it.
    """
    path = Path(path)
    df = read_label_csv(path, [item, annotator, age] + ([control] if control else []))
    if control is None and DEFAULT_CONTROL_COLUMN in df.columns:
        control = DEFAULT_CONTROL_COLUMN
    if df.empty:
        raise LabelFileError(f"{path}: no votes")
    for col in (item, annotator):
        empty = df[col].eq("")
        if empty.any():
            line = df["line"].iat[int(np.flatnonzero(empty.to_numpy())[0])]
            raise LabelFileError(f"{path}:{line}: {col} is empty ({int(empty.sum())} bad row(s))")
    out = pd.DataFrame({"item": df[item], "annotator": df[annotator], "age": parse_ages(path, df, age),
                        "line": df["line"]})
    if control:
        out["control_age"] = parse_ages(path, df, control, unknown_ok=True)
    dup = out.duplicated(["item", "annotator"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise LabelFileError(f"{path}:{out['line'].iat[i]}: annotator {out['annotator'].iat[i]!r} already voted on "
                             f"item {out['item'].iat[i]!r} ({int(dup.sum())} repeated vote(s))")
    return out


def read_control(path: str | Path, item: str = "item", age: str = "age") -> pd.Series:
    """Known ages of the control items (``item, age`` CSV) as a Series indexed by item."""
    path = Path(path)
    df = read_label_csv(path, [item, age])
    ages = parse_ages(path, df, age)
    dup = df[item].duplicated()
    if dup.any():
        line = df["line"].iat[int(np.flatnonzero(dup.to_numpy())[0])]
        raise LabelFileError(f"{path}:{line}: control item {df[item][dup].iat[0]!r} is listed twice")
    return pd.Series(ages.to_numpy(), index=pd.Index(df[item].to_numpy(), name="item"), name="control_age")


def _control_ages(votes: pd.DataFrame, control: pd.Series | None) -> pd.Series:
    """One known age per control item, from the control file or the votes' control column (must agree)."""
    parts = []
    if control is not None:
        parts.append(control.astype("float64"))
    if "control_age" in votes.columns:
        col = votes.dropna(subset=["control_age"])
        clash = col.groupby("item")["control_age"].nunique() > 1
        if clash.any():
            raise ValueError(f"control item {clash[clash].index[0]!r} has different known ages in the control column")
        parts.append(col.groupby("item")["control_age"].first())
    if not parts:
        raise ValueError("no control items: give a control file (item, age) or a control column with the known "
                         "ages of the honeypot items")
    known = pd.concat(parts)
    clash = known.groupby(level=0).nunique() > 1
    if clash.any():
        raise ValueError(f"control item {clash[clash].index[0]!r} has different known ages in the control file "
                         "and the control column")
    return known.groupby(level=0).first()


def annotator_scores(votes: pd.DataFrame, known: pd.Series) -> pd.DataFrame:
    """Per annotator: votes, honeypot votes, honeypot MAE and bias (vote - truth); NaN without honeypots."""
    truth = votes["item"].map(known)
    err = votes["age"] - truth
    g = votes.assign(_err=err, _abs=err.abs(), _ctl=truth.notna()).groupby("annotator", sort=True)
    return pd.DataFrame({"votes": g.size(), "control_votes": g["_ctl"].sum().astype(int),
                         "control_mae": g["_abs"].mean(), "control_bias": g["_err"].mean()})


def resolve_tau(tau: float | str, maes: np.ndarray) -> float:
    """A number, or ``"auto"``: half the median honeypot MAE (>= MIN_TAU); see the module docstring."""
    if isinstance(tau, str):
        if tau != "auto":
            try:
                tau = float(tau)
            except ValueError:
                raise ValueError(f"tau must be a positive number of years or 'auto', got {tau!r}") from None
        else:
            maes = maes[np.isfinite(maes)]
            return max(MIN_TAU, float(np.median(maes)) / 2.0) if len(maes) else MIN_TAU
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive number of years or 'auto', got {tau!r}")
    return float(tau)


def aggregate_votes(votes: pd.DataFrame, control: pd.Series | None = None, tau: float | str = "auto",
                    unscored: Unscored = "min", min_control: int = 1) -> VoteResult:
    """Weighted-mean age per item, annotators weighted by ``exp(-honeypot MAE / tau)`` (module docstring)."""
    if unscored not in UNSCORED_POLICIES:
        raise ValueError(f"unscored must be one of {', '.join(UNSCORED_POLICIES)}, got {unscored!r}")
    if min_control < 1:
        raise ValueError(f"min_control must be >= 1, got {min_control}")
    known = _control_ages(votes, control)
    ann = annotator_scores(votes, known)
    scored = ann["control_votes"] >= min_control
    if not scored.any():
        raise ValueError(f"no annotator voted on at least {min_control} control item(s): nobody can be scored")
    tau = resolve_tau(tau, ann.loc[scored, "control_mae"].to_numpy())
    weight = np.exp(-ann["control_mae"] / tau).where(scored)
    fill = {"min": weight[scored].min(), "median": weight[scored].median(), "zero": 0.0}[unscored]
    ann["scored"] = scored
    ann["weight"] = weight.fillna(fill)
    notes = []
    if (~scored).any():
        notes.append(f"{int((~scored).sum())} annotator(s) with fewer than {min_control} control vote(s) get the "
                     f"{unscored} weight ({fill:.3g}), e.g. {ann.index[~scored][0]!r}")
    unvoted = sorted(set(known.index) - set(votes["item"]))
    if unvoted:
        notes.append(f"{len(unvoted)} control item(s) have no votes, e.g. {unvoted[0]!r}")
    items = _weighted_items(votes.assign(w=votes["annotator"].map(ann["weight"]).to_numpy()))
    items["is_control"] = items["item"].isin(known.index)
    items["control_age"] = items["item"].map(known)
    no_weight = items["age"].isna()
    if no_weight.any():
        notes.append(f"{int(no_weight.sum())} item(s) only have votes of weight 0 (age left empty), "
                     f"e.g. {items.loc[no_weight, 'item'].iat[0]!r}")
    return VoteResult(items, ann.reset_index(), tau, notes)


def _weighted_items(v: pd.DataFrame) -> pd.DataFrame:
    """Per item: weighted mean, weighted std, votes, effective votes, total weight, plain mean and median."""
    v = v.assign(wa=v["w"] * v["age"], w2=v["w"] ** 2)
    g = v.groupby("item", sort=False)
    sw = g["w"].sum()
    mean = g["wa"].sum() / sw.where(sw > 0)
    dev2 = (v["age"] - v["item"].map(mean)) ** 2 * v["w"]
    var = dev2.groupby(v["item"], sort=False).sum() / sw.where(sw > 0)
    out = pd.DataFrame({"age": mean, "weighted_std": np.sqrt(var), "votes": g.size(),
                        "effective_votes": sw ** 2 / g["w2"].sum().where(sw > 0), "weight_sum": sw,
                        "mean": g["age"].mean(), "median": g["age"].median()})
    return out.rename_axis("item").reset_index()


def simulate_votes(n_items: int = 400, n_control: int = 60, annotators: list[tuple[float, float]] | None = None,
                   votes_per_item: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Simulated crowd: (votes, control ages, true ages of every item), for tests and for choosing ``tau``.

    ``annotators``: (noise std, bias) in years per annotator; default 6 good (std 3), 3 noisy (std 12) and
    3 biased (+8 years, std 3). True ages are uniform in 1-80; each item gets ``votes_per_item`` votes from
    distinct random annotators; votes are rounded to whole years and clipped to 0-100. Every annotator also
    votes on the control items drawn for them, as a real honeypot protocol mixes them into every batch.
    """
    if annotators is None:
        annotators = [(3.0, 0.0)] * 6 + [(12.0, 0.0)] * 3 + [(3.0, 8.0)] * 3
    rng = np.random.default_rng(seed)
    truth = pd.Series(rng.uniform(1, 80, n_items).round(), index=[f"i{i:04d}" for i in range(n_items)])
    rows = []
    for item, age in truth.items():
        for a in rng.choice(len(annotators), size=min(votes_per_item, len(annotators)), replace=False):
            std, bias = annotators[a]
            rows.append((item, f"a{a:02d}", float(np.clip(round(age + bias + rng.normal(0, std)), 0, 100))))
    votes = pd.DataFrame(rows, columns=["item", "annotator", "age"])
    control = truth.iloc[:n_control].rename("control_age")
    return votes, control, truth
