"""The ONNX Runtime runner. A ``.safetensors`` model given to it is exported once into the user cache."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..export.onnx import INPUT_NAME, OUTPUT_NAMES, cfg_from_metadata, export_onnx, read_onnx_metadata
from ..models.mivolo import FACE_BODY_INPUTS
from .cache import cached_export, default_cache_dir
from .runner import ModelFileError, Runner, check_model_file, decode_metadata, load_torch_model, per_sample
from .sessions import make_session

__all__ = ["OnnxRunner", "cached_onnx", "default_cache_dir"]


class OnnxRunner(Runner):
    """An onnxruntime session on an agekit ``.onnx`` file; its cfg comes from the file's metadata."""

    backend = "onnx"
    from_torch = True

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 cache_dir: str | Path | None = None, **_: Any) -> None:
        path = check_model_file(path)
        self.source_path: Path | None = None
        if path.suffix.lower() != ".onnx":
            self.source_path, path = path, cached_onnx(path, cache_dir)
        self.path = path
        try:
            self.session = make_session(path, threads=threads, device=device)
            self.metadata = read_onnx_metadata(self.session)
            self.cfg = cfg_from_metadata(self.metadata)
        except Exception as e:  # noqa: BLE001 - onnxruntime and metadata parsing raise unrelated types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"cannot load ONNX model {path}: {msg}") from None
        self.meta = decode_metadata(self.metadata)
        if self.source_path is not None and self.source_path.suffix == ".safetensors":
            from ..models.weights import read_metadata

            self.meta = {**read_metadata(self.source_path), **self.meta}  # keep e.g. the run's own test figures
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.input_name = self.input_names[0]
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        if self.input_names not in ((INPUT_NAME,), FACE_BODY_INPUTS) or not set(self.output_names) & set(OUTPUT_NAMES):
            raise ModelFileError(f"{path}: expected input {INPUT_NAME!r} (or {', '.join(FACE_BODY_INPUTS)}) and outputs "
                                 f"among {list(OUTPUT_NAMES)}, got {list(self.input_names)} -> {list(self.output_names)}")

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = ({n: np.ascontiguousarray(x[n], dtype=np.float32) for n in self.input_names} if isinstance(x, Mapping)
                else {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        outs = self.session.run(list(self.output_names), feed)
        n = len(next(iter(feed.values())))
        return {name: per_sample(o, n) for name, o in zip(self.output_names, outs)}


def cached_onnx(weights: str | Path, cache_dir: str | Path | None = None) -> Path:
    """ONNX export of an agekit weights file, made once per file content (:func:`agekit.runtime.cache.cached_export`)."""
    def export(src: Path, tmp: Path) -> None:
        model, cfg, meta = load_torch_model(src)
        # opset 17 uses the TorchScript exporter: ~1-2 s here vs ~15 s for the dynamo one, and
        # prediction pays it on first use.
        export_onnx(model, cfg, tmp, opset=17, metadata=meta)

    return cached_export(weights, "onnx", cache_dir, export)
