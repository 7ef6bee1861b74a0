"""Export: the format table (torch, onnx, tflite) and the functions that write ONNX / TFLite files.

Running the files is :mod:`agekit.runtime`; parity checks are :mod:`agekit.evaluation.parity`.
"""
from __future__ import annotations

__all__ = ["EXPORT_FORMATS", "ExportFormat", "ExportError", "export_model", "get_format", "export_onnx"]

_WHERE = {"EXPORT_FORMATS": "formats", "ExportFormat": "formats", "ExportError": "formats", "export_model": "formats",
          "get_format": "formats", "export_onnx": "onnx"}


def __getattr__(name: str):  # lazy: the CLI imports this package for --help
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
