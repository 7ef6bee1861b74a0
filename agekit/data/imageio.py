"""Reading images safely: one function turns any file into an RGB uint8 array or a clear error."""
from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageLoadError", "ImageTooLargeError", "NotAnImageError", "load_rgb", "decode_rgb", "image_size", "MAX_PIXELS"]

MAX_PIXELS = 64_000_000  # ~8000x8000; beyond that we refuse rather than risk a decompression bomb


class ImageLoadError(ValueError):
    """An image cannot be used; the message says why in one line. Raised as such for missing, corrupt or
    truncated files; the subclasses say more (the HTTP service answers them with different codes)."""


class ImageTooLargeError(ImageLoadError):
    """More pixels than allowed (a decompression bomb, or just too big): refused before decoding."""


class NotAnImageError(ImageLoadError):
    """Not an image at all, or a format PIL cannot read."""


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to HxWx3 uint8 RGB, applying EXIF rotation.

    Handles grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit images.
    Raises :class:`ImageLoadError` for missing, non-image, corrupt, truncated or huge files.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageLoadError(f"{path}: not a file")
    return _decode(path, str(path), max_pixels)


def decode_rgb(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`load_rgb` for an image held in memory (an HTTP upload); errors start with ``name``."""
    if not data:
        raise ImageLoadError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(src: Path | IO[bytes], label: str, max_pixels: int) -> np.ndarray:
    """The one safe decoder: the pixel count is checked from the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageTooLargeError(f"{label}: image too large ({w}x{h} px > {max_pixels} px limit)")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{label}: image too large (decompression-bomb guard)") from None
    except Image.UnidentifiedImageError:
        raise NotAnImageError(f"{label}: not an image file (or an unsupported format)") from None
    except OSError as e:
        raise ImageLoadError(f"{label}: corrupt or truncated image ({e})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:  # PIL plugins on malformed headers
        raise ImageLoadError(f"{label}: corrupt image ({type(e).__name__}: {e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of ``path`` as :func:`load_rgb` returns it (after EXIF rotation), from the header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"{path}: not a readable image ({type(e).__name__})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # 90-degree rotations swap the sides


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if a.max() > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255.0
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX ...
    arr = np.asarray(im)
    if arr.dtype != np.uint8:
        arr = (arr / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
