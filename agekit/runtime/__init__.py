"""One runtime for every model file: ``load_runner(path)`` -> a :class:`Runner` (torch, onnx, tflite, ...).

Backends are rows of the format table (:data:`agekit.export.formats.EXPORT_FORMATS`), each naming
its runner class; :class:`Runner` holds what they share (loading, flip TTA, P(female)). Names load
lazily so that ``agekit.runtime.runner`` stays cheap to import.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_runner", "Runner", "ModelFileError", "RUNNERS", "runner_class", "bundled_model_path", "file_format",
           "parity_tolerances", "bundled_person_model_path"]

_WHERE = {"load_runner": "registry", "RUNNERS": "registry", "runner_class": "registry", "file_format": "registry",
          "parity_tolerances": "registry", "Runner": "runner",
          "ModelFileError": "runner", "bundled_model_path": "runner",
          "bundled_person_model_path": "runner"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
