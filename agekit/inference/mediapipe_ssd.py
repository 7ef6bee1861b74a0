"""MediaPipe's SSD post-processing for its BlazeFace-family detectors (here: the BlazePose person detector).

Hand-written on purpose: in MediaPipe these steps are C++ calculators inside its graph runtime
(``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator``, ``NonMaxSuppressionCalculator`` with the
``WEIGHTED`` algorithm, ``DetectionLetterboxRemovalCalculator``). The only packaged way to run them is
the whole ``mediapipe`` wheel, whose last release with model files pins numpy<2 and pulls jax and
opencv-contrib (which clashes with opencv-python-headless); later releases ship no model files. No
maintained library exposes them on their own, and they are a few lines of numpy each. Each function
follows the calculator it is named after, with the options of MediaPipe's ``pose_detection_cpu.pbtxt``
(:data:`POSE_ANCHORS`, :data:`POSE_DECODE`), so the .tflite model sees and means what it was trained for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.boxes import box_iou

__all__ = ["AnchorOptions", "DecodeOptions", "POSE_ANCHORS", "POSE_DECODE", "ssd_anchors", "decode_boxes",
           "weighted_nms", "letterbox", "unletterbox"]


@dataclass(frozen=True)
class AnchorOptions:
    """``mediapipe.SsdAnchorsCalculatorOptions`` (the fields the BlazeFace-family graphs set)."""

    num_layers: int
    min_scale: float
    max_scale: float
    input_size_height: int
    input_size_width: int
    strides: tuple[int, ...]
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    fixed_anchor_size: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False


@dataclass(frozen=True)
class DecodeOptions:
    """``mediapipe.TensorsToDetectionsCalculatorOptions`` for a model with reversed (x, y, w, h) output order."""

    num_boxes: int
    num_coords: int
    num_keypoints: int
    x_scale: float
    y_scale: float
    w_scale: float
    h_scale: float
    box_coord_offset: int = 0
    keypoint_coord_offset: int = 4
    num_values_per_keypoint: int = 2
    score_clipping_thresh: float = 100.0


# pose_detection_cpu.pbtxt (MediaPipe 0.10): 224x224 input, 2254 anchors, box + 4 key points per anchor
POSE_ANCHORS = AnchorOptions(num_layers=5, min_scale=0.1484375, max_scale=0.75, input_size_height=224,
                             input_size_width=224, strides=(8, 16, 32, 32, 32), fixed_anchor_size=True)
POSE_DECODE = DecodeOptions(num_boxes=2254, num_coords=12, num_keypoints=4, x_scale=224.0, y_scale=224.0,
                            w_scale=224.0, h_scale=224.0)


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    return (min_scale + max_scale) * 0.5 if count == 1 else min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(o: AnchorOptions) -> np.ndarray:
    """(N, 4) anchors as (x_center, y_center, w, h), normalised, in the order of ``SsdAnchorsCalculator``.

    Consecutive layers with the same stride share one feature map; each of its cells gets every
    (aspect ratio, scale) of those layers, plus the interpolated scale between a layer and the next.
    """
    out: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < o.num_layers:
        heights, widths = [], []
        last = layer
        while last < o.num_layers and o.strides[last] == o.strides[layer]:
            scale = _scale(o.min_scale, o.max_scale, last, o.num_layers)
            if last == 0 and o.reduce_boxes_in_lowest_layer:
                pairs = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                pairs = [(ar, scale) for ar in o.aspect_ratios]
                if o.interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if last == o.num_layers - 1 else _scale(o.min_scale, o.max_scale, last + 1, o.num_layers)
                    pairs.append((o.interpolated_scale_aspect_ratio, math.sqrt(scale * nxt)))
            for ar, s in pairs:
                heights.append(s / math.sqrt(ar))
                widths.append(s * math.sqrt(ar))
            last += 1
        stride = o.strides[layer]
        fh, fw = math.ceil(o.input_size_height / stride), math.ceil(o.input_size_width / stride)
        for y in range(fh):
            for x in range(fw):
                for h, w in zip(heights, widths):
                    cx, cy = (x + o.anchor_offset_x) / fw, (y + o.anchor_offset_y) / fh
                    out.append((cx, cy, 1.0, 1.0) if o.fixed_anchor_size else (cx, cy, w, h))
        layer = last
    return np.asarray(out, dtype=np.float32)


def decode_boxes(raw: np.ndarray, scores: np.ndarray, anchors: np.ndarray, o: DecodeOptions,
                 min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``TensorsToDetectionsCalculator``: (boxes (M, 4) xyxy, key points (M, K, 2), scores (M,)), normalised
    to the model input, for the anchors whose sigmoid score is at least ``min_score``."""
    raw = np.asarray(raw, dtype=np.float32).reshape(o.num_boxes, o.num_coords)
    logit = np.clip(np.asarray(scores, dtype=np.float64).reshape(o.num_boxes), -o.score_clipping_thresh,
                    o.score_clipping_thresh)
    prob = 1.0 / (1.0 + np.exp(-logit))
    keep = prob >= min_score
    raw, a, prob = raw[keep], anchors[keep], prob[keep]
    b = o.box_coord_offset
    cx = raw[:, b] / o.x_scale * a[:, 2] + a[:, 0]
    cy = raw[:, b + 1] / o.y_scale * a[:, 3] + a[:, 1]
    w = raw[:, b + 2] / o.w_scale * a[:, 2]
    h = raw[:, b + 3] / o.h_scale * a[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    k0, step = o.keypoint_coord_offset, o.num_values_per_keypoint
    kx = raw[:, k0:k0 + o.num_keypoints * step:step] / o.x_scale * a[:, 2:3] + a[:, 0:1]
    ky = raw[:, k0 + 1:k0 + o.num_keypoints * step:step] / o.y_scale * a[:, 3:4] + a[:, 1:2]
    return boxes, np.stack([kx, ky], axis=2), prob


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED``: each kept detection is the score-weighted
    mean (box and key points) of the best remaining one and everything overlapping it by more than
    ``iou_threshold``; it keeps the best score. Best first."""
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while order.size:
        top = order[0]
        overlap = box_iou(boxes[top], boxes[order])[0] > iou_threshold
        overlap[0] = True
        group, order = order[overlap], order[~overlap]
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_k.append((keypoints[group] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[top])
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros((0,) + keypoints.shape[1:], np.float32), np.zeros(0, np.float32)
    return np.asarray(out_b, np.float32), np.asarray(out_k, np.float32), np.asarray(out_s, np.float32)


def letterbox(rgb: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float, float]:
    """``ImageToTensorCalculator`` with ``keep_aspect_ratio`` and ``BORDER_ZERO``: the image scaled to fit,
    centred, black around. Returns (uint8 HxWx3, scale, x offset, y offset) for :func:`unletterbox`."""
    h, w = rgb.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)
    ox, oy = (width - nw) // 2, (height - nh) // 2
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[oy:oy + nh, ox:ox + nw] = small
    return canvas, s, float(ox), float(oy)


def unletterbox(xy: np.ndarray, width: int, height: int, scale: float, ox: float, oy: float) -> np.ndarray:
    """``DetectionLetterboxRemovalCalculator``: normalised model-input coordinates (..., 2k) -> image pixels."""
    xy = np.asarray(xy, dtype=np.float32).copy()
    xy[..., 0::2] = (xy[..., 0::2] * width - ox) / scale
    xy[..., 1::2] = (xy[..., 1::2] * height - oy) / scale
    return xy
