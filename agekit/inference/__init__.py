"""Prediction on real photos: detect faces, align them like the training chips, estimate age and gender.

``from agekit import Predictor`` is the usual entry point; the stages are importable on their own.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "Predictor", "ImageResult", "FaceResult", "Detection", "FaceDetector", "DETECTORS", "create_detector",
    "register_detector", "align_face", "TEMPLATE", "load_runner", "ModelFileError", "summarize_timings", "default_runner",
]

_LAZY = {
    "Predictor": "predictor", "summarize_timings": "predictor", "ImageResult": "results", "FaceResult": "results",
    "Detection": "detectors", "FaceDetector": "detectors", "DETECTORS": "detectors", "create_detector": "detectors",
    "register_detector": "detectors", "align_face": "agekit.data.align", "TEMPLATE": "agekit.data.align",
    "load_runner": "agekit.runtime", "ModelFileError": "agekit.runtime", "default_runner": "backend",
}


def __getattr__(name: str) -> Any:  # lazy, so `agekit.inference.defaults` stays import-cheap for the CLI
    if name in _LAZY:
        import importlib

        where = _LAZY[name]
        return getattr(importlib.import_module(where if "." in where else f"{__name__}.{where}"), name)
    raise AttributeError(name)
