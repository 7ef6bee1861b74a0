"""Multi-person test scenes made from real single-person photos, and detection recall on them.

No dataset here has photos of several people with boxes, so scenes are composited: whole-body
photos (PETA) and head-and-shoulders portraits (AAF) are pasted into a larger background at known
boxes, which become the ground truth. ``scripts/person_detector_check.py`` scores person detectors on
them; the tests build scenes that exercise each pairing and masking rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..data.boxes import box_iou

__all__ = ["Scene", "paste_person", "compose_scene", "match_detections"]


@dataclass
class Scene:
    """``image`` HxWx3 uint8; ``persons`` (N, 4) xyxy ground-truth boxes (the pasted photos); ``kinds``
    says per person ``"body"`` (whole body) or ``"portrait"`` (head and shoulders, cut by the bottom edge)."""

    image: np.ndarray
    persons: np.ndarray
    kinds: list[str] = field(default_factory=list)


def paste_person(canvas: np.ndarray, photo: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Paste ``photo`` resized to ``box`` (x0, y0, x1, y1, ints) into ``canvas`` in place (clipped at its
    edges); returns the box actually covered."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty paste box {box}")
    interp = cv2.INTER_AREA if (x1 - x0) < photo.shape[1] else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(photo), (x1 - x0, y1 - y0), interpolation=interp)
    h, w = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    canvas[cy0:cy1, cx0:cx1] = img[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return np.array([cx0, cy0, cx1, cy1], dtype=np.float32)


def compose_scene(background: np.ndarray, people: list[tuple[np.ndarray, str]], rng: np.random.Generator,
                  size: tuple[int, int] = (640, 480), height: tuple[float, float] = (0.45, 0.8),
                  max_iou: float = 0.1, tries: int = 60) -> Scene:
    """A ``size`` (w, h) scene: ``background`` resized to fill it, then each ``(photo, kind)`` pasted at a
    random place, its height a random fraction ``height`` of the scene's, aspect kept. ``"portrait"``
    photos stand on the bottom edge (the body continues out of the frame). A photo that cannot be placed
    overlapping the others by at most ``max_iou`` after ``tries`` attempts is left out."""
    w, h = size
    canvas = cv2.resize(np.ascontiguousarray(background), (w, h), interpolation=cv2.INTER_AREA)
    boxes: list[np.ndarray] = []
    kinds: list[str] = []
    for photo, kind in people:
        if kind not in ("body", "portrait"):
            raise ValueError(f"kind must be 'body' or 'portrait', got {kind!r}")
        for _ in range(tries):
            ph = int(rng.uniform(*height) * h)
            pw = max(8, int(round(ph * photo.shape[1] / photo.shape[0])))
            if pw >= w:
                continue
            x0 = int(rng.integers(0, w - pw + 1))
            y0 = h - ph if kind == "portrait" else int(rng.integers(0, h - ph + 1))
            box = np.array([x0, y0, x0 + pw, y0 + ph], np.float32)
            if not boxes or box_iou(box, np.stack(boxes)).max() <= max_iou:
                boxes.append(paste_person(canvas, photo, (x0, y0, x0 + pw, y0 + ph)))
                kinds.append(kind)
                break
    persons = np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)
    return Scene(canvas, persons, kinds)


def match_detections(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, misses): predictions (best first) matched greedily to the unmatched
    ground-truth box they overlap most, if by ``iou_threshold`` or more (the PASCAL/COCO rule)."""
    pred, truth = np.asarray(pred, np.float64).reshape(-1, 4), np.asarray(truth, np.float64).reshape(-1, 4)
    if not len(truth):
        return 0, len(pred), 0
    iou = box_iou(pred, truth)
    taken = np.zeros(len(truth), bool)
    tp = 0
    for row in iou:
        row = np.where(taken, -1.0, row)
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            taken[j] = True
            tp += 1
    return tp, len(pred) - tp, len(truth) - tp
