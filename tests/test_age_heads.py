"""Age heads (regression, dldl, mean_variance, gaussian): outputs, losses, the loss/head pairing check,
ONNX export + parity of the new outputs, the bundled model unchanged, and the age_heads grid end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agekit.config.base import ConfigError
from agekit.config.train import load_config
from agekit.models import create_model, save_weights
from agekit.models.heads import MIN_SIGMA, AgeGenderHead, num_age_bins
from agekit.tasks.age import (age_loss_from_outputs, dldl_loss, gaussian_label_distribution, gaussian_nll_age_loss,
                              mean_variance_loss)

REPO = Path(__file__).resolve().parents[1]
DIST_HEADS = ("dldl", "mean_variance")
LOSS_OF = {"dldl": "dldl", "mean_variance": "mean_variance", "gaussian": "gaussian_nll"}


class _Cfg:  # the loss section's fields the losses read
    sigma, dldl_lambda, mv_lambda_mean, mv_lambda_var = 2.0, 1.0, 0.2, 0.05


@pytest.mark.parametrize("head", ["regression", "dldl", "mean_variance", "gaussian"])
def test_head_outputs_and_shapes(head):
    torch.manual_seed(0)
    h = AgeGenderHead(16, hidden=8, age_range=(0.0, 100.0), age_head=head).eval()
    out = h(torch.randn(5, 16))
    expected = {"regression": {"age", "gender_logit"}, "gaussian": {"age", "age_std", "gender_logit"}}
    assert set(out) == expected.get(head, {"age", "age_std", "age_dist", "gender_logit"})
    assert out["age"].shape == (5,) and out["gender_logit"].shape == (5,)
    assert ((out["age"] >= 0) & (out["age"] <= 100)).all()
    if head != "regression":
        assert out["age_std"].shape == (5,) and (out["age_std"] > 0).all()
    if head in DIST_HEADS:
        p = out["age_dist"]
        assert p.shape == (5, 101) == (5, num_age_bins((0, 100)))
        torch.testing.assert_close(p.sum(-1), torch.ones(5))
        ages = torch.arange(101.0)
        mean = (p * ages).sum(-1)
        torch.testing.assert_close(out["age"], mean)  # age is the expectation of age_dist
        torch.testing.assert_close(out["age_std"], ((p * (ages - mean[:, None]) ** 2).sum(-1)).sqrt())
    if head == "gaussian":
        assert (out["age_std"] >= MIN_SIGMA).all()


def test_distribution_head_keeps_to_the_age_range():
    h = AgeGenderHead(4, num_layers=1, dropout=0.0, age_range=(16.0, 77.5), age_head="dldl", gender=False)
    torch.nn.init.normal_(h.age_out.weight, std=5.0)
    with torch.no_grad():
        out = h(torch.randn(64, 4))
    assert out["age_dist"].shape == (64, 78)
    assert float(out["age_dist"][:, :16].sum()) == 0.0 and float(out["age_dist"][:, 78:].sum()) == 0.0
    assert ((out["age"] >= 16) & (out["age"] <= 77)).all()
    with pytest.raises(ValueError, match="age_head must be one of"):
        AgeGenderHead(4, age_head="softmax")


def _gauss_dist(centres: torch.Tensor, k: int = 101, s: float = 3.0) -> torch.Tensor:
    return gaussian_label_distribution(centres, k, s)


@pytest.mark.parametrize("loss", ["dldl", "mean_variance", "gaussian_nll"])
def test_each_loss_is_minimised_near_the_label(loss):
    """Scan predictions centred at c = 0..100 (a Gaussian-shaped distribution, or mean c with sigma 3): the loss
    is lowest at c within half a year of the label."""
    c = torch.arange(0.0, 100.5, 0.5)
    for y in (7.0, 36.4, 71.0):
        target = torch.full_like(c, y)
        dist = _gauss_dist(c)
        age = (dist * torch.arange(101.0)).sum(-1)
        if loss == "dldl":
            per_c = [dldl_loss(dist[i:i + 1], age[i:i + 1], target[i:i + 1]) for i in range(len(c))]
        elif loss == "mean_variance":
            per_c = [mean_variance_loss(dist[i:i + 1], target[i:i + 1]) for i in range(len(c))]
        else:
            per_c = [gaussian_nll_age_loss(c[i:i + 1], torch.tensor([3.0]), target[i:i + 1]) for i in range(len(c))]
        best = float(c[int(torch.stack(per_c).argmin())])
        assert abs(best - y) <= 0.5, (loss, y, best)


@pytest.mark.parametrize("head", ["regression", "dldl", "mean_variance", "gaussian"])
def test_losses_decrease_on_a_toy_problem(head):
    """A one-linear-layer head fit to ages that depend linearly on 8 features: loss and MAE fall in 60 steps."""
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = (45 + 12 * x[:, 0] - 8 * x[:, 1]).clamp(1, 95)
    h = AgeGenderHead(8, num_layers=1, dropout=0.0, age_head=head, gender=False)
    opt = torch.optim.Adam(h.parameters(), lr=0.05)
    kind = LOSS_OF.get(head, "l1")

    def step() -> tuple[float, float]:
        out = h(x)
        loss = age_loss_from_outputs(kind, out, y, None, _Cfg())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss), float((out["age"] - y).abs().mean())

    with torch.no_grad():
        std0 = float(h(x).get("age_std", torch.zeros(1)).mean())
    first = step()
    for _ in range(60):
        last = step()
    assert np.isfinite(last[0]) and last[0] < first[0], (head, first, last)
    assert last[1] < 0.6 * first[1], (head, first, last)
    if head != "regression":  # the predicted spread narrows as the fit improves: it is learnt, not stuck
        with torch.no_grad():
            assert float(h(x)["age_std"].mean()) < 0.85 * std0


def test_losses_take_sample_weights():
    dist, y = _gauss_dist(torch.tensor([30.0, 60.0])), torch.tensor([30.0, 30.0])
    age = (dist * torch.arange(101.0)).sum(-1)
    only_first = dldl_loss(dist, age, y, weight=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(only_first, dldl_loss(dist[:1], age[:1], y[:1]))
    assert float(mean_variance_loss(dist, y, weight=torch.tensor([1.0, 0.0]))) < float(mean_variance_loss(dist, y))


def test_wrong_loss_head_pairing_is_a_one_line_error():
    for overrides, words in (
        (["loss.age=dldl"], "loss.age=dldl needs model.kwargs.age_head in (dldl, mean_variance)"),
        (["loss.age=mean_variance", "model.kwargs.age_head=gaussian"], "loss.age=mean_variance needs"),
        (["loss.age=gaussian_nll", "model.kwargs.age_head=dldl"], "loss.age=gaussian_nll needs"),
        (["model.kwargs.age_head=gaussian", "loss.age=weighted_mse"], "learns its sigma only from"),
    ):
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        msg = str(e.value)
        assert words in msg and "\n" not in msg, msg
    # what pairs: distribution losses on both softmax heads, point losses on a distribution head's mean
    for ok in (["loss.age=dldl", "model.kwargs.age_head=mean_variance"], ["loss.age=l1", "model.kwargs.age_head=dldl"],
               ["loss.age=gaussian_nll", "model.kwargs.age_head=gaussian"], ["loss.age=weighted_mse"]):
        load_config(None, ok)
    # the loss itself says the same if a model is driven without the config check
    out = {"age": torch.ones(2), "gender_logit": torch.zeros(2)}
    with pytest.raises(ValueError, match="loss.age=dldl needs the age_dist output"):
        age_loss_from_outputs("dldl", out, torch.ones(2), None, _Cfg())


def test_v1_model_is_unchanged(bundled_model_file: Path):
    """The previous bundled model (saved before the distribution heads existed) keeps the original bounded
    regression: same parameters, same outputs (bit for bit) as the head's formula applied by hand."""
    from agekit.models import load_model
    from agekit.models.weights import read_state_dict

    bundled_model_file = bundled_model_file.with_name("mobileagenet_lite0_utkface.safetensors")
    model, cfg, meta = load_model(bundled_model_file)
    assert model.head.age_head == "regression" and "age_head" not in (meta.get("model_kwargs") or {})
    assert set(model.state_dict()) == set(read_state_dict(bundled_model_file))
    x = torch.randn(3, *cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(x)
        h = model.head.body(model.backbone(x))
        lo, hi = cfg.age_range if "age_range" not in meta.get("model_kwargs", {}) else meta["model_kwargs"]["age_range"]
        age = lo + (hi - lo) * torch.sigmoid(model.head.age_out(h).squeeze(-1))
        gender = model.head.gender_out(h).squeeze(-1)
    assert set(out) == {"age", "gender_logit"}
    assert torch.equal(out["age"], age) and torch.equal(out["gender_logit"], gender)


@pytest.fixture(scope="module")
def head_model_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("heads")
    files = {}
    for head in ("dldl", "gaussian"):
        torch.manual_seed(1)
        model = create_model("mobileagenet_lite0", age_head=head, head_hidden=32).eval()
        files[head] = d / f"{head}.safetensors"
        save_weights(model, files[head], {"model_name": "mobileagenet_lite0",
                                          "model_kwargs": {"age_head": head, "head_hidden": 32}})
    return files


@pytest.mark.parametrize("head", ["dldl", "gaussian"])
def test_onnx_export_and_parity_of_distribution_heads(head, head_model_files, tmp_path):
    import onnx

    from agekit.evaluation.parity import check_parity
    from agekit.export.onnx import export_onnx, read_onnx_metadata
    from agekit.models import load_model
    from agekit.runtime import load_runner
    from agekit.tasks import get_task

    model, cfg, meta = load_model(head_model_files[head])
    path = export_onnx(model, cfg, tmp_path / f"{head}.onnx", opset=17, metadata=meta)
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert set(names) == ({"age", "age_std", "age_dist", "gender_logit"} if head == "dldl"
                          else {"age", "age_std", "gender_logit"})
    assert "age_std: years" in read_onnx_metadata(path)["outputs"]
    ref, onx = load_runner(head_model_files[head]), load_runner(path, threads=1)
    x = np.random.default_rng(0).standard_normal((5, *cfg.input_size)).astype(np.float32)
    rep = check_parity(ref, onx, x, "random", age_tolerance=1e-3, prob_tolerance=1e-4,
                       compare=get_task("age").compare)
    assert rep.passed and rep.max_age_std_diff < 1e-3, rep
    if head == "dldl":
        assert rep.max_age_dist_diff < 1e-4
    else:
        assert np.isnan(rep.max_age_dist_diff)
    # batch 1 keeps (1, K); flip TTA averages the probabilities and keeps age = their expectation
    one = onx(x[:1])
    assert one["age"].shape == (1,) and one["age_std"].shape == (1,)
    pred = onx.predict(x, tta_flip=True)
    assert pred["age_std"].shape == (5,) and (pred["age_std"] > 0).all() and "p_female" in pred
    if head == "dldl":
        assert one["age_dist"].shape == (1, 101) and pred["age_dist"].shape == (5, 101)
        np.testing.assert_allclose(pred["age_dist"].sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(pred["age"], pred["age_dist"] @ np.arange(101), atol=1e-3)
        np.testing.assert_allclose(pred["age_dist"], ref.predict(x, tta_flip=True)["age_dist"], atol=1e-5)


@pytest.mark.parametrize("run_cells", [pytest.param(["dldl"], id="dldl"),
                                       pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_age_heads_grid_expands_and_runs_tiny(tmp_path, run_cells):
    """The shipped grid: six cells (three point losses on regression, three distribution losses on their heads)
    that each validate; then cells train one tiny epoch end to end on synthetic UTKFace-named chips: the dldl
    cell in the default suite (~30 s), every cell with ``-m slow`` (~3 min)."""
    from test_research_experiments import _synthetic_utkface

    from agekit.experiments.grid import expand_grid, load_grid, run_grid

    path = REPO / "configs" / "experiments" / "age_heads.yaml"
    g = load_grid(path)
    runs = expand_grid(g, "cpu", [0, 1, 2], tmp_path / "x")
    assert len(runs) == 18
    cells = {r.cell: r.config for r in runs if r.seed == 0}
    assert {c: (cfg.loss.age, cfg.model.kwargs["age_head"]) for c, cfg in cells.items()} == {
        "l1": ("l1", "regression"), "adaptive": ("adaptive", "regression"),
        "weighted_mse": ("weighted_mse", "regression"), "dldl": ("dldl", "dldl"),
        "mean_variance": ("mean_variance", "mean_variance"), "gaussian_nll": ("gaussian_nll", "gaussian")}
    assert all(cfg.model.name == "mobileagenet_lite0" for cfg in cells.values())

    root = _synthetic_utkface(tmp_path / "utk", n=24)
    tiny = {"data.root": str(root), "data.split_file": None, "data.cache_dir": str(tmp_path / "cache"),
            "data.batch_size": 8, "data.limit_train": None, "data.limit_val": None, "model.pretrained": False,
            "model.kwargs.head_hidden": 16, "trainer.max_epochs": 1, "finetune.head_epochs": 0,
            "trainer.channels_last": False, "eval.tta_flip": False}
    summary = run_grid(path, 1, "cpu", tmp_path / "out", overrides=tiny, cells=run_cells)
    rows = {r["cell"]: r for r in summary["rows"]}
    assert set(rows) == set(run_cells or cells)
    for r in rows.values():
        assert r["metric"] == "test/mae" and np.isfinite(r["mean"]) and np.isfinite(r["val_mean"]), r
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| dldl | mobileagenet_lite0 |" in md
    if run_cells is None:
        assert rows["dldl"]["params_added"] == (16 + 1) * 100  # 101 age logits instead of 1 on the 16-unit layer
        assert rows["gaussian_nll"]["params_added"] == 16 + 1  # + the sigma output
    saved = json.loads((tmp_path / "out" / "dldl" / "seed0" / "config.json").read_text())
    assert saved["model"]["kwargs"]["age_head"] == "dldl" and saved["loss"]["age"] == "dldl"


def test_bundled_model_is_a_calibrated_distribution_head(bundled_model_file: Path):
    """The v2 default: DLDL head whose age is the mean of its softmax over 0..100, with a normalised conformal
    record, so the interval is age -/+ q * age_std (adaptive)."""
    from agekit.models import load_model

    model, cfg, meta = load_model(bundled_model_file)
    assert model.head.age_head == "dldl" and meta["model_kwargs"]["age_head"] == "dldl"
    cal = meta["calibration"]
    assert cal["score"] == "normalized" and cal["split"] == "val" and cal["data"] == "utkface+aaf"
    x = torch.randn(3, *cfg.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(x)
    p = out["age_dist"]
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["age"], (p * torch.arange(p.shape[-1])).sum(-1), atol=1e-4)
