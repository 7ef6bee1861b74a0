"""Export formats as a table (as in Ultralytics): adding a format is one row plus one function.

Each row names its export function and its runner as ``"module:attr"`` strings, imported only when
used, so an unavailable toolchain (e.g. LiteRT) costs nothing until someone asks for that format,
and then fails with the pip command that fixes it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..models import load_model

__all__ = ["ExportFormat", "EXPORT_FORMATS", "ExportError", "ExportResult", "get_format", "missing_requirements",
           "export_model", "load_exported"]


class ExportError(RuntimeError):
    """An export cannot run: unknown or unimplemented format, missing toolchain, bad model file."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    function: str | None  # "module:attr" with signature fn(model, cfg, path, *, metadata, **options) -> Path
    requirements: tuple[str, ...]  # pip distribution names
    runner: str | None = None  # "module:attr": class(path, threads=) -> runner(x) -> {"age", "gender_logit"}
    description: str = ""
    options: tuple[str, ...] = field(default_factory=tuple)  # keyword options the function accepts

    @property
    def implemented(self) -> bool:
        return self.function is not None


EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "agekit.export.onnx:export_onnx", ("onnx", "onnxruntime", "onnxscript"),
                 runner="agekit.export.onnx:OnnxAgeModel", options=("opset", "dynamo"),
                 description="ONNX with agekit metadata; ONNX Runtime on CPU, GPU, mobile and web"),
    ExportFormat("tflite", ".tflite", "agekit.export.tflite:export_tflite", ("litert-torch", "ai-edge-litert"),
                 runner="agekit.export.tflite:TfliteAgeModel",
                 description="LiteRT / TensorFlow Lite (batch 1, metadata in a .json sidecar) for Android and edge devices"),
)}


def get_format(name: str) -> ExportFormat:
    try:
        return EXPORT_FORMATS[name.lower()]
    except KeyError:
        known = ", ".join(f"{f.name}{'' if f.implemented else ' (not implemented yet)'}" for f in EXPORT_FORMATS.values())
        raise ExportError(f"unknown export format {name!r}; known formats: {known}") from None


def missing_requirements(fmt: ExportFormat) -> list[str]:
    missing = []
    for dist in fmt.requirements:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    return missing


def _resolve(ref: str) -> Callable[..., Any]:
    mod, attr = ref.split(":")
    return getattr(importlib.import_module(mod), attr)


@dataclass
class ExportResult:
    path: Path
    format: str
    seconds: float
    size_bytes: int
    model_name: str


def export_model(model_path: str | Path, format: str = "onnx", out: str | Path | None = None,
                 **options: Any) -> ExportResult:
    """Export an agekit ``.safetensors`` model; ``out`` defaults to the model path with the format's suffix."""
    fmt = get_format(format)
    if not fmt.implemented:
        raise ExportError(f"export format {fmt.name!r} is registered but not implemented yet ({fmt.description})")
    missing = missing_requirements(fmt)
    if missing:
        raise ExportError(f"export format {fmt.name!r} needs: pip install {' '.join(missing)}")
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise ExportError(f"format {fmt.name!r} does not take option(s) {', '.join(unknown)} (takes: {', '.join(fmt.options)})")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ExportError(f"model file not found: {model_path}")
    model, cfg, meta = load_model(model_path)
    path = Path(out) if out is not None else model_path.with_suffix(fmt.suffix)
    t0 = time.perf_counter()
    path = _resolve(fmt.function)(model, cfg, path, metadata=meta, **{k: v for k, v in options.items() if v is not None})
    return ExportResult(Path(path), fmt.name, time.perf_counter() - t0, Path(path).stat().st_size, cfg.name)


def load_exported(path: str | Path, format: str | None = None, threads: int | None = None) -> Any:
    """A runner for an exported file (format from the suffix by default), for parity checks and benchmarks."""
    path = Path(path)
    fmt = get_format(format) if format else next((f for f in EXPORT_FORMATS.values() if f.suffix == path.suffix.lower()), None)
    if fmt is None or fmt.runner is None:
        raise ExportError(f"no runner for {path.name}; formats with runners: "
                          + ", ".join(f.name for f in EXPORT_FORMATS.values() if f.runner))
    return _resolve(fmt.runner)(path, threads=threads)
