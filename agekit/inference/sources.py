"""Turn what the user points at (file, folder, glob, arrays, PIL images) into a list of inputs.

Listing is separate from decoding: a folder is listed up front (so "no images here" is reported
before any work), and each file is decoded later, one at a time, by ``agekit.data.imageio.load_rgb``
so one bad file costs one result, not the run.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageOps

from ..data.imageio import ImageLoadError, _to_rgb, load_rgb

__all__ = ["IMAGE_EXTENSIONS", "SourceError", "SourceItem", "list_sources", "array_to_rgb"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm"})


class SourceError(ValueError):
    """The source itself is unusable: a path that does not exist, or a folder/glob with no images."""


@dataclass
class SourceItem:
    """One input: a file ``path`` or an in-memory ``data`` (numpy RGB array or PIL image)."""

    name: str
    path: Path | None = None
    data: Any = None

    def load(self) -> np.ndarray:
        """HxWx3 uint8 RGB, or :class:`ImageLoadError` with a one-line reason."""
        if self.path is not None:
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
            raise SourceError(f"no images in folder {p} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
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
