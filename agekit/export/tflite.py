"""LiteRT / TensorFlow Lite export via ``litert-torch`` (optional: ``pip install litert-torch``).

Same contract as the ONNX file: one float32 NCHW input normalised with the model's mean/std, outputs
age (years) and gender_logit (> 0 female), in that order. TFLite files have no free-form metadata
slot that every runtime exposes, so the agekit metadata (the same keys as the ONNX export) goes into
a JSON file next to the model (``model.tflite`` -> ``model.tflite.json``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..models.registry import AgeModelCfg
from .onnx import OUTPUT_NAMES, AgeRunnerBase, cfg_from_metadata, onnx_metadata

__all__ = ["export_tflite", "TfliteAgeModel", "metadata_path"]


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


class TfliteAgeModel(AgeRunnerBase):
    """A ``.tflite`` export in the LiteRT interpreter, with :class:`~agekit.export.onnx.OnnxAgeModel`'s interface.

    The graph has batch 1, so a batch is run one image at a time.
    """

    backend = "tflite"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {self.path}")
        side = metadata_path(self.path)
        if not side.is_file():
            raise FileNotFoundError(f"{side} (agekit metadata for {self.path.name}) not found; export with `agekit export`")
        self.metadata = json.loads(side.read_text())
        self.cfg = cfg_from_metadata(self.metadata)
        self.crop_margin = float(json.loads(self.metadata.get("crop_margin", "0.4")))
        self.output_names = json.loads(self.metadata.get("outputs_order", json.dumps(list(OUTPUT_NAMES))))
        self.interpreter = Interpreter(str(self.path), num_threads=threads or 1)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        # output tensors come back in signature order (output_0, output_1, ...)
        outs = sorted(self.interpreter.get_output_details(), key=lambda d: d["name"])
        self._out = [d["index"] for d in outs]

    def __call__(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        res: dict[str, list[float]] = {n: [] for n in self.output_names}
        for i in range(len(x)):
            self.interpreter.set_tensor(self._in, x[i:i + 1])
            self.interpreter.invoke()
            for n, idx in zip(self.output_names, self._out):
                res[n].append(float(self.interpreter.get_tensor(idx).reshape(-1)[0]))
        return {n: np.asarray(v, dtype=np.float32) for n, v in res.items()}
