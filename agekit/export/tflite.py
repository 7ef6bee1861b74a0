"""LiteRT / TensorFlow Lite export via ``litert-torch`` (no TensorFlow needed; installed by ``scripts/setup.sh``).

Same contract as the ONNX file: one float32 NCHW input normalised with the model's mean/std, outputs
age (years) and gender_logit (> 0 female), in that order (``outputs_order``). The agekit metadata -- the
same keys as the ONNX export, calibrated age interval included -- is stored inside the ``.tflite`` file,
as a flatbuffer ``metadata`` entry named ``agekit`` (JSON), written with LiteRT's own flatbuffer tools; an
app reads it with any flatbuffers reader of the TFLite schema. The runner is
:class:`agekit.runtime.tflite.TfliteRunner`.

Int8 (:func:`export_tflite_int8`) is litert-torch's PT2E static quantisation (int8 per-channel weights,
int8 activations observed on real calibration crops), with the first layer and the head kept in float for
the reasons given in :mod:`agekit.export.quantize`. Known gap: on the bundled model it moves ages by ~1.3-1.9
years on average (ONNX Runtime's int8: 0.36), beyond the int8 parity tolerance, so `agekit export --format
tflite-int8` reports a failed parity check; use onnx-int8, or float TFLite, until that is solved.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..models.registry import AgeModelCfg
from .onnx import OUTPUT_NAMES, onnx_metadata

__all__ = ["export_tflite", "export_tflite_int8", "METADATA_NAME", "write_tflite_metadata", "read_tflite_metadata"]

METADATA_NAME = "agekit"


class _Positional(nn.Module):
    """TFLite signatures are positional: return the outputs as a tuple in a fixed order."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def write_tflite_metadata(path: str | Path, md: Mapping[str, str]) -> None:
    """Store ``md`` (string values) as the ``agekit`` metadata entry of the ``.tflite`` file at ``path``."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buf = fb.BufferT()
    buf.data = np.frombuffer(json.dumps(dict(md)).encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))


def read_tflite_metadata(source: str | Path | bytes) -> dict[str, str] | None:
    """The ``agekit`` metadata of a ``.tflite`` file (path or bytes), or None when it has none.

    Reads the flatbuffer in place (no copy of the weights), so it is cheap even for big models.
    """
    from ai_edge_litert import schema_py_generated as fb

    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    model = fb.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() in (METADATA_NAME.encode(), METADATA_NAME):
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(raw).decode())
    return None


def _quiet() -> None:
    """litert-torch prints a progress tree and TF/absl logs by default; agekit's CLI has its own status line.
    (torchao, imported by litert-torch, also logs a torch deprecation warning on import: not the user's concern.)"""
    import logging

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def _prepare(model: nn.Module, cfg: AgeModelCfg) -> tuple[nn.Module, torch.Tensor, list[str]]:
    if len(getattr(model, "input_names", ())) > 1:
        raise ValueError(f"{cfg.name} takes several inputs (face + body); TFLite export covers one-input face "
                         "models only: export it to onnx")
    model = model.eval().to(device="cpu", memory_format=torch.contiguous_format)
    x = torch.zeros(1, *cfg.input_size)
    with torch.inference_mode():
        names = [n for n in OUTPUT_NAMES if n in model(x)]
    return _Positional(model, names).eval(), x, names


def _finish(edge: Any, path: Path, cfg: AgeModelCfg, metadata: Mapping[str, Any] | None, names: list[str],
            extra: Mapping[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(path))
    md = {**onnx_metadata(cfg, metadata, names), "outputs_order": json.dumps(names), "batch": "1", **(extra or {})}
    write_tflite_metadata(path, md)
    return path


def export_tflite(model: nn.Module, cfg: AgeModelCfg, path: str | Path, *,
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Convert with litert-torch (batch 1, fp32) and store the agekit metadata in the file."""
    _quiet()
    import litert_torch

    wrapped, x, names = _prepare(model, cfg)
    return _finish(litert_torch.convert(wrapped, (x,)), Path(path), cfg, metadata, names)


def _float_node_names(gm: torch.fx.GraphModule) -> set[str]:
    """FX nodes kept in float, as :func:`agekit.export.quantize.float_nodes` chooses them in ONNX: the first layer
    (every op up to the first convolution or matrix product) and the head (every op after the last global pool)."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    first = next((i for i, n in enumerate(nodes) if any(k in str(n.target) for k in ("conv", "linear", "addmm", "matmul"))), -1)
    keep = {n.name for n in nodes[:first + 1]}
    pools = [i for i, n in enumerate(nodes) if n.op == "call_function"
             and any(k in str(n.target) for k in ("mean", "adaptive_avg_pool", "avg_pool2d"))]
    if pools:
        keep |= {n.name for n in nodes[pools[-1] + 1:]}
    return keep


def export_tflite_int8(model: nn.Module, cfg: AgeModelCfg, path: str | Path, *, calibration: np.ndarray,
                       calibration_source: str = "", metadata: Mapping[str, Any] | None = None) -> Path:
    """Static int8 LiteRT model: PT2E observers see ``calibration`` crops (one at a time: the graph has batch 1)."""
    _quiet()
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be a non-empty NCHW batch, got shape {calibration.shape}")
    wrapped, x, names = _prepare(model, cfg)
    gm = torch.export.export(wrapped, (x,)).module()
    keep = _float_node_names(gm)
    quantizer = _KeepFloat(keep).set_global(pq.get_symmetric_quantization_config(is_per_channel=True))
    gm = quantize_pt2e.prepare_pt2e(gm, quantizer)
    move_exported_model_to_eval(gm)  # an exported graph ignores .eval(): dropout would stay on otherwise
    with torch.no_grad():
        for crop in calibration:
            gm(torch.from_numpy(crop[None]))
    gm = quantize_pt2e.convert_pt2e(gm, fold_quantize=False)
    move_exported_model_to_eval(gm)
    edge = litert_torch.convert(gm, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    record = {"scheme": "int8 static (litert-torch PT2E)", "weights": "int8, per channel, symmetric",
              "activations": "int8, per tensor, histogram observer", "calibration_crops": int(len(calibration)),
              "calibration_data": calibration_source, "float_nodes": sorted(keep)}
    return _finish(edge, Path(path), cfg, metadata, names, {"quantization": json.dumps(record)})


def _keep_float_quantizer_class() -> type:
    from litert_torch.quantize import pt2e_quantizer as pq

    class KeepFloat(pq.PT2EQuantizer):
        """litert-torch's PT2E quantizer, leaving the named FX nodes in float.

        litert-torch filters by module name or type only; the nodes to keep are found in the exported graph
        (:func:`_float_node_names`), so they are filtered by node name here.
        """

        def __init__(self, keep: set[str]) -> None:
            super().__init__()
            self.keep = set(keep)

        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            def allowed(n) -> bool:
                return n.name not in self.keep and (filter_fn is None or filter_fn(n))

            return super()._annotate_all_static_patterns(model, quantization_config, allowed)

    return KeepFloat


def _KeepFloat(keep: set[str]) -> Any:  # noqa: N802 - a class made on first use (litert-torch is optional)
    return _keep_float_quantizer_class()(keep)
