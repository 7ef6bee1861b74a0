"""LiteRT / TensorFlow Lite export via ``litert-torch`` (optional: ``pip install litert-torch``).

Same contract as the ONNX file: one float32 NCHW input normalised with the model's mean/std, outputs
age (years) and gender_logit (> 0 female), in that order. TFLite files have no free-form metadata
slot that every runtime exposes, so the agekit metadata (the same keys as the ONNX export) goes into
a JSON file next to the model (``model.tflite`` -> ``model.tflite.json``). The runner is
:class:`agekit.runtime.tflite.TfliteRunner`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..models.registry import AgeModelCfg
from .onnx import OUTPUT_NAMES, onnx_metadata

__all__ = ["export_tflite", "metadata_path"]


def metadata_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


class _Positional(nn.Module):
    """TFLite signatures are positional: return the outputs as a tuple in a fixed order."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def export_tflite(model: nn.Module, cfg: AgeModelCfg, path: str | Path, *,
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Convert with litert-torch (batch 1, fp32) and write the metadata sidecar."""
    if len(getattr(model, "input_names", ())) > 1:
        raise ValueError(f"{cfg.name} takes several inputs (face + body); TFLite export covers one-input face "
                         "models only: export it to onnx")
    import litert_torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(device="cpu", memory_format=torch.contiguous_format)
    x = torch.zeros(1, *cfg.input_size)
    with torch.inference_mode():
        names = [n for n in OUTPUT_NAMES if n in model(x)]
    edge = litert_torch.convert(_Positional(model, names).eval(), (x,))
    edge.export(str(path))
    md = {**onnx_metadata(cfg, metadata), "outputs_order": json.dumps(names), "batch": "1"}
    metadata_path(path).write_text(json.dumps(md, indent=2))
    return path

