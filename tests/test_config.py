"""agekit.config: one override parser, one include/merge, one error format, dataset roots, resume checks."""
from __future__ import annotations

import json

import pytest
import yaml

from agekit.config.base import (ConfigError, apply_overrides, deep_merge, load_yaml, parse_overrides,
                                set_dotted)
from agekit.config.roots import dataset_root, env_var
from agekit.config.train import TrainConfig, check_resume, config_diff, load_config


def test_parse_overrides_values_are_yaml():
    assert parse_overrides(["optim.lr=1e-3", "model.kwargs.gender=false", " data.limit_train = 5", "a.b=[1, 2]",
                            "x.y=", "s.t=a=b"]) == {
        "optim.lr": 1e-3, "model.kwargs.gender": False, "data.limit_train": 5, "a.b": [1, 2], "x.y": None,
        "s.t": "a=b"}
    for bad in ("optim.lr", "=3"):
        with pytest.raises(ConfigError, match="section.key=value"):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_overrides(["a.b=[1, 2"])


def test_set_dotted_and_apply_overrides():
    raw = {"model": {"name": "m", "kwargs": {"a": 1}}, "data": 3}
    value = {"deep": [1]}
    set_dotted(raw, "model.kwargs.b", value)
    value["deep"].append(2)  # stored as a copy
    assert raw["model"] == {"name": "m", "kwargs": {"a": 1, "b": {"deep": [1]}}}
    with pytest.raises(ConfigError, match="data is not a section"):
        set_dotted(raw, "data.x", 1)
    with pytest.raises(ConfigError, match="empty part"):
        set_dotted(raw, "model..x", 1)
    # strings and mappings give the same result; later items win
    a = apply_overrides({}, ["optim.lr=0.1", "optim.lr=0.2", "trainer.seed=3"])
    b = apply_overrides({}, {"optim.lr": 0.2, "trainer.seed": 3})
    assert a == b == {"optim": {"lr": 0.2}, "trainer": {"seed": 3}}


def test_deep_merge_merges_mappings_and_copies():
    a = {"base": {"model": {"name": "x", "kwargs": {"p": 1}}, "data": {"b": 2}}, "cells": [1]}
    b = {"base": {"model": {"kwargs": {"q": 2}}}, "cells": [2]}
    out = deep_merge(a, b)
    assert out == {"base": {"model": {"name": "x", "kwargs": {"p": 1, "q": 2}}, "data": {"b": 2}}, "cells": [2]}
    out["base"]["data"]["b"] = 99
    assert a["base"]["data"]["b"] == 2  # inputs untouched


def test_load_yaml_include_chain_and_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "common.yaml").write_text("data: {batch_size: 8, augment: none}\noptim: {lr: 0.5}\n")
    (tmp_path / "sub" / "mid.yaml").write_text("include: common.yaml\noptim: {lr: 0.1, schedule: constant}\n")
    (tmp_path / "top.yaml").write_text("include: [sub/mid.yaml]\noptim: {lr: 0.01}\n")
    assert load_yaml(tmp_path / "top.yaml") == {
        "data": {"batch_size": 8, "augment": "none"}, "optim": {"lr": 0.01, "schedule": "constant"}}
    assert load_yaml(tmp_path / "top.yaml", allow_include=False) == {"include": ["sub/mid.yaml"], "optim": {"lr": 0.01}}
    (tmp_path / "loop.yaml").write_text("include: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("include: loop.yaml\n")
    cases = {
        "missing.yaml": "config file not found",
        "bad.yaml": "not valid YAML",
        "list.yaml": "must hold a mapping",
        "inc_missing.yaml": "included file not found",
        "loop.yaml": "include loop",
    }
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "inc_missing.yaml").write_text("include: nope.yaml\n")
    for name, msg in cases.items():
        with pytest.raises(ConfigError, match=msg) as e:
            load_yaml(tmp_path / name)
        assert "\n" not in str(e.value)


