"""Export: a table of formats (ONNX now, TFLite registered), the ONNX runner and parity checks."""
from __future__ import annotations

__all__ = ["EXPORT_FORMATS", "ExportError", "export_model", "load_exported", "export_onnx", "OnnxAgeModel",
           "check_parity", "parity_inputs"]

_WHERE = {"EXPORT_FORMATS": "exporter", "ExportError": "exporter", "export_model": "exporter",
          "load_exported": "exporter", "export_onnx": "onnx", "OnnxAgeModel": "onnx", "check_parity": "parity",
          "parity_inputs": "parity"}


def __getattr__(name: str):  # lazy: the CLI imports this package for --help
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
