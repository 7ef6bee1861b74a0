"""What every command shares: one-line escaped errors, `agekit models` off a terminal, `agekit train`'s config
and data errors, resume checks and --test, `agekit eval`'s default model and its training-run line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.config.train import load_config
from agekit.inference.defaults import default_model_path
from agekit.models import list_models
from tests.test_training_core import _synthetic_utkface  # one synthetic UTKFace generator for the tests

runner = CliRunner()


def one_line_error(r, code: int = 2) -> str:
    """The single stderr line of a failed command (and no traceback anywhere)."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception  # handled: typer.Exit, not a crash
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


# -- errors print paths as they are ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["runs/[exp]/m.safetensors", "[/x]", "runs/[bold]x[/bold].safetensors"])
def test_errors_print_markup_like_paths_verbatim(path):
    line = one_line_error(runner.invoke(app, ["eval", path, "--data", "utkface"]))
    assert line == f"error: model file not found: {path}"
    line = one_line_error(runner.invoke(app, ["attention-maps", path, "x.jpg"]))
    assert line == f"error: checkpoint not found: {path}"


def test_predict_uses_the_same_error_printer(tmp_path):
    img = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    line = one_line_error(runner.invoke(app, ["predict", str(img), "--out", "runs/[exp]/r.txt"]))
    assert line == "error: --out runs/[exp]/r.txt: use a .json, .jsonl or .csv file name"


def test_fail_keeps_long_messages_on_one_line(tmp_path):
    deep = tmp_path.joinpath(*["a_rather_long_folder_name"] * 8) / "m.safetensors"
    line = one_line_error(runner.invoke(app, ["eval", str(deep)]))
    assert line.endswith(str(deep))


# -- agekit models -----------------------------------------------------------------------------------

def test_models_piped_lists_full_names_as_tsv():
    r = runner.invoke(app, ["models"])  # CliRunner's stdout is not a terminal
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in r.output.strip().splitlines()]
    assert rows[0][:4] == ["name", "family", "task", "input"]
    assert [row[0] for row in rows[1:]] == list_models()
    assert all(len(row) == len(rows[0]) for row in rows) and "…" not in r.output


def test_models_json_describes_every_model():
    from agekit.models import get_model_cfg

    r = runner.invoke(app, ["models", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [m["name"] for m in rows] == list_models()
    for m in rows:
        c = get_model_cfg(m["name"])
        assert m["input_size"] == list(c.input_size) and m["mean"] == list(c.mean) and m["std"] == list(c.std)
        assert m["weights"] == c.backbone_weights and m["task"] == c.task


def test_models_table_in_80_columns_keeps_names_whole():
    r = runner.invoke(app, ["models", "--format", "table"])  # rich's width off a terminal: 80 columns
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    cells = {line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│")}
    assert set(list_models()) <= cells
    assert "error: --format must be" in runner.invoke(app, ["models", "--format", "yaml"]).stderr


# -- agekit train: one-line errors -------------------------------------------------------------------

@pytest.fixture
def config_file(tmp_path) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": {"name": "mobileagenet_lite0", "pretrained": False},
                                 "trainer": {"out_dir": str(tmp_path / "run"), "progress": "none"}}))
    return p


@pytest.mark.parametrize("kind", ["unknown key", "bad value", "bad override", "missing file", "invalid yaml",
                                  "include missing"])
def test_train_config_errors_are_one_line(tmp_path, config_file, kind):
    args = {"unknown key": [str(config_file), "optim.lrr=1"],
            "bad value": [str(config_file), "optim.lr=-1"],
            "bad override": [str(config_file), "optim.lr"],
            "missing file": [str(tmp_path / "nope.yaml")],
            "invalid yaml": [str(tmp_path / "bad.yaml")],
            "include missing": [str(tmp_path / "inc.yaml")]}[kind]
    (tmp_path / "bad.yaml").write_text("model: {name: [unclosed\n")
    (tmp_path / "inc.yaml").write_text("include: base.yaml\n")
    line = one_line_error(runner.invoke(app, ["train", *args]))
    expected = {"unknown key": "unknown config key 'optim.lrr'", "bad value": "config key 'optim.lr'",
                "bad override": "must look like section.key=value", "missing file": "config file not found",
                "invalid yaml": "is not valid YAML", "include missing": "included file not found"}[kind]
    assert expected in line


def test_train_missing_data_is_one_line(tmp_path, config_file, monkeypatch):
    monkeypatch.delenv("AGEKIT_DATA_ROOT", raising=False)
    line = one_line_error(runner.invoke(app, ["train", str(config_file), f"data.root={tmp_path / 'no_utk'}"]))
    assert line.startswith(f"error: utkface folder not found: {tmp_path / 'no_utk'}")
    monkeypatch.setenv("AGEKIT_UTKFACE_ROOT", str(tmp_path / "env_utk"))  # the env var reaches training
    line = one_line_error(runner.invoke(app, ["train", str(config_file)]))
    assert f"utkface folder not found: {tmp_path / 'env_utk'}" in line and "AGEKIT_UTKFACE_ROOT" in line
    line = one_line_error(runner.invoke(app, ["train", str(config_file), f"data.manifest={tmp_path / 'm.csv'}"]))
    assert line == f"error: manifest not found: {tmp_path / 'm.csv'} (data.manifest)"
    line = one_line_error(runner.invoke(app, ["train", str(config_file), "data.dataset=folder"]))
    assert "AGEKIT_FOLDER_ROOT" in line
    line = one_line_error(runner.invoke(app, ["train", str(config_file), "data.dataset=nosuch", "data.root=."]))
    assert line.startswith("error: data.dataset: unknown dataset format 'nosuch'")


def test_train_refuses_to_resume_another_config(tmp_path, config_file):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,age\n")  # never read: the run folder is checked first
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(load_config(config_file, [f"data.manifest={manifest}"]).model_dump_json())
    line = one_line_error(runner.invoke(app, ["train", str(config_file), f"data.manifest={manifest}", "optim.lr=0.5"]))
    assert "holds a run with a different config (optim.lr: 0.001 -> 0.5)" in line and "--allow-config-change" in line


def test_train_flags_reach_the_runner(config_file, tmp_path, monkeypatch):
    import agekit.training.runner as runner_mod

    seen = {}

    def fake_train(cfg, allow_config_change=False):
        seen.update(test=cfg.trainer.test, allow=allow_config_change)
        return {"ok": True}

    (tmp_path / "m.csv").write_text("path,age\n")
    monkeypatch.setattr(runner_mod, "train", fake_train)
    ok = [str(config_file), f"data.manifest={tmp_path / 'm.csv'}"]
    assert runner.invoke(app, ["train", *ok]).exit_code == 0 and seen == {"test": False, "allow": False}
    assert runner.invoke(app, ["train", *ok, "--test", "--force"]).exit_code == 0 and seen == {"test": True, "allow": True}
    assert runner.invoke(app, ["train", *ok, "--allow-config-change"]).exit_code == 0 and seen["allow"]


def test_train_scores_test_only_when_asked(tmp_path):
    """Selection sees validation only; `--test` adds the test score (and resumes the finished run to do it)."""
    root = _synthetic_utkface(tmp_path / "utk", 16)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "convnext_age_atto_96", "pretrained": False, "kwargs": {"head_hidden": 16}},
        "data": {"root": str(root), "split_file": None, "cache_dir": str(tmp_path / "cache"), "batch_size": 8},
        "finetune": {"head_epochs": 0}, "eval": {"tta_flip": False},
        "trainer": {"max_epochs": 1, "out_dir": str(tmp_path / "run"), "progress": "none", "channels_last": False}}))
    r = runner.invoke(app, ["train", str(cfg)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    from agekit.models.weights import read_metadata

    assert "test" not in res and "test" not in read_metadata(res["model_file"]) and "best_val_mae" in res
    r = runner.invoke(app, ["train", str(cfg), "--test"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert np.isfinite(res["test"]["test/mae"]) and "test/mae" in read_metadata(res["model_file"])["test"]


# -- agekit eval ---------------------------------------------------------------------------------------

def test_eval_defaults_to_the_bundled_model(tmp_path):
    from agekit.data.adapters import get_adapter
    from agekit.data.manifest import write_manifest
    from agekit.data.splits import random_split

    df = random_split(get_adapter("utkface")(_synthetic_utkface(tmp_path / "utk", 12)), fracs=(0.5, 0.0, 0.5))
    m = write_manifest(df, tmp_path / "m.csv")
    r = runner.invoke(app, ["eval", "--data", str(m), "--out", str(tmp_path / "ev"), "--cache-dir",
                            str(tmp_path / "cache"), "--n-boot", "20"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert Path(res["model"]["path"]) == default_model_path() and res["data"]["n"] == int((df["split"] == "test").sum())
    assert "training run reported" not in r.output  # the bundled model's test MAE is of UTKFace, not this data


def test_training_test_line_only_for_the_same_data_and_split(tmp_path):
    from agekit.cli.evaluate import training_test_line
    from agekit.models import create_model, save_weights

    bundled = default_model_path().with_name("mobileagenet_lite0_utkface.safetensors")  # v1 recorded its test score
    line = training_test_line(bundled, "utkface", "test")
    assert line is not None and "test/mae 4.820" in line
    assert training_test_line(bundled, "utkface", "val") is None
    assert training_test_line(bundled, "aaf", "test") is None
    m = tmp_path / "m.csv"
    m.write_text("path,age\n")
    assert training_test_line(bundled, str(m), "test") is None
    model = create_model("mobileagenet_lite0", pretrained=False)
    tc = json.loads(load_config(None, [f"data.manifest={m}"]).model_dump_json())
    with_test = save_weights(model, tmp_path / "a.safetensors", {"model_name": "mobileagenet_lite0",
                                                                 "train_config": tc, "test": {"test/mae": 7.5}})
    assert "7.500" in training_test_line(with_test, str(m), "test")
    assert training_test_line(with_test, "utkface", "test") is None
    without = save_weights(model, tmp_path / "b.safetensors", {"model_name": "mobileagenet_lite0", "train_config": tc})
    assert training_test_line(without, str(m), "test") is None  # trained without --test
