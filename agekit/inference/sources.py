"""Turn what the user points at (file, folder, glob, arrays, PIL images, a video) into inputs.

Listing is separate from decoding: a folder is listed up front (so "no images here" is reported
before any work), and each file is decoded later, one at a time, by ``agekit.data.imageio.load_rgb``
so one bad file costs one result, not the run.

A video (:class:`VideoSource`) is one source of many frames: it is opened and probed up front (a
corrupt or unsupported file fails there, in one line), then decoded lazily, every ``stride``-th
frame becoming an in-memory :class:`SourceItem` for the same per-image stages as a photo.
"""
from __future__ import annotations

import glob
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from ..data.imageio import MAX_PIXELS, ImageLoadError, _to_rgb, load_rgb

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "SourceError", "VideoError", "SourceItem", "VideoFrame",
           "VideoSource", "is_video", "expand_videos", "list_sources", "array_to_rgb"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm"})
# containers whose decoding the test suite checks (tests/test_video.py); PyAV reads more, these are promised
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"})


class SourceError(ValueError):
    """The source itself is unusable: a path that does not exist, or a folder/glob with no images."""


class VideoError(SourceError):
    """A video that cannot be used (not a video, corrupt, no video stream, no decodable frame): one line why."""


@dataclass
class SourceItem:
    """One input: a file ``path`` or an in-memory ``data`` (numpy RGB array or PIL image)."""

    name: str
    path: Path | None = None
    data: Any = None

    def load(self) -> np.ndarray:
        """HxWx3 uint8 RGB, or :class:`ImageLoadError` with a one-line reason."""
        if self.path is not None:
            if is_video(self.path):
                raise ImageLoadError(f"{self.path}: a video, not an image (Predictor.predict_video; "
                                     "`agekit predict` takes videos without images)")
            return load_rgb(self.path)
        if isinstance(self.data, Image.Image):
            return _to_rgb(ImageOps.exif_transpose(self.data))
        return array_to_rgb(self.data, self.name)


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _images_in(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _expand_path(src: str | Path, strict: bool = True) -> list[SourceItem]:
    """Items for one path/folder/glob. ``strict=False`` (inside a list): a missing file becomes an item
    whose loading reports "file not found", and an empty folder/glob gives no items."""
    p = Path(src).expanduser()
    if p.is_file():
        return [SourceItem(p.name, path=p)]
    if p.is_dir():
        files = _images_in(p.iterdir())
        if not files and strict:
            videos = sorted(f.name for f in p.iterdir() if is_video(f))
            hint = f"; videos are given one file at a time, e.g. {p / videos[0]}" if videos else ""
            raise SourceError(f"no images in folder {p} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
    elif _is_glob(str(src)):
        files = _images_in(Path(f) for f in glob.glob(str(p), recursive=True))
        if not files and strict:
            raise SourceError(f"no images match {src}")
    elif strict:
        raise SourceError(f"input not found: {src}")
    else:
        files = [p]
    return [SourceItem(f.name, path=f) for f in files]


def list_sources(source: Any) -> list[SourceItem]:
    """Inputs for ``source``: a path / folder / glob string, a numpy array, a PIL image, or a list of those.

    Folders are listed non-recursively (use a ``**`` glob for subfolders); files with image
    extensions are kept. Numpy arrays are taken as RGB (not OpenCV's BGR). A single path that does
    not exist raises :class:`SourceError`; inside a list it becomes that item's "file not found".
    """
    if isinstance(source, SourceItem):
        return [source]
    if isinstance(source, (str, Path)):
        return _expand_path(source)
    if isinstance(source, np.ndarray):
        return [SourceItem("array0", data=source)]
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")  # set by Image.open
        return [SourceItem(Path(filename).name if filename else "image0", data=source)]
    if isinstance(source, (list, tuple)):
        items: list[SourceItem] = []
        for i, s in enumerate(source):
            if isinstance(s, np.ndarray):
                items.append(SourceItem(f"array{i}", data=s))
            elif isinstance(s, Image.Image):
                items.append(SourceItem(f"image{i}", data=s))
            elif isinstance(s, SourceItem):
                items.append(s)
            elif isinstance(s, (str, Path)):
                items.extend(_expand_path(s, strict=False))
            else:
                items.extend(list_sources(s))
        if not items:
            raise SourceError("no images in the given inputs")
        return items
    raise SourceError(f"unsupported source type {type(source).__name__}; give a path, folder, glob, numpy array or PIL image")


def array_to_rgb(a: Any, name: str = "array") -> np.ndarray:
    """An in-memory image -> HxWx3 uint8 RGB: gray, RGBA (on white), float [0, 1] or 16-bit arrays."""
    a = np.asarray(a)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 1:
        return np.ascontiguousarray(a)  # already RGB uint8 (e.g. a decoded video frame): no copy
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ImageLoadError(f"{name}: expected an HxW, HxWx3 or HxWx4 image array, got shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a / 257.0).round()
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageLoadError(f"{name}: image array contains NaN or infinity")
        a = a * 255.0 if a.max() <= 1.0 else a
    elif a.dtype == bool:
        a = a * 255
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if a.shape[2] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


# -- video --------------------------------------------------------------------------------------------------
def is_video(path: str | Path) -> bool:
    """True for a file name with one of :data:`VIDEO_EXTENSIONS` (by name: the decoder checks the content)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def expand_videos(args: Iterable[str | Path]) -> list[Path]:
    """Video paths for command-line arguments: a quoted glob (``'clips/*.mp4'``) expands to the videos it
    matches (sorted; :class:`SourceError` when none), anything else is taken as one video file."""
    out: list[Path] = []
    for a in args:
        if _is_glob(str(a)):
            found = sorted(Path(f) for f in glob.glob(str(Path(a).expanduser()), recursive=True) if is_video(f) and Path(f).is_file())
            if not found:
                raise SourceError(f"no videos match {a}")
            out.extend(found)
        else:
            out.append(Path(a))
    return out


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` counts every frame of the stream from 0 (also the skipped ones),
    ``time`` is its presentation time in seconds, ``rgb`` HxWx3 uint8 upright (rotation metadata applied)."""

    index: int
    time: float
    rgb: np.ndarray


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


class VideoSource:
    """One video file, decoded frame by frame with PyAV (FFmpeg's libraries, BSD-licensed bindings).

    Why PyAV and not OpenCV's ``VideoCapture`` (both are installed): checked here, both decode H.264/HEVC
    MP4, MJPEG/MPEG-4 AVI, H.264/VP9 MKV and VP8/VP9 WebM, but OpenCV's wheel cannot decode AV1 (common in
    WebM), and it reports a corrupt or non-video file only as "no frame". PyAV raises FFmpeg's own error
    (one line for the user), exposes the display-rotation of phone videos, and lets frames that are
    skipped by ``stride`` be decoded without the cost of converting them to RGB.

    Opening probes the file: a missing file, a file that is not a video, a container without a video stream
    or with absurd dimensions raises :class:`VideoError` at once. Decoding (:meth:`frames`) is lazy. A packet
    the decoder rejects is skipped and counted (``corrupt``), so a damaged middle costs those frames, not
    the video; a stream that breaks off sets ``stopped`` and ends the frames there.
    """

    def __init__(self, path: str | Path, stride: int = 1, max_pixels: int = MAX_PIXELS) -> None:
        import av  # PyAV: imported here so image-only use never loads FFmpeg

        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.path = Path(path)
        self.name = self.path.name
        self.stride = stride
        if not self.path.exists():
            raise VideoError(f"{self.path}: file not found")
        if not self.path.is_file():
            raise VideoError(f"{self.path}: not a file")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: not a readable video ({_ffmpeg_reason(e)})") from None
        except OSError as e:
            raise VideoError(f"{self.path}: cannot open ({_one_line(e)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path}: no video stream in this file")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads: decoding keeps up on 2 cores
        cc = self._stream.codec_context
        self.codec = cc.name
        self.width, self.height = int(cc.width or 0), int(cc.height or 0)
        if self.width < 1 or self.height < 1:
            self._container.close()
            raise VideoError(f"{self.path}: the video stream has no picture size (corrupt header?)")
        if self.width * self.height > max_pixels:
            self._container.close()
            raise VideoError(f"{self.path}: frames too large ({self.width}x{self.height} px > {max_pixels} px limit)")
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.fps_known = self.fps > 0
        if not self.fps_known:
            self.fps = 25.0  # no rate in the file: a nominal one for times and the annotated video
        tb, dur = self._stream.time_base, self._stream.duration
        self.duration = float(dur * tb) if dur and tb else (self._container.duration / 1e6 if self._container.duration else None)
        n = int(self._stream.frames or 0)
        self.frame_count: int | None = n if n > 0 else (round(self.duration * self.fps) if self.duration else None)
        self.decoded = 0        # frames decoded so far (every frame, also those skipped by stride)
        self.corrupt = 0        # packets the decoder rejected
        self.stopped: str | None = None  # why decoding ended early, if it did
        self.decode_seconds = 0.0  # time spent decoding and converting (for the speed report)

    @property
    def expected_frames(self) -> int | None:
        """How many frames :meth:`frames` should yield (from the header; ``None`` when it does not say)."""
        return None if self.frame_count is None else math.ceil(self.frame_count / self.stride)

    def frames(self) -> Iterator[VideoFrame]:
        """Every ``stride``-th frame, upright RGB, in presentation order."""
        import av

        demux = self._container.demux(self._stream)
        while True:
            t0 = time.perf_counter()
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as e:  # the container itself breaks off (truncated, garbage)
                self.stopped = _ffmpeg_reason(e)
                self.decode_seconds += time.perf_counter() - t0
                break
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                self.corrupt += 1
                decoded = []
            for f in decoded:
                index = self.decoded
                self.decoded += 1
                if index % self.stride:
                    continue
                rgb = _upright(f.to_ndarray(format="rgb24"), f.rotation)
                t = float(f.time) if f.time is not None else index / self.fps
                self.decode_seconds += time.perf_counter() - t0
                yield VideoFrame(index, t, rgb)
                t0 = time.perf_counter()
            self.decode_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoSource({str(self.path)!r}, {self.codec} {self.width}x{self.height} @ {self.fps:.2f} fps, "
                f"frames={self.frame_count}, stride={self.stride})")


def _ffmpeg_reason(e: BaseException) -> str:
    """FFmpeg's message without the errno and file name PyAV adds ("[Errno 1094995529] ...: 'x.mp4'")."""
    text = getattr(e, "strerror", None) or _one_line(e)
    return " ".join(str(text).split())


def _upright(rgb: np.ndarray, rotation: int | float | None) -> np.ndarray:
    """Apply the display rotation (degrees counter-clockwise, FFmpeg's display matrix) of phone videos."""
    k = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb
