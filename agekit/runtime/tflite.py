"""The LiteRT (TensorFlow Lite) runner (``ai-edge-litert``; a plain agekit dependency).

The exported graph has batch 1, so a batch runs one image at a time; the agekit metadata is read from the
file itself (:func:`agekit.export.tflite.read_tflite_metadata`). Given an agekit ``.safetensors`` model it
converts it once into the user cache, as the ONNX runner does (the conversion needs litert-torch).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..export.onnx import OUTPUT_NAMES, cfg_from_metadata
from ..export.tflite import read_tflite_metadata
from .cache import cached_export
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
    """A ``.tflite`` export in the LiteRT interpreter (XNNPACK on CPU)."""

    backend = "tflite"
    from_torch = True

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 cache_dir: str | Path | None = None, **_: Any) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelFileError("running .tflite files needs: pip install ai-edge-litert") from None
        from .sessions import default_threads

        path = check_model_file(path)
        self.source_path: Path | None = None
        if not path.name.lower().endswith(".tflite"):
            self.source_path, path = path, cached_export(path, "tflite", cache_dir)
        self.path = path
        data = path.read_bytes()
        try:
            md = read_tflite_metadata(data)
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails inside the flatbuffer reader
            raise ModelFileError(f"cannot read {path}: not a TFLite model ({type(e).__name__})") from None
        if md is None:
            raise ModelFileError(f"{path} has no agekit metadata; export it with `agekit export MODEL --format tflite`")
        self.metadata = md
        self.meta = decode_metadata(md)
        if self.source_path is not None and self.source_path.suffix == ".safetensors":
            from ..models.weights import read_metadata

            self.meta = {**read_metadata(self.source_path), **self.meta}  # keep e.g. the run's own test figures
        self.cfg = cfg_from_metadata(md)
        self.output_names = tuple(self.meta.get("outputs_order") or OUTPUT_NAMES)
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads or default_threads())
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the interpreter raises RuntimeError/ValueError with long texts
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"cannot load TFLite model {path}: {msg}") from None
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
