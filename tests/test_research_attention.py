"""Attention modules keep the feature shape; the gated MHSA is an exact identity at gate 0; the freezing
regimes F0/F1/F2 train exactly the parameters they name; attention weights can be captured."""
from __future__ import annotations

import pytest
import torch

from agekit.models import create_model
from agekit.models.attention import MECHANISMS, GatedMHSA, capture_attention, create_attention
from agekit.models.freezing import Finetuning, apply_regime, late_backbone_modules, param_groups


@pytest.mark.parametrize("kind", MECHANISMS)
def test_attention_keeps_feature_shape(kind):
    m = create_attention(kind, 80, num_heads=4)
    for shape in ((2, 80, 8, 8), (1, 80, 4, 6)):
        x = torch.randn(*shape)
        assert m(x).shape == x.shape


def test_gated_mhsa_is_identity_at_zero_and_can_open():
    m = GatedMHSA(64, num_heads=8)
    assert [n for n, _ in m.named_parameters() if n == "gate"] == ["gate"] and m.gate.item() == 0.0
    x = torch.randn(2, 64, 5, 5, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)  # exact, not approximately
    y.pow(2).sum().backward()
    assert m.gate.grad is not None and float(m.gate.grad.abs()) > 0  # training can open the gate
    with torch.no_grad():
        m.gate.fill_(1.0)
    assert not torch.allclose(m(x), x)
    with pytest.raises(ValueError, match="divisible"):
        GatedMHSA(30, num_heads=4)


def test_zero_gate_model_equals_the_model_without_attention():
    torch.manual_seed(0)
    plain = create_model("convnext_attn_atto", num_classes=10, mechanism="none").eval()
    gated = create_model("convnext_attn_atto", num_classes=10, mechanism="mhsa", points="p2+p3").eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("attn.") for k in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(gated(x)["logits"], plain(x)["logits"])
    assert {n for n, _ in gated.named_parameters() if n.endswith("gate")} == {"attn.p2.gate", "attn.p3.gate"}


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freezing_regimes_exact_parameter_sets():
    model = create_model("convnext_attn_atto", num_classes=10, mechanism="mhsa", points="p3")
    names = [n for n, _ in model.named_parameters()]
    outside = {n for n in names if not n.startswith("backbone.")}
    late = {n for n in names if n.startswith(("backbone.stages.3.", "backbone.head.norm."))}
    # ConvNeXt-atto stage 4: downsample (LayerNorm w,b + conv w,b) + 2 blocks x 9 tensors; final norm w,b
    assert len(late) == 4 + 2 * 9 + 2
    assert len(outside) == 2 + 4 + 1 + 2  # attn LN (w,b), qkv/proj (w,b each), gate, classifier (w,b)

    for regime in ("F0", "F1", "F2"):
        counts = apply_regime(model, regime, unfrozen=False)
        assert _trainable(model) == outside, regime  # warmup: only attention + head
        assert counts == {"trainable": len(outside), "frozen": len(names) - len(outside)}
    apply_regime(model, "F0", unfrozen=True)
    assert _trainable(model) == outside  # F0: frozen throughout
    apply_regime(model, "F1", unfrozen=True)
    assert _trainable(model) == outside | late
    assert sum(p.requires_grad for p in model.parameters()) == len(outside) + 24
    apply_regime(model, "F2", unfrozen=True)
    assert _trainable(model) == set(names)
    with pytest.raises(ValueError, match="regime"):
        apply_regime(model, "F3", unfrozen=True)


def test_freezing_late_set_is_last_downsample_and_stage4():
    model = create_model("convnext_attn_atto", num_classes=10)
    mods = late_backbone_modules(model.backbone)
    assert mods[0] is model.backbone.stages[3] and mods[0].downsample is not None
    assert isinstance(mods[0].downsample[1], torch.nn.Conv2d) and mods[0].downsample[1].stride == (2, 2)


def test_regime_param_groups_cover_every_parameter_once():
    model = create_model("convnext_attn_atto", num_classes=10)
    n_all = len(list(model.parameters()))
    for regime, late_lr in (("F1", 1e-3), ("F0", None), ("F2", None), ("two_stage", None)):
        groups = param_groups(model, regime, lr=1e-3, backbone_lr_ratio=0.1, weight_decay=0.05)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == n_all
        by = {g["name"]: g for g in groups}
        assert by["head"]["lr"] == 1e-3 and by["backbone"]["lr"] == pytest.approx(1e-4)
        assert by["backbone_no_decay"]["weight_decay"] == 0.0 and by["backbone"]["weight_decay"] == 0.05
        if late_lr is None:  # only F1 trains the late stage at another lr than the rest of the backbone
            assert "backbone_late" not in by
        else:
            assert by["backbone_late"]["lr"] == pytest.approx(late_lr)


def test_freezing_callback_switches_at_warmup_epochs():
    class Holder(torch.nn.Module):  # what the callback sees of a LightningModule
        def __init__(self):
            super().__init__()
            self.model = create_model("convnext_vit_atto", depth=1)

    h = Holder()
    outside = {n for n, _ in h.model.named_parameters() if not n.startswith("backbone.")}
    cb = Finetuning("F2", warmup_epochs=2)
    cb.freeze_before_training(h)
    assert _trainable(h.model) == outside  # hybrid: transformer, connector, head train during warmup
    cb.finetune_function(h, 1, None)
    assert _trainable(h.model) == outside
    cb.finetune_function(h, 2, None)
    assert all(p.requires_grad for p in h.model.parameters())
    cb0 = Finetuning("F1", warmup_epochs=0)
    cb0.freeze_before_training(h)  # no warmup: unfrozen from the start
    assert any(p.requires_grad for p in h.model.backbone.stages[3].parameters())
    assert not any(p.requires_grad for p in h.model.backbone.stages[0].parameters())


def test_capture_attention_reads_softmax_and_restores_fused_path():
    m = create_model("convnext_attn_atto", num_classes=10, points="p2+p3", num_heads=2).eval()
    attn_mods = [mod for n, mod in m.named_modules() if n.endswith(".attn") and hasattr(mod, "fused_attn")]
    before = [mod.fused_attn for mod in attn_mods]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), capture_attention(m) as rec:
        out = m(x)["logits"]
    assert [n for n, _ in rec] == ["attn.p2.attn", "attn.p3.attn"]
    a2, a3 = rec[0][1], rec[1][1]
    assert a2.shape == (1, 2, 64, 64) and a3.shape == (1, 2, 16, 16)  # 8x8 and 4x4 maps at 32 px (CIFAR stem)
    assert torch.allclose(a2.sum(-1), torch.ones(1, 2, 64))
    assert [mod.fused_attn for mod in attn_mods] == before
    with torch.no_grad():
        assert torch.allclose(m(x)["logits"], out, atol=1e-5)  # the explicit path computes the same thing
