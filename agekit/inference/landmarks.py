"""Five landmarks for datasets that only give face boxes, detected once at `agekit data prepare`.

The crop path (agekit.data.crops) aligns every photo face on five points, as prediction does. A
LAGENDA-style CSV or a folder CSV gives boxes only, so prepare runs the face detector on each image
once, keeps, for every row, the detection that overlaps its box best (IoU), and stores that
detection's five points in the manifest. Photos are detected at up to ``max_side`` px; a box that
matches nothing there is retried on a region around the box at full resolution (small faces in
big photos).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from ..data.imageio import ImageLoadError, load_rgb
from ..data.crops import rows_needing_landmarks
from ..data.manifest import FACE_BOX, landmarks_array, resolve_paths, with_landmarks
from ..data.boxes import box_iou
from .detectors import Detection, FaceDetector, create_detector

__all__ = ["detect_landmarks", "box_iou", "rows_needing_landmarks"]

MIN_IOU = 0.3  # a detection overlapping the labelled box less than this is another face


def _best(dets: list[Detection], box: np.ndarray, min_iou: float) -> Detection | None:
    dets = [d for d in dets if np.isfinite(d.landmarks).all()]
    if not dets:
        return None
    iou = box_iou(box, np.stack([d.box for d in dets]))[0]
    i = int(np.argmax(iou))
    return dets[i] if iou[i] >= min_iou else None


def _around(rgb: np.ndarray, box: np.ndarray, pad: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The region of ``rgb`` around ``box`` (enlarged by ``pad`` box sizes each side) and its offset."""
    h, w = rgb.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(0, np.floor(box[0] - pad * bw))), int(max(0, np.floor(box[1] - pad * bh)))
    x1, y1 = int(min(w, np.ceil(box[2] + pad * bw))), int(min(h, np.ceil(box[3] + pad * bh)))
    return rgb[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)


def detect_landmarks(df: pd.DataFrame, detector: FaceDetector | str | None = None, min_iou: float = MIN_IOU,
                     progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """``df`` with five-point landmarks filled in for every row that has a face box but none.

    Each image is read and detected once however many rows (faces) it has. ``df.attrs`` of the
    result gains ``landmarks_detected`` (rows filled) and ``landmarks_unmatched`` (paths of rows
    whose box no detection overlapped by ``min_iou``, or whose image could not be read): those rows
    keep NaN landmarks, and the caller decides (``agekit data prepare`` drops and reports them).
    """
    need = rows_needing_landmarks(df)
    lms = landmarks_array(df)
    unmatched: list[str] = []
    if need.any():
        det = create_detector(detector or "retinaface", **({"score_threshold": 0.5} if detector is None else {}))
        paths = resolve_paths(df)
        boxes = df[FACE_BOX].to_numpy(dtype=np.float64)
        rows_by_path: dict[str, list[int]] = {}
        for i in np.flatnonzero(need):
            rows_by_path.setdefault(str(paths[i]), []).append(int(i))
        for k, (path, rows) in enumerate(rows_by_path.items()):
            if progress is not None:
                progress(k, len(rows_by_path))
            try:
                rgb = load_rgb(path)
            except ImageLoadError:
                unmatched += [str(df["path"].iat[i]) for i in rows]
                continue
            dets = det.detect(rgb)
            for i in rows:
                best = _best(dets, boxes[i], min_iou)
                if best is None:  # small face in a big photo: look again around the box at full size
                    region, off = _around(rgb, boxes[i])
                    if min(region.shape[:2]) >= 8:
                        local = [Detection(d.box + np.tile(off, 2), d.score, d.landmarks + off) for d in det.detect(region)]
                        best = _best(local, boxes[i], min_iou)
                if best is None:
                    unmatched.append(str(df["path"].iat[i]))
                else:
                    lms[i] = best.landmarks
    out = with_landmarks(df, lms)
    out.attrs["landmarks_detected"] = int(need.sum()) - len(unmatched)
    out.attrs["landmarks_unmatched"] = unmatched
    return out
