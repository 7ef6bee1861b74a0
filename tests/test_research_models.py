"""Research model families: every registered name builds; each family runs forward + backward at a small
input and exports to ONNX with parity; the hybrid's token geometry; the parameter-matched baselines."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from agekit.models import create_model, get_model_cfg, list_models
from agekit.models.baselines import count_params, match_width, model_params

FAMILIES = ("convnext_vit", "convnext_age", "convnext_attn", "convnext_cls", "vit", "mixer", "lite_vit", "lite_attn")
RESEARCH = [n for n in list_models() if get_model_cfg(n).family in FAMILIES]
MATCHED = {"match_model": "convnext_cls_atto", "num_classes": 10}


def test_parameter_count_grows_with_convnext_size():
    """The meta-device counts follow the backbone: each ConvNeXt size is larger than the one before."""
    sizes = ("atto", "femto", "pico", "nano", "tiny", "small", "base")
    for prefix in ("convnext_vit", "convnext_age", "convnext_attn", "convnext_cls"):
        counts = [model_params(f"{prefix}_{s}") for s in sizes]
        assert counts == sorted(counts) and len(set(counts)) == len(counts), prefix


def test_registry_has_every_size_and_cfg():
    for prefix in ("convnext_vit", "convnext_age", "convnext_attn", "convnext_attn_age", "convnext_cls"):
        for size in ("atto", "femto", "pico", "nano", "tiny", "small", "base"):
            cfg = get_model_cfg(f"{prefix}_{size}")
            assert cfg.backbone == f"convnext_{size}" and "timm hub" in cfg.backbone_weights
    assert get_model_cfg("convnext_attn_atto").task == "classification"
    assert get_model_cfg("convnext_attn_atto").input_size == (3, 32, 32)
    assert get_model_cfg("convnext_attn_age_atto").task == "age"
    assert get_model_cfg("convnext_vit_atto").input_size == (3, 224, 224)
    assert get_model_cfg("convnext_vit_atto_128").input_size == (3, 128, 128)
    assert {"vit_tiny_p4_32", "mixer_tiny_p4_32", "vit_matched_p4_32", "mixer_matched_p4_32"} <= set(RESEARCH)


@pytest.mark.parametrize("name", RESEARCH)
def test_every_research_model_builds(name):
    """All sizes, built on the meta device (structure and parameter count, no init cost)."""
    kw = dict(MATCHED) if "matched" in name else {}
    n = model_params(name, **kw)
    if any(t in name for t in ("atto", "femto", "_p4_32", "lite0_")):  # small: count a real CPU build independently
        assert n == sum(p.numel() for p in create_model(name, **kw).parameters())
    if name == "convnext_vit_tiny":  # 12 blocks of 192-d on top of ConvNeXt-T: ~5.3M more than ConvNeXt-T
        assert 5.0e6 < n - model_params("convnext_age_tiny") < 5.7e6


# (name, kwargs, input px): small inputs where the model allows; the CPU variants at their real size
CASES = [
    ("convnext_vit_atto", {"img_size": 64, "depth": 2}, 64),
    ("convnext_vit_atto", {"img_size": 64, "depth": 2, "connector": "split196"}, 64),
    ("convnext_vit_atto_128", {"depth": 2, "head_hidden": 64, "head_layers": 1}, 128),
    ("convnext_age_atto", {}, 64),
    ("convnext_age_atto_128", {"gender": False}, 128),
    ("convnext_attn_atto", {"num_classes": 10, "points": "p2+p3"}, 32),
    ("convnext_attn_atto", {"num_classes": 10, "mechanism": "cbam"}, 32),
    ("convnext_attn_age_atto", {"mechanism": "mhsa", "num_heads": 2}, 64),
    ("convnext_cls_atto", {"num_classes": 10}, 32),
    ("vit_tiny_p4_32", {"num_classes": 10, "depth": 2}, 32),
    ("mixer_tiny_p4_32", {"num_classes": 10, "depth": 2}, 32),
    ("vit_matched_p4_32", {"num_classes": 10, "target_params": 400_000, "depth": 2}, 32),
    ("lite0_vit_128", {"depth": 2, "head_hidden": 64}, 128),
    ("lite0_attn_128", {"points": "p2+p3", "mechanism": "mhsa", "num_heads": 2}, 128),
    ("lite0_attn_128", {"points": "p3", "mechanism": "cbam"}, 128),
]


@pytest.mark.parametrize("name,kw,px", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_backward_onnx_parity(name, kw, px):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name, **kw)
    for pname, p in model.named_parameters():
        if pname.endswith("gate"):
            p.data.fill_(0.5)  # open the gates so the attention path is part of the parity check
    x = torch.randn(2, 3, px, px)
    out = model.train()(x)
    task = get_model_cfg(name).task
    keys = {"logits"} if task == "classification" else {"age"} | ({"gender_logit"} if kw.get("gender", True) else set())
    assert set(out) == keys
    if task == "classification":
        assert out["logits"].shape == (2, kw["num_classes"])
    else:
        assert out["age"].shape == (2,) and bool(((out["age"] >= 0) & (out["age"] <= 100)).all())
    sum(v.float().sum() for v in out.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("head."))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())

    model.eval()
    with torch.no_grad():
        ref = model(x)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["input"], output_names=list(ref), opset_version=17)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x.numpy()})))
    for k, v in ref.items():
        tol = 1e-3 if k == "age" else 1e-4  # age is in years (0-100)
        assert np.abs(got[k] - v.numpy()).max() < tol, k


def test_hybrid_at_224_has_49_or_196_tokens():
    for connector, n in (("direct49", 49), ("split196", 196)):
        m = create_model("convnext_vit_atto", connector=connector, depth=1).eval()
        with torch.no_grad():
            t = m.tokens(torch.randn(1, 3, 224, 224))
        assert t.shape == (1, n, 192) and m.pos_embed.shape == (1, n, 192)
        assert m.backbone.num_features == 320  # atto; tiny would give 768 channels
    m = create_model("convnext_vit_atto", depth=12)
    assert len(m.blocks) == 12 and m.blocks[0].attn.num_heads == 3 and m.blocks[0].mlp.fc1.out_features == 4 * 192
    assert m.head.body[0].out_features == 256  # two linear layers, 256 hidden


def test_hybrid_head_options():
    for hidden in (64, 128, 256):
        m = create_model("convnext_vit_atto", depth=1, head_hidden=hidden)
        assert m.head.body[0].out_features == hidden
    m = create_model("convnext_vit_atto", depth=1, head_layers=1)
    assert m.head.age_out.in_features == 192
    with pytest.raises(ValueError, match="connector"):
        create_model("convnext_vit_atto", connector="nope")


def test_cifar_stem_patch():
    m = create_model("convnext_attn_atto", num_classes=10)
    conv = m.backbone.stem[0]
    assert conv.stride == (2, 2) and conv.padding == (1, 1) and conv.kernel_size == (4, 4)
    assert m.backbone.stem(torch.randn(1, 3, 32, 32)).shape[-1] == 16
    plain = create_model("convnext_attn_atto", num_classes=10, cifar_stem=False)
    assert plain.backbone.stem[0].stride == (4, 4)


def test_parameter_matched_search():
    target = model_params("convnext_cls_atto", num_classes=10)
    m = create_model("vit_matched_p4_32", **MATCHED)
    found = m.width_search
    assert count_params(m) == found["params"] and abs(found["params"] - target) / target < 0.02
    assert found["dim"] % found["heads"] == 0
    mixer = create_model("mixer_matched_p4_32", **MATCHED)
    assert abs(count_params(mixer) - target) / target < 0.02
    # ViT-Tiny's own width is found back from its parameter count
    tiny = model_params("vit_tiny_p4_32", num_classes=10)
    assert match_width("vit", tiny, 10)["dim"] == 192
    with pytest.raises(ValueError, match="exactly one"):
        create_model("vit_matched_p4_32", num_classes=10)
    with pytest.raises(TypeError, match="unexpected"):
        create_model("vit_tiny_p4_32", num_clases=10)


def test_pretrained_offline_error_is_clear(monkeypatch):
    """Here the hub is unreachable: pretrained=True must fail with a clear message, not a hang or a stack."""
    import timm

    from agekit.models import WeightsError

    def no_hub(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(timm, "create_model", lambda name, *a, **k: no_hub() if k.get("pretrained") else
                        _real_create(name, *a, **k))
    with pytest.raises(WeightsError, match="could not fetch ImageNet weights for convnext_atto"):
        create_model("convnext_attn_atto", pretrained=True, num_classes=10)


_real_create = __import__("timm").create_model
