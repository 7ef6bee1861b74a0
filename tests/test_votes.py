"""Crowd-vote aggregation: honeypot-weighted votes beat the plain mean and median on simulated annotators."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.votes import MIN_TAU, aggregate_votes, read_votes, resolve_tau, simulate_votes

runner = CliRunner()


def _maes(seed: int, **kw) -> dict[str, float]:
    votes, control, truth = simulate_votes(seed=seed, **kw)
    res = aggregate_votes(votes, control)
    items = res.items[~res.items["is_control"]]  # score on the items whose age the protocol did not know
    t = items["item"].map(truth)
    return {k: float((items[k] - t).abs().mean()) for k in ("age", "mean", "median")}


@pytest.mark.parametrize("seed", range(5))
def test_weighted_vote_beats_mean_and_median(seed):
    """Default crowd: 6 good (std 3), 3 noisy (std 12) and 3 biased (+8 years) annotators, 5 votes per item."""
    m = _maes(seed)
    assert m["age"] < m["mean"] and m["age"] < m["median"], m
    assert m["age"] < 0.75 * min(m["mean"], m["median"]), m  # not by a hair: the bad votes are mostly ignored


@pytest.mark.parametrize("seed", range(3))
def test_weighted_vote_beats_mean_and_median_with_a_spammer_majority(seed):
    """Only 3 of 10 annotators are good; a spammer votes uniformly at random (std 25 around the truth)."""
    crowd = [(2.0, 0.0)] * 3 + [(8.0, 0.0)] * 2 + [(25.0, 0.0)] * 2 + [(4.0, -10.0)] * 3
    m = _maes(seed, annotators=crowd, votes_per_item=6, n_control=80)
    assert m["age"] < m["mean"] and m["age"] < m["median"], m


def test_weights_follow_honeypot_mae_and_unscored_policies():
    votes = pd.DataFrame({"item": ["c1", "c2", "c1", "c2", "x", "x", "x"],
                          "annotator": ["good", "good", "bad", "bad", "good", "bad", "new"],
                          "age": [20.0, 40.0, 30.0, 30.0, 50.0, 60.0, 70.0]})
    control = pd.Series({"c1": 20.0, "c2": 40.0})
    res = aggregate_votes(votes, control, tau=5.0)
    a = res.annotators.set_index("annotator")
    assert a.loc["good", "control_mae"] == 0 and a.loc["bad", "control_mae"] == 10
    assert a.loc["good", "weight"] == pytest.approx(1.0) and a.loc["bad", "weight"] == pytest.approx(np.exp(-2))
    assert not a.loc["new", "scored"] and a.loc["new", "weight"] == pytest.approx(np.exp(-2))  # "min" policy
    x = res.items.set_index("item").loc["x"]
    w = np.array([1.0, np.exp(-2), np.exp(-2)])
    v = np.array([50.0, 60, 70])
    assert x["age"] == pytest.approx((w * v).sum() / w.sum())
    assert x["weighted_std"] == pytest.approx(np.sqrt((w * (v - x["age"]) ** 2).sum() / w.sum()))
    assert x["votes"] == 3 and x["effective_votes"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert not x["is_control"] and res.items.set_index("item").loc["c1", "control_age"] == 20
    zero = aggregate_votes(votes, control, tau=5.0, unscored="zero").items.set_index("item").loc["x"]
    assert zero["age"] == pytest.approx((50 + np.exp(-2) * 60) / (1 + np.exp(-2)))
    med = aggregate_votes(votes, control, tau=5.0, unscored="median").annotators.set_index("annotator")
    assert med.loc["new", "weight"] == pytest.approx((1 + np.exp(-2)) / 2)
    assert "1 annotator(s) with fewer than 1 control vote(s)" in res.notes[0]
    # auto tau: half the median honeypot MAE of the scored annotators, floored
    assert res.tau == 5.0 and aggregate_votes(votes, control).tau == pytest.approx(max(MIN_TAU, 5.0 / 2))
    assert resolve_tau("auto", np.array([0.1, 0.2])) == MIN_TAU and resolve_tau("3", np.array([])) == 3.0
    for bad in ("-1", "0", "soon"):
        with pytest.raises(ValueError, match="tau must be"):
            resolve_tau(bad, np.array([1.0]))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cli_aggregates_with_control_file_or_column(tmp_path):
    votes, control, truth = simulate_votes(n_items=60, n_control=20, seed=1)
    votes.to_csv(tmp_path / "votes.csv", index=False)
    control.rename_axis("item").rename("age").reset_index().to_csv(tmp_path / "control.csv", index=False)
    res = runner.invoke(app, ["data", "aggregate-votes", str(tmp_path / "votes.csv"), "--control",
                              str(tmp_path / "control.csv"), "--tau", "2"])
    assert res.exit_code == 0, res.output
    assert "tau = 2 years" in res.output and "annotators by weight" in res.output
    out = pd.read_csv(tmp_path / "votes.aggregated.csv")
    assert len(out) == 60 and {"item", "age", "weighted_std", "votes", "effective_votes"} <= set(out.columns)
    ann = pd.read_csv(tmp_path / "votes.annotators.csv")
    assert len(ann) == 12 and ann["scored"].all()
    # the same votes with the known ages in a control_age column (found by name)
    votes.assign(control_age=votes["item"].map(control)).to_csv(tmp_path / "v2.csv", index=False)
    res = runner.invoke(app, ["data", "aggregate-votes", str(tmp_path / "v2.csv"), "--tau", "2",
                              "--out", str(tmp_path / "o2.csv")])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "o2.csv")["age"], out["age"])


@pytest.mark.parametrize("text, extra, message", [
    ("item,who,age\na,x,30\n", [], r"missing column\(s\) annotator"),
    ("item,annotator,age\na,x,thirty\n", [], r"votes.csv:2: age 'thirty' is not a number"),
    ("item,annotator,age\na,x,30\nb,x,\n", [], r"votes.csv:3: age is (empty|missing)"),
    ("item,annotator,age\na,x,30\na,x,31\n", [], r"votes.csv:3: annotator 'x' already voted on item 'a'"),
    ("item,annotator,age\na,x,30\n,y,31\n", [], r"votes.csv:3: item is empty"),
    ("item,annotator,age\na,x,30\n", [], r"no control items"),
    ("item,annotator,age\na,x,30\n", ["--control", "CTRL"], r"no annotator voted on at least 1 control"),
    ("item,annotator,age\na,x,30\n", ["--unscored", "max"], r"--unscored must be one of min, median, zero"),
    ("item,annotator,age\na,x,300\n", [], r"votes.csv:2: age '300' is above 130"),
    ("item,annotator,age\na,x,30\n", ["--control", "nope.csv"], r"control file not found: nope.csv"),
])
def test_cli_bad_input_is_one_line(tmp_path, text, extra, message):
    votes = _write(tmp_path / "votes.csv", text)
    _write(tmp_path / "ctrl.csv", "item,age\nzz,40\n")
    extra = [str(tmp_path / "ctrl.csv") if e == "CTRL" else e for e in extra]
    res = runner.invoke(app, ["data", "aggregate-votes", str(votes), *extra])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    import re

    assert re.search(message, lines[0]), lines[0]


def test_control_sources_must_agree(tmp_path):
    v = _write(tmp_path / "v.csv", "item,annotator,age,control_age\na,x,30,31\nb,x,40,\n")
    votes = read_votes(v, control="control_age")
    with pytest.raises(ValueError, match="different known ages in the control file and the control column"):
        aggregate_votes(votes, pd.Series({"a": 35.0}))
    assert aggregate_votes(votes, pd.Series({"a": 31.0})).annotators["control_mae"].iat[0] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_votes(tmp_path / "none.csv")
