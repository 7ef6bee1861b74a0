"""Annotated copies of photos (a box per face with an "age gender probability" label, e.g. "34 F 0.97"; in
person mode a body box and a face box per person, labelled with the inputs used, "34 F 0.97 face+body") and of
videos (a box per tracked person with its id and running age, written with PyAV)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .results import FaceResult, ImageResult, Observation, PersonResult

__all__ = ["draw_faces", "draw_persons", "draw_tracks", "drawing_path", "save_drawing", "VideoWriter", "VIDEO_CODECS"]

_COLORS = {"female": (235, 87, 87), "male": (47, 128, 237), None: (39, 174, 96)}  # RGB


def _style(img: np.ndarray) -> tuple[int, float]:
    """Line width and font scale that follow the image size."""
    h, w = img.shape[:2]
    return max(1, round(max(h, w) / 400)), max(0.4, max(h, w) / 1400)


def _labelled_box(img: np.ndarray, box: Sequence[float], text: str, color: tuple[int, int, int], thick: int,
                  font_scale: float, line: int | None = None) -> None:
    """The box (``line`` wide, default ``thick``) with ``text`` on a filled tab above it (below at the top edge)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(img, (x0, y0), (x1, y1), color, line or thick, cv2.LINE_AA)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4  # above the box, or below at the top edge
    cv2.rectangle(img, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), color, -1)
    cv2.putText(img, text, (x0 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick, cv2.LINE_AA)


def draw_faces(rgb: np.ndarray, faces: list[FaceResult], landmarks: bool = True) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, landmarks and label; line width follows the image size."""
    img = np.ascontiguousarray(rgb).copy()
    thick, font_scale = _style(img)
    for f in faces:
        if landmarks:
            for x, y in f.landmarks:
                cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        _labelled_box(img, f.box, f.label, _COLORS.get(f.gender, _COLORS[None]), thick, font_scale)
    return img


def draw_persons(rgb: np.ndarray, persons: list[PersonResult]) -> np.ndarray:
    """A copy of ``rgb`` with each person's body box (thin), face box and label (on the body box, else the face)."""
    img = np.ascontiguousarray(rgb).copy()
    thick, font_scale = _style(img)
    for p in persons:
        color = _COLORS.get(p.gender, _COLORS[None])
        if p.person_box is not None and p.face_box is not None:
            b = [int(round(v)) for v in p.face_box]
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), color, thick, cv2.LINE_AA)
        body = p.person_box is not None
        _labelled_box(img, p.person_box if body else p.face_box, p.label, color, thick, font_scale,
                      line=max(1, thick // 2) if body else thick)
    return img


def draw_tracks(rgb: np.ndarray, tracked: Sequence[tuple[int, Observation, str, str | None]]) -> np.ndarray:
    """A copy of a video frame with a box per tracked observation, labelled ``"#id label"``.

    ``tracked``: (track id, this frame's observation, running label such as ``"31 (24-38) F"``, running gender).
    """
    img = np.ascontiguousarray(rgb).copy()
    thick, font_scale = _style(img)
    for tid, o, label, gender in tracked:
        _labelled_box(img, o.box, f"#{tid} {label}", _COLORS.get(gender, _COLORS[None]), thick, font_scale)
    return img


def drawing_path(out_dir: str | Path, name: str, suffix: str, source: str | Path | None = None,
                 taken: set[str] | None = None) -> Path:
    """``out_dir/<stem of name><suffix>``, made unique within ``taken`` (``_1``, ``_2``) and never the
    ``source`` file itself (drawing next to the input must not overwrite it). Creates ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem or "image"
    taken = taken if taken is not None else set()
    src = Path(source).resolve() if source else None
    file, i = f"{stem}{suffix}", 0
    while file in taken or (out_dir / file).resolve() == src:
        i += 1
        file = f"{stem}_{i}{suffix}"
    taken.add(file)
    return out_dir / file


def save_drawing(res: ImageResult, out_dir: str | Path, taken: set[str] | None = None) -> Path | None:
    """Write ``res.image`` annotated into ``out_dir`` (same file name; ``_1``, ``_2`` on clashes or when
    that would overwrite the input itself). Returns the path, or None if the result kept no image."""
    if res.image is None:
        return None
    suffix = Path(res.name).suffix.lower()
    path = drawing_path(out_dir, res.name, suffix if suffix in (".jpg", ".jpeg", ".png") else ".jpg", res.path, taken)
    drawn = draw_faces(res.image, res.faces) if res.persons is None else draw_persons(res.image, res.persons)
    bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if suffix in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"could not write {path}")
    return path


# container -> default codec: H.264 MP4 plays everywhere; the others exist for decoding tests
VIDEO_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
                ".avi": "mjpeg"}


class VideoWriter:
    """Encode RGB frames into a video file with PyAV (the same FFmpeg build that decodes them).

    The codec follows the file's suffix (:data:`VIDEO_CODECS`), or ``codec`` when given; the size is the
    first frame's, padded to even numbers (4:2:0 video needs them) by repeating the edge.
    """

    def __init__(self, path: str | Path, fps: float, codec: str | None = None, options: dict[str, str] | None = None) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._codec = codec or VIDEO_CODECS.get(self.path.suffix.lower(), "libx264")
        if self._codec == "libx264" and "libx264" not in av.codecs_available:
            self._codec = "mpeg4"  # an FFmpeg build without x264
        self._pix_fmt = "yuvj420p" if self._codec == "mjpeg" else "yuv420p"
        self._rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._options = options if options is not None else ({"crf": "23", "preset": "veryfast"} if self._codec == "libx264" else {})
        self._container = av.open(str(self.path), "w")
        self._stream = None
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        if self._stream is None:
            h, w = rgb.shape[:2]
            self._stream = self._container.add_stream(self._codec, rate=self._rate, options=self._options)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = self._pix_fmt
        w, h = self._stream.width, self._stream.height
        if rgb.shape[0] != h or rgb.shape[1] != w:
            rgb = cv2.copyMakeBorder(rgb, 0, max(h - rgb.shape[0], 0), 0, max(w - rgb.shape[1], 0), cv2.BORDER_REPLICATE)[:h, :w]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        if self._stream is None:  # nothing written: an empty file, which the caller removes
            try:
                container.close()
            except Exception:  # noqa: BLE001 - FFmpeg may refuse to finish a file without streams
                pass
            return
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
        container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
