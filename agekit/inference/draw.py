"""Annotated copies of photos: a box per face with an "age gender probability" label (e.g. "34 F 0.97"), or
in person mode a body box and a face box per person, labelled with the inputs used ("34 F 0.97 face+body")."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .results import FaceResult, ImageResult, PersonResult

__all__ = ["draw_faces", "draw_persons", "save_drawing"]

_COLORS = {"female": (235, 87, 87), "male": (47, 128, 237), None: (39, 174, 96)}  # RGB


def draw_faces(rgb: np.ndarray, faces: list[FaceResult], landmarks: bool = True) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, landmarks and label; line width follows the image size."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font_scale = max(0.4, max(h, w) / 1400)
    for f in faces:
        color = _COLORS.get(f.gender, _COLORS[None])
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thick, cv2.LINE_AA)
        if landmarks:
            for x, y in f.landmarks:
                cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        _put_label(img, f.label, (x0, y0, x1, y1), color, thick, font_scale)
    return img


def _put_label(img: np.ndarray, text: str, box: tuple[int, int, int, int], color: tuple[int, int, int], thick: int,
               font_scale: float) -> None:
    x0, y0, _, y1 = box
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4  # above the box, or below at the top edge
    cv2.rectangle(img, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), color, -1)
    cv2.putText(img, text, (x0 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick, cv2.LINE_AA)


def draw_persons(rgb: np.ndarray, persons: list[PersonResult]) -> np.ndarray:
    """A copy of ``rgb`` with each person's body box (thin), face box and label (on the body box, else the face)."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    font_scale = max(0.4, max(h, w) / 1400)
    for p in persons:
        color = _COLORS.get(p.gender, _COLORS[None])
        boxes = []
        for box, t in ((p.person_box, max(1, thick // 2)), (p.face_box, thick)):
            if box is not None:
                b = tuple(int(round(v)) for v in box)
                cv2.rectangle(img, b[:2], b[2:], color, t, cv2.LINE_AA)
                boxes.append(b)
        _put_label(img, p.label, boxes[0], color, thick, font_scale)
    return img


def save_drawing(res: ImageResult, out_dir: str | Path, taken: set[str] | None = None) -> Path | None:
    """Write ``res.image`` annotated into ``out_dir`` (same file name; ``_1``, ``_2`` on clashes or when
    that would overwrite the input itself). Returns the path, or None if the result kept no image."""
    if res.image is None:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(res.name).stem or "image", Path(res.name).suffix.lower()
    suffix = suffix if suffix in (".jpg", ".jpeg", ".png") else ".jpg"
    taken = taken if taken is not None else set()
    src = Path(res.path).resolve() if res.path else None
    name, i = f"{stem}{suffix}", 0
    while name in taken or (out_dir / name).resolve() == src:  # never overwrite the input photo
        i += 1
        name = f"{stem}_{i}{suffix}"
    taken.add(name)
    path = out_dir / name
    drawn = draw_faces(res.image, res.faces) if res.persons is None else draw_persons(res.image, res.persons)
    bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if suffix in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"could not write {path}")
    return path
