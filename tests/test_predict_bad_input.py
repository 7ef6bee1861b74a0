"""Every kind of bad or unusual input gets a result: used correctly, or skipped with a one-line reason."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import agekit
from agekit.data.imageio import ImageLoadError, load_rgb
from agekit.inference.defaults import example_photo_path


def png_header_bomb(path: Path, w: int = 100_000, h: int = 100_000) -> None:
    """A tiny valid-looking PNG whose header claims w x h pixels (a decompression bomb, built cheaply)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def make_bad_inputs(d: Path) -> dict[str, Path]:
    """One file per kind of trouble, next to normal-but-unusual images that must work."""
    ast = Image.open(example_photo_path()).convert("RGB")
    jpg = example_photo_path().read_bytes()
    files = {
        "corrupt": d / "corrupt.jpg",
        "truncated": d / "truncated.jpg",
        "text": d / "text.jpg",
        "bomb": d / "bomb.png",
        "gray": d / "gray.jpg",
        "rgba": d / "rgba.png",
        "cmyk": d / "cmyk.jpg",
        "png16": d / "gray16.png",
        "exif": d / "exif_rotated.jpg",
        "noface": d / "noface.png",
        "empty": d / "empty.jpg",
    }
    files["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    files["truncated"].write_bytes(jpg[: len(jpg) // 2])
    files["text"].write_text("this is not a picture\n")
    files["empty"].write_bytes(b"")
    png_header_bomb(files["bomb"])
    ast.convert("L").save(files["gray"], quality=90)
    rgba = ast.convert("RGBA")
    rgba.putalpha(Image.new("L", ast.size, 255))
    rgba.save(files["rgba"])
    ast.convert("CMYK").save(files["cmyk"], quality=90)
    Image.fromarray((np.asarray(ast.convert("L")).astype(np.uint16) * 257)).save(files["png16"])
    # stored sideways (rotated 90 deg counter-clockwise); EXIF orientation 6 says "rotate 90 CW to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    ast.transpose(Image.Transpose.ROTATE_90).save(files["exif"], quality=90, exif=exif)
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))).save(files["noface"])
    return files


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    d = tmp_path_factory.mktemp("bad_inputs")
    return d, make_bad_inputs(d)


@pytest.fixture(scope="module")
def results(bad_dir, random_model_file):
    d, _ = bad_dir
    p = agekit.Predictor(random_model_file, threads=1)
    return {Path(r.path).name: r for r in p.predict([d, d / "missing.jpg"])}


@pytest.mark.parametrize("key, reason", [
    ("corrupt", "not an image file"),
    ("text", "not an image file"),
    ("empty", "not an image file"),
    ("truncated", "corrupt or truncated"),
    ("bomb", "too large"),
])
def test_unreadable_files_are_skipped_with_a_reason(results, bad_dir, key, reason):
    r = results[bad_dir[1][key].name]
    assert r.error is not None and reason in r.status
    assert "\n" not in r.error and r.faces == [] and r.error.startswith(str(bad_dir[1][key]))


def test_missing_file_in_a_list_is_reported(results):
    assert results["missing.jpg"].status == "file not found"


@pytest.mark.parametrize("key", ["gray", "rgba", "cmyk", "png16", "exif"])
def test_unusual_but_valid_images_work(results, bad_dir, key):
    r = results[bad_dir[1][key].name]
    assert r.ok and len(r.faces) == 1, r.status
    (le, re, nose, ml, mr) = r.faces[0].landmarks
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # upright face: eyes above nose above mouth


def test_exif_rotation_is_applied_before_detection(bad_dir, results):
    path = bad_dir[1]["exif"]
    assert Image.open(path).size == (512, 512)  # square, so check the pixels rather than the size
    upright = load_rgb(path)
    assert np.abs(upright.astype(int) - load_rgb(example_photo_path())).mean() < 6
    raw = np.asarray(Image.open(path).convert("RGB"))  # what a reader ignoring EXIF would see
    assert np.abs(raw.astype(int) - upright).mean() > 30
    box = results[path.name].faces[0].box
    assert 150 < box[0] < 300 and box[1] < 200  # the face where it is in the upright portrait


def test_colour_conversions_keep_colours(bad_dir):
    ref = load_rgb(example_photo_path()).astype(int)
    assert np.abs(load_rgb(bad_dir[1]["cmyk"]).astype(int) - ref).mean() < 6
    g16 = load_rgb(bad_dir[1]["png16"])
    assert g16.dtype == np.uint8 and g16.shape == (512, 512, 3) and g16.max() > 200


def test_no_face_image_is_reported(results):
    r = results["noface.png"]
    assert r.ok and r.faces == [] and r.status == "no face detected"


def test_whole_folder_run_keeps_every_input(results, bad_dir):
    assert set(results) == {p.name for p in bad_dir[1].values()} | {"missing.jpg"}


def test_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "b.png"
    png_header_bomb(p, 9000, 9000)  # below PIL's own guard, above agekit's 64 MP limit
    with pytest.raises(ImageLoadError, match="too large"):
        load_rgb(p)


def test_malformed_headers_raise_image_load_error(tmp_path):
    """PIL plugins raise ValueError/SyntaxError/... (not OSError) on some malformed headers; load_rgb wraps them."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    data[12] = 1  # a TIFF tag field PIL turns into "ValueError: Invalid dimensions"
    p = tmp_path / "bad_dims.tif"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match="corrupt image"):
        load_rgb(p)
