"""Prediction on real photos and videos: detect faces, align them like the training chips, estimate age and
gender; in person mode also detect people, pair them with faces and estimate from face, body or both; in
videos, track people across frames and give each track one estimate.

``from agekit import Predictor`` is the usual entry point (``predict`` for images, ``predict_video`` for
videos); the stages are importable on their own.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "Predictor", "ImageResult", "FaceResult", "Detection", "FaceDetector", "DETECTORS", "create_detector",
    "register_detector", "align_face", "TEMPLATE", "load_runner", "ModelFileError", "summarize_timings",
    "VideoResult", "TrackResult", "Observation", "VideoSource", "VideoError", "predict_video",
    "PersonResult", "PersonDetection", "PersonDetector", "PERSON_DETECTORS", "create_person_detector",
    "register_person_detector", "pair_faces",
    "default_runner",
]

_LAZY = {
    "Predictor": "predictor", "summarize_timings": "predictor", "ImageResult": "results", "FaceResult": "results",
    "Detection": "detectors", "FaceDetector": "detectors", "DETECTORS": "detectors", "create_detector": "detectors",
    "register_detector": "detectors", "align_face": "agekit.data.align", "TEMPLATE": "agekit.data.align",
    "load_runner": "agekit.runtime", "ModelFileError": "agekit.runtime",
    "VideoResult": "results", "TrackResult": "results", "Observation": "results", "VideoSource": "sources",
    "VideoError": "sources", "predict_video": "video", "PersonResult": "results",
    "PersonDetection": "person_detectors", "PersonDetector": "person_detectors", "PERSON_DETECTORS": "person_detectors",
    "create_person_detector": "person_detectors", "register_person_detector": "person_detectors",
    "pair_faces": "pairing",
    "default_runner": "backend",
}


def __getattr__(name: str) -> Any:  # lazy, so `agekit.inference.defaults` stays import-cheap for the CLI
    if name in _LAZY:
        import importlib

        where = _LAZY[name]
        return getattr(importlib.import_module(where if "." in where else f"{__name__}.{where}"), name)
    raise AttributeError(name)
