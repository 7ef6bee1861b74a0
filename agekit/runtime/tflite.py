"""The LiteRT (TensorFlow Lite) runner (optional: ``pip install ai-edge-litert``).

The exported graph has batch 1, so a batch runs one image at a time; the agekit metadata is the
JSON sidecar written by :func:`agekit.export.tflite.export_tflite`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..export.onnx import OUTPUT_NAMES, cfg_from_metadata
from ..export.tflite import metadata_path
from .runner import ModelFileError, Runner, check_model_file, decode_metadata, per_sample

__all__ = ["TfliteRunner", "collect_outputs", "output_order"]


def output_order(details: Sequence[dict[str, Any]]) -> list[int]:
    """Tensor indices of the outputs in signature order (``output_0``, ``output_1``, ..., ``output_10``)."""
    def key(d: dict[str, Any]) -> tuple[int, str]:
        m = re.search(r"(\d+)\D*$", str(d["name"]))
        return (int(m.group(1)) if m else 0, str(d["name"]))

    return [d["index"] for d in sorted(details, key=key)]


def collect_outputs(per_image: Sequence[Sequence[np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Stack the interpreter's outputs of single images into batch outputs, keeping every element.

    ``per_image[i][j]`` is output ``names[j]`` for image ``i`` (shape (1, ...)); the result is
    (B,) for per-face outputs and (B, K) for vector outputs such as class logits.
    """
    n = len(per_image)
    return {name: per_sample(np.stack([np.asarray(outs[j], dtype=np.float32).reshape(-1) for outs in per_image])
                             if n else np.zeros((0,), np.float32), n)
            for j, name in enumerate(names)}


class TfliteRunner(Runner):
    """A ``.tflite`` export in the LiteRT interpreter."""

    backend = "tflite"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, **_: Any) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelFileError("running .tflite files needs: pip install ai-edge-litert") from None
        self.path = check_model_file(path)
        side = metadata_path(self.path)
        if not side.is_file():
            raise ModelFileError(f"{side} (agekit metadata for {self.path.name}) not found; export with `agekit export`")
        self.metadata = json.loads(side.read_text())
        self.meta = decode_metadata(self.metadata)
        self.cfg = cfg_from_metadata(self.metadata)
        self.output_names = tuple(self.meta.get("outputs_order") or OUTPUT_NAMES)
        self.interpreter = Interpreter(str(self.path), num_threads=threads or 1)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = output_order(self.interpreter.get_output_details())

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        per_image = []
        for i in range(len(x)):
            self.interpreter.set_tensor(self._in, x[i:i + 1])
            self.interpreter.invoke()
            per_image.append([self.interpreter.get_tensor(idx).copy() for idx in self._out])
        return collect_outputs(per_image, self.output_names)
