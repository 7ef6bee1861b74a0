"""LiteRT / TensorFlow Lite export via ``litert-torch`` (no TensorFlow needed; installed by ``scripts/setup.sh``).

Same contract as the ONNX file: one float32 NCHW input normalised with the model's mean/std, outputs
age (years) and gender_logit (> 0 female), in that order (``outputs_order``). The agekit metadata -- the
same keys as the ONNX export, calibrated age interval included -- is stored inside the ``.tflite`` file,
as a flatbuffer ``metadata`` entry named ``agekit`` (JSON), written with LiteRT's own flatbuffer tools; an
app reads it with any flatbuffers reader of the TFLite schema. The runner is
:class:`agekit.runtime.tflite.TfliteRunner`.

Int8 (:func:`export_tflite_int8`) quantises that float file with Google's ``ai-edge-quantizer`` (static:
int8 per-channel weights, int8 activations calibrated on real crops), keeping the input, first layer and
head in float for the reasons given in :mod:`agekit.export.quantize`.
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
from .quantize import calibration_batch

__all__ = ["export_tflite", "export_tflite_int8", "float_scopes", "METADATA_NAME", "write_tflite_metadata", "read_tflite_metadata"]

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


# TFLite builtin ops that carry weights: the first of them ends the "first layer" kept in float
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
_POOL_OPS = ("MEAN", "AVERAGE_POOL_2D", "REDUCE_MAX")  # where a CNN's features become one vector


def float_scopes(path: str | Path) -> list[str]:
    """Op scopes (ai-edge-quantizer's names: an op's output tensor names) kept in float, chosen by the graph's
    shape as :func:`agekit.export.quantize.float_nodes` chooses them in ONNX: the graph's input and output, the
    first layer (every op up to the first one with weights) and the head (every op after the last global pool).

    The head matters most here: a distribution head's softmax over age bins, cut to 256 levels, moved ages by
    2.1 years on average on the bundled model; the stem is one 3-channel convolution, cheap in float.
    """
    from ai_edge_litert.schema_py_generated import BuiltinOperator
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    model = tfu.read_model(str(path))
    graph = model.subgraphs[0]
    codes = [op_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "") for c in model.operatorCodes]
    ops = list(graph.operators)
    names = [codes[op.opcodeIndex] for op in ops]
    first = next((i for i, n in enumerate(names) if n in _WEIGHT_OPS), -1)
    keep = ops[:first + 1]
    pools = [i for i, n in enumerate(names) if n in _POOL_OPS]
    if pools:
        keep += ops[pools[-1] + 1:]
    keep += list(tfu.get_subgraph_input_output_operators(graph))
    return sorted({tfu.get_op_scope(op, graph.tensors) for op in keep} - {""})


def export_tflite_int8(model: nn.Module, cfg: AgeModelCfg, path: str | Path, *, calibration: np.ndarray,
                       calibration_source: str = "", metadata: Mapping[str, Any] | None = None) -> Path:
    """Static int8 LiteRT model: the float ``.tflite`` quantised by Google's ``ai-edge-quantizer``.

    Int8 per-channel weights and int8 per-tensor activations (min-max ranges over ``calibration`` crops), with
    the input, the first layer and the head in float (:func:`float_scopes`), so the file takes and returns
    float32 like the float one. This replaced litert-torch's PT2E route, whose symmetric histogram-calibrated
    activations moved the bundled model's ages by 1.3-1.9 years on average (README, int8 table).
    """
    import re
    import tempfile

    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.qtyping import TFLOperationName

    calibration = calibration_batch(calibration)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as tmp:
        f32 = export_tflite(model, cfg, Path(tmp) / "f32.tflite", metadata=metadata)
        md = read_tflite_metadata(f32) or {}
        keep = float_scopes(f32)
        rm = recipe_manager.RecipeManager()
        rm.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                             activation_num_bits=8, weight_num_bits=8)
        rm.add_quantization_config(regex="^(?:" + "|".join(re.escape(k) for k in keep) + ")$",
                                   operation_name=TFLOperationName.ALL_SUPPORTED, algorithm_key="no_quantize")
        q = quantizer.Quantizer(str(f32))
        q.load_quantization_recipe(rm.get_quantization_recipe())
        signature, input_name = _signature_input(f32)
        ranges = q.calibrate({signature: [{input_name: crop[None]} for crop in calibration]}, num_threads=1)
        _silently(lambda: q.quantize(ranges).export_model(str(path), overwrite=True))
    record = {"scheme": "int8 static (ai-edge-quantizer)", "weights": "int8, per channel, symmetric",
              "activations": "int8, per tensor, min-max", "calibration_crops": int(len(calibration)),
              "calibration_data": calibration_source, "float_ops": len(keep)}
    write_tflite_metadata(path, {**md, "quantization": json.dumps(record)})
    return path


def _signature_input(path: Path) -> tuple[str, str]:
    """(signature key, input name) of a one-input ``.tflite`` file, as ai-edge-quantizer's calibrator wants them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    key = next(iter(it.get_signature_list()))
    return key, next(iter(it.get_signature_runner(key).get_input_details()))


def _silently(fn: Any) -> Any:
    """ai-edge-quantizer prints a size/time report to stdout; agekit's CLI reports the file itself."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()
