"""Model file formats as one table (as in Ultralytics): adding a format is one row, its export function
and its runner class.

Int8 files are rows of their own (``onnx-int8``, ``tflite-int8``): they run on the same runner class as
their float format but need calibration crops to be written, and their parity with PyTorch is judged
against a looser tolerance (``parity``), since 8-bit arithmetic moves every prediction a little.

Each row names its export function and its runner as ``"module:attr"`` strings, imported only when
used, so an unavailable toolchain (e.g. LiteRT) costs nothing until someone asks for that format,
and then fails with the pip command that fixes it. ``torch`` is a row too (the ``.safetensors``
training output, nothing to export), so ``agekit.runtime.load_runner`` finds every runner here.
The runner references are plain strings: ``agekit.export`` never imports ``agekit.runtime``
(runtime depends on export, not the other way round).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..models import load_model

__all__ = ["ExportFormat", "EXPORT_FORMATS", "INT8_PARITY", "EXACT_PARITY", "ExportError", "ExportResult", "get_format", "format_for_path",
           "missing_requirements", "runner_formats", "resolve", "export_model"]


class ExportError(RuntimeError):
    """An export cannot run: unknown or unimplemented format, missing toolchain, bad model file."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # the file suffix this format writes (and is recognised by)
    function: str | None  # "module:attr": fn(model, cfg, path, *, metadata, **options) -> Path; None = no export
    requirements: tuple[str, ...] = ()  # pip distribution names the export needs
    runner: str | None = None  # "module:attr": an agekit.runtime.Runner subclass, cls(path, device=, threads=, ...)
    options: tuple[str, ...] = ()  # keyword options the export function accepts
    description: str = ""
    aliases: tuple[str, ...] = ()  # further suffixes read by the runner (torch: Lightning .ckpt)
    from_torch: bool = False  # the runner takes an agekit .safetensors itself (exports it once into the user cache)
    calibrated: bool = False  # the export needs ``calibration`` inputs (real crops; the CLI takes them from data)
    parity: tuple[float, float, float] | None = None  # (max |age diff| years, mean |age diff| years, max |P(female)
    # diff|) this format must meet against PyTorch; None = exact formats, the CLI's --tolerance/--prob-tolerance

    @property
    def implemented(self) -> bool:
        return self.function is not None

    @property
    def parity_tolerances(self) -> tuple[float, float, float]:
        """(max |age diff| years, mean |age diff| years, max |P(female) diff|) against PyTorch."""
        return self.parity or EXACT_PARITY

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.aliases)


# int8: at most this far from PyTorch on real crops (a few faces move by a year or two; the MAE bar of
# issue 10 -- at most 0.15 years worse than float on UTKFace test -- is checked by `agekit eval`, see README)
INT8_PARITY = (5.0, 0.6, 0.1)
EXACT_PARITY = (0.1, float("inf"), 0.01)  # float formats: the same arithmetic up to rounding

EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("torch", ".safetensors", None, (), runner="agekit.runtime.torch:TorchRunner", aliases=(".ckpt",),
                 description="the PyTorch model itself: agekit .safetensors (or a Lightning .ckpt from agekit train)"),
    ExportFormat("onnx", ".onnx", "agekit.export.onnx:export_onnx", ("onnx", "onnxruntime", "onnxscript"),
                 runner="agekit.runtime.onnx:OnnxRunner", options=("opset", "dynamo"), from_torch=True,
                 description="ONNX with agekit metadata; ONNX Runtime on CPU, GPU, mobile and web"),
    ExportFormat("onnx-int8", ".int8.onnx", "agekit.export.quantize:export_onnx_int8",
                 ("onnx", "onnxruntime", "onnxscript"), runner="agekit.runtime.onnx:OnnxRunner",
                 options=("calibration", "calibration_source"), calibrated=True, parity=INT8_PARITY,
                 description="ONNX Runtime static int8 (QDQ, per-channel weights), calibrated on real training crops"),
    ExportFormat("tflite", ".tflite", "agekit.export.tflite:export_tflite", ("litert-torch", "ai-edge-litert"),
                 runner="agekit.runtime.tflite:TfliteRunner", from_torch=True,
                 description="LiteRT / TensorFlow Lite (batch 1, agekit metadata inside the file) for Android and edge devices"),
    ExportFormat("tflite-int8", ".int8.tflite", "agekit.export.tflite:export_tflite_int8",
                 ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"), runner="agekit.runtime.tflite:TfliteRunner",
                 options=("calibration", "calibration_source"), calibrated=True, parity=INT8_PARITY,
                 description="LiteRT static int8 (ai-edge-quantizer; input, first layer and head in float), "
                             "calibrated on real training crops"),
)}


def get_format(name: str) -> ExportFormat:
    try:
        return EXPORT_FORMATS[name.lower()]
    except KeyError:
        known = ", ".join(f"{f.name}{'' if f.implemented or f.runner else ' (not implemented yet)'}"
                          for f in EXPORT_FORMATS.values())
        raise ExportError(f"unknown export format {name!r}; known formats: {known}") from None


def format_for_path(path: str | Path) -> ExportFormat | None:
    """The row whose suffix (or alias) the file name ends with, the longest match winning (``m.int8.onnx`` is
    ``onnx-int8``, ``m.onnx`` is ``onnx``), else None."""
    name = Path(path).name.lower()
    hits = [(len(s), f) for f in EXPORT_FORMATS.values() for s in f.suffixes if name.endswith(s)]
    return max(hits, key=lambda h: h[0])[1] if hits else None


def runner_formats() -> list[str]:
    """Names of the formats that can be run (``--backend`` choices)."""
    return [f.name for f in EXPORT_FORMATS.values() if f.runner]


def missing_requirements(fmt: ExportFormat) -> list[str]:
    missing = []
    for dist in fmt.requirements:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    return missing


def resolve(ref: str) -> Callable[..., Any]:
    """The object a ``"module:attr"`` reference names (imported now)."""
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
        why = "it is the model file itself" if fmt.runner else f"not implemented yet ({fmt.description})"
        raise ExportError(f"export format {fmt.name!r} has no export step: {why}")
    missing = missing_requirements(fmt)
    if missing:
        raise ExportError(f"export format {fmt.name!r} needs: pip install {' '.join(missing)}")
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise ExportError(f"format {fmt.name!r} does not take option(s) {', '.join(unknown)} (takes: {', '.join(fmt.options)})")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ExportError(f"model file not found: {model_path}")
    if fmt.calibrated and options.get("calibration") is None:
        raise ExportError(f"export format {fmt.name!r} needs calibration inputs (real crops): use `agekit export "
                          f"--format {fmt.name}`, which takes them from the training split, or pass calibration=")
    model, cfg, meta = load_model(model_path)
    path = Path(out) if out is not None else model_path.with_name(model_path.stem + fmt.suffix)
    t0 = time.perf_counter()
    path = resolve(fmt.function)(model, cfg, path, metadata=meta, **{k: v for k, v in options.items() if v is not None})
    return ExportResult(Path(path), fmt.name, time.perf_counter() - t0, Path(path).stat().st_size, cfg.name)