def test_training_config_may_include_a_base(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"name": "mobileagenet_lite0", "pretrained": False},
                                                        "optim": {"lr": 0.5, "weight_decay": 0.0}}))
    (tmp_path / "run.yaml").write_text("include: base.yaml\noptim: {lr: 0.25}\n")
    cfg = load_config(tmp_path / "run.yaml", ["trainer.seed=4"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.model.pretrained, cfg.trainer.seed) == (0.25, 0.0, False, 4)


def test_new_fields_and_their_defaults():
    cfg = load_config(None)
    assert cfg.trainer.test is False and cfg.data.root is None and cfg.data.crop == "auto"
    assert load_config(None, ["data.crop=align", "trainer.test=true"]).data.crop == "align"
    with pytest.raises(ConfigError, match="data.crop"):
        load_config(None, ["data.crop=box"])
    with pytest.raises(ConfigError, match="unknown config key 'trainer.tset'"):
        load_config(None, ["trainer.tset=true"])


def test_dataset_root_order(monkeypatch, tmp_path):
    for var in ("AGEKIT_UTKFACE_ROOT", "AGEKIT_UTKFACE", "AGEKIT_DATA_ROOT", "AGEKIT_AAF_ROOT"):
        monkeypatch.delenv(var, raising=False)
    assert env_var("utkface") == "AGEKIT_UTKFACE_ROOT" and env_var("fashion_mnist") == "AGEKIT_FASHION_MNIST_ROOT"
    assert dataset_root("utkface") == "../shared/data/UTKFace"
    assert dataset_root("aaf") == "../shared/data/AAF"
    assert dataset_root("fashion_mnist") == "/usr/share/datasets/fashion-mnist"
    assert dataset_root("folder") is None
    monkeypatch.setenv("AGEKIT_DATA_ROOT", str(tmp_path))
    assert dataset_root("utkface") == str(tmp_path / "UTKFace") and dataset_root("peta") == str(tmp_path / "PETA")
    # a packaged dataset: under the data root only when it is there, else the package's folder
    assert dataset_root("fashion_mnist") == "/usr/share/datasets/fashion-mnist"
    (tmp_path / "fashion-mnist").mkdir()
    assert dataset_root("fashion_mnist") == str(tmp_path / "fashion-mnist")
    monkeypatch.setenv("AGEKIT_UTKFACE", "/alias")
    assert dataset_root("utkface") == "/alias"
    monkeypatch.setenv("AGEKIT_UTKFACE_ROOT", "/mine")
    assert dataset_root("utkface") == "/mine"
    assert dataset_root("utkface", "/given") == "/given" and dataset_root("utkface", "") == "/mine"
    monkeypatch.setenv("AGEKIT_FOLDER_ROOT", "/f")
    assert dataset_root("folder") == "/f"


def test_every_root_consumer_honours_the_env_var(monkeypatch, tmp_path):
    """Evaluation, training data, the classification loaders and export parity all resolve roots the same way."""
    from agekit.data.classification import load_classification
    from agekit.config.roots import dataset_root
    from agekit.evaluation.evaluate import load_eval_table

    monkeypatch.setenv("AGEKIT_UTKFACE_ROOT", str(tmp_path / "no_utk"))
    monkeypatch.setenv("AGEKIT_FASHION_MNIST_ROOT", str(tmp_path / "no_fm"))
    monkeypatch.setenv("AGEKIT_CIFAR100_ROOT", str(tmp_path / "no_cifar"))
    assert dataset_root("utkface") == str(tmp_path / "no_utk")
    with pytest.raises(FileNotFoundError, match="no_utk"):
        load_eval_table("utkface")
    with pytest.raises(FileNotFoundError, match="no_fm"):
        load_classification("fashion_mnist", None)
    with pytest.raises((FileNotFoundError, OSError), match="no_cifar"):
        load_classification("cifar100", None)


def _cfg(*ov: str) -> TrainConfig:
    return load_config(None, ["model.pretrained=false", *ov])


def test_check_resume(tmp_path):
    run = tmp_path / "run"
    check_resume(run, _cfg(), allow_change=False)  # nothing there yet
    run.mkdir()
    (run / "config.json").write_text(_cfg("optim.lr=0.1").model_dump_json())
    check_resume(run, _cfg("optim.lr=0.1", "trainer.progress=none", "trainer.test=true", "data.num_workers=2"))
    with pytest.raises(ConfigError, match=r"different config \(optim.lr: 0.1 -> 0.2\).*--allow-config-change"):
        check_resume(run, _cfg("optim.lr=0.2"), allow_change=False)
    check_resume(run, _cfg("optim.lr=0.2"), allow_change=True)
    with pytest.raises(ConfigError, match="model.kwargs"):
        check_resume(run, _cfg("optim.lr=0.1", "model.kwargs.drop_rate=0.5"))
    # an older config.json lacking fields added since is compared with their defaults filled in
    old = json.loads(_cfg("optim.lr=0.1").model_dump_json())
    del old["data"]["crop"], old["trainer"]["test"]
    (run / "config.json").write_text(json.dumps(old))
    check_resume(run, _cfg("optim.lr=0.1"))
    assert set(config_diff(old, _cfg("optim.lr=0.1", "data.crop=chip"))) == {"data.crop"}
    (run / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        check_resume(run, _cfg())


def test_configs_saved_before_the_crop_path_still_load():
    """Model files and run folders from before CropSpec carry data.crop_margin: it loads and is dropped."""
    from agekit.config.train import TrainConfig

    cfg = TrainConfig.model_validate({"data": {"crop_margin": 0.4, "batch_size": 16}})
    assert cfg.data.batch_size == 16 and "crop_margin" not in cfg.data.model_dump()
