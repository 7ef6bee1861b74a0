"""The one crop path: landmark schemes -> five points, manifest landmark columns, CropSpec modes, the
crop cache's per-row rules, and prepare-time detection for box-only datasets."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.align import TEMPLATE
from agekit.data.cache import build_crop_cache
from agekit.data.crops import CropError, CropSpec
from agekit.data.imageio import load_rgb
from agekit.data.landmarks import five_from_49, five_from_68, five_points
from agekit.data.manifest import (LANDMARK_COLUMNS, ManifestError, landmarks_array, new_manifest, read_manifest,
                                  validate_manifest, with_landmarks, write_manifest)
from agekit.inference.defaults import example_photo_path

# ------------------------------------------------------------------------------ landmark schemes
# The first AAF key-point file, 00000A02.txt, as released (49 "x y" lines).
AAF_00000A02 = np.array([
    62.0452, 155.969, 73.4498, 152.787, 85.6939, 152.788, 97.9174, 154.542, 110.013, 157.267, 152.663, 160.374,
    163.999, 158.065, 175.076, 157.001, 185.9, 159.042, 194.49, 164.139, 129.165, 186.735, 128.306, 199.77,
    127.335, 212.254, 126.658, 224.497, 113.313, 235.682, 119.795, 235.459, 126.394, 235.284, 132.867, 235.875,
    139.859, 237.04, 73.9021, 177.553, 84.3512, 172.247, 95.8249, 173.709, 103.462, 184.466, 93.1991, 186.127,
    82.6404, 184.574, 150.492, 188.342, 159.47, 178.635, 170.49, 178.878, 179.725, 184.454, 171.101, 190.427,
    160.285, 191.275, 103.275, 253.591, 111.135, 252.507, 118.908, 250.917, 127.01, 252.734, 135.567, 251.633,
    145.157, 253.714, 154.582, 255.539, 146.98, 263.104, 138.064, 268.827, 127.206, 270.72, 116.738, 268.285,
    109.423, 262.166, 114.948, 255.685, 126.85, 257.028, 140.975, 256.224, 141.691, 258.459, 127.437, 260.942,
    114.554, 258.298]).reshape(49, 2)


def test_68_point_mapping_by_hand():
    pts = np.column_stack([np.arange(68.0), 2 * np.arange(68.0)])  # point i at (i, 2i)
    # eye centres: mean of 36..41 = 38.5, of 42..47 = 44.5; nose tip 30; mouth corners 48, 54
    np.testing.assert_allclose(five_from_68(pts), [[38.5, 77], [44.5, 89], [30, 60], [48, 96], [54, 108]])
    np.testing.assert_allclose(five_points(pts), five_from_68(pts))


def test_49_point_mapping_on_a_real_aaf_file():
    five = five_from_49(AAF_00000A02)
    # by hand from the file: left-eye ring lines 20-25 (x 73.9 .. 103.5), right-eye ring lines 26-31,
    # nose tip line 14, mouth corners lines 32 and 38 (the outer lip ring's extreme x points)
    np.testing.assert_allclose(five, [[88.8966, 179.7793], [165.2605, 185.3352], [126.658, 224.497],
                                      [103.275, 253.591], [154.582, 255.539]], atol=1e-3)
    le, re, nose, ml, mr = five
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]  # image-left eye first, as RetinaFace orders them
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
    mouth = AAF_00000A02[31:43]
    assert mouth[:, 0].argmin() == 0 and mouth[:, 0].argmax() == 6  # 31 and 37 are the outer corners
    np.testing.assert_allclose(five_points(AAF_00000A02), five)


def test_five_points_rejects_unknown_schemes():
    with pytest.raises(ValueError, match="21-point"):
        five_points(np.zeros((21, 2)))
    with pytest.raises(ValueError, match="expected 68"):
        five_from_68(np.zeros((49, 2)))


# ------------------------------------------------------------------------------------- manifest
def test_manifest_landmark_columns_round_trip_and_old_manifests(tmp_path):
    rows = [{"path": "a.jpg", "age": 30, **dict(zip(LANDMARK_COLUMNS, range(10)))}, {"path": "b.jpg", "age": 40}]
    df = new_manifest(rows, source="x")
    assert list(df.columns[-10:]) == LANDMARK_COLUMNS
    back = read_manifest(write_manifest(df, tmp_path / "m.csv"))
    lm = landmarks_array(back)
    np.testing.assert_array_equal(lm[0], np.arange(10.0).reshape(5, 2))
    assert np.isnan(lm[1]).all()
    old = new_manifest([{"path": "c.jpg", "age": 5}], source="x")  # a manifest from before landmarks
    assert not any(c in old.columns for c in LANDMARK_COLUMNS)
    assert np.isnan(landmarks_array(read_manifest(write_manifest(old, tmp_path / "old.csv")))).all()
    assert landmarks_array(with_landmarks(old, np.ones((1, 5, 2))))[0].tolist() == [[1, 1]] * 5


def test_manifest_rejects_partial_landmarks():
    df = new_manifest([{"path": "a.jpg", "age": 30, **dict(zip(LANDMARK_COLUMNS, range(10)))}], source="x")
    with pytest.raises(ManifestError, match="all ten lm_"):
        validate_manifest(df.assign(lm_y4=np.nan))
    with pytest.raises(ManifestError, match="lacks lm_x4"):
        validate_manifest(df.drop(columns=["lm_x4"]))


# ------------------------------------------------------------------------------------- CropSpec
@pytest.fixture(scope="module")
def chip() -> np.ndarray:
    """A 200 px chip of the bundled astronaut photo, aligned on its detected landmarks."""
    from agekit.inference.detectors import create_detector

    rgb = load_rgb(example_photo_path())
    return CropSpec("align").crop(rgb, create_detector("retinaface", threads=1).detect(rgb)[0].landmarks)


def paste(chip: np.ndarray, angle: float = 12.0, scale: float = 1.6, size=(420, 520)):
    """(photo with ``chip`` pasted at a known similarity, the template's points in that photo)."""
    m = cv2.getRotationMatrix2D((100.0, 100.0), angle, scale)
    m[:, 2] += np.array([size[0] * 0.5, size[1] * 0.45]) - 100.0
    photo = np.full((size[1], size[0], 3), 90, np.uint8)
    photo = cv2.warpAffine(chip, m, size, dst=photo, borderMode=cv2.BORDER_TRANSPARENT)
    return photo, (TEMPLATE - 0.5) @ m[:, :2].T + m[:, 2] + 0.5


def test_cropspec_modes(chip):
    assert CropSpec().mode == "auto" and CropSpec("align") == CropSpec("align")  # hashable, comparable
    photo, lm = paste(chip)
    back = CropSpec("align").crop(photo, lm)
    assert back.shape == (200, 200, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - chip).mean() < 6  # the pasted face, framed as the chip was
    assert np.array_equal(CropSpec("auto").crop(photo, lm), back)
    assert np.array_equal(CropSpec("chip").crop(chip, lm), chip)  # chips are used as they are
    assert np.array_equal(CropSpec("auto").crop(chip, np.full((5, 2), np.nan)), chip)
    assert CropSpec("chip", size=100).crop(chip).shape == (100, 100, 3)
    assert CropSpec("align", size=100).crop(photo, lm).shape == (100, 100, 3)
    with pytest.raises(CropError, match="five finite landmarks"):
        CropSpec("align").crop(photo, None)
    with pytest.raises(ValueError, match="crop mode"):
        CropSpec("box")  # type: ignore[arg-type]


def _manifest(tmp_path: Path, chip: np.ndarray) -> pd.DataFrame:
    photo, lm = paste(chip)
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "chip.png"), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
    rows = [{"path": str(tmp_path / "photo.png"), "age": 40, **dict(zip(LANDMARK_COLUMNS, lm.ravel()))},
            {"path": str(tmp_path / "chip.png"), "age": 40},
            {"path": str(tmp_path / "photo.png"), "age": 40, "person_x0": 10, "person_y0": 10, "person_x1": 400,
             "person_y1": 500}]
    return new_manifest(rows, source="t")


def test_crop_cache_aligns_photos_keeps_chips_and_skips_bodies(tmp_path, chip):
    df = _manifest(tmp_path, chip)
    crops, ok, errors = build_crop_cache(df, 200, tmp_path / "cache", CropSpec())
    assert ok.tolist() == [True, True, False] and "person box only" in errors[0]
    assert np.abs(crops[0].astype(int) - chip).mean() < 6  # aligned, not a box crop of the photo
    assert np.array_equal(crops[1], load_rgb(tmp_path / "chip.png"))
    moved = with_landmarks(df, landmarks_array(df) + 3)
    again, _, _ = build_crop_cache(moved, 200, tmp_path / "cache", CropSpec())
    assert not np.array_equal(again[0], crops[0])  # the landmarks are part of the cache key
    with pytest.raises(CropError, match="agekit data prepare"):  # align everything: the chip has no points
        build_crop_cache(df.iloc[:2], 200, tmp_path / "cache", CropSpec("align"))


def test_face_box_without_landmarks_is_an_error_naming_prepare(tmp_path, chip):
    df = _manifest(tmp_path, chip).iloc[:2].copy()
    df.loc[1, ["face_x0", "face_y0", "face_x1", "face_y1"]] = [10, 10, 100, 120]
    with pytest.raises(CropError, match=r"1 of 2 rows have a face box but no five-point landmarks.*agekit data prepare"):
        build_crop_cache(df, 200, tmp_path / "cache")
    crops, ok, _ = build_crop_cache(df, 200, tmp_path / "cache", CropSpec("chip"))  # chips on request
    assert ok.all()


# ------------------------------------------------------------------ prepare-time detection (LAGENDA)
def test_prepare_detects_landmarks_for_box_only_rows(tmp_path):
    from agekit.inference.detectors import create_detector

    root = tmp_path / "lagenda"
    root.mkdir()
    shutil.copy(example_photo_path(), root / "astro.jpg")
    rgb = load_rgb(root / "astro.jpg")
    face = create_detector("retinaface", threads=1).detect(rgb)[0]
    x0, y0, x1, y1 = (face.box + [-6, -10, 5, 8]).round(1)  # an annotator's box, not the detector's
    (root / "labels.csv").write_text(
        "img_name,age,gender,face_x0,face_y0,face_x1,face_y1,person_x0,person_y0,person_x1,person_y1\n"
        f"astro.jpg,40,F,{x0},{y0},{x1},{y1},-1,-1,-1,-1\n"
        "astro.jpg,50,M,5,440,60,500,-1,-1,-1,-1\n"  # a box where no face is
        "astro.jpg,30,M,-1,-1,-1,-1,100,20,400,512\n")  # a body only: nothing to detect
    out = tmp_path / "m.csv"
    r = CliRunner().invoke(app, ["data", "prepare", "lagenda", str(root), "--out", str(out), "--split", "none",
                                 "--no-dedup"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "1 face boxes got five landmarks" in r.output and "1 face boxes matched no detected face" in r.output
    df = read_manifest(out)
    assert df["age"].tolist() == [40, 30]  # the unmatched box is dropped
    lm = landmarks_array(df)
    np.testing.assert_allclose(lm[0], face.landmarks, atol=0.5)
    assert np.isnan(lm[1]).all()
    crops, ok, _ = build_crop_cache(df, 64, tmp_path / "cache")  # the crop path takes the prepared manifest
    assert ok.tolist() == [True, False]
    r = CliRunner().invoke(app, ["data", "prepare", "lagenda", str(root), "--out", str(tmp_path / "n.csv"),
                                 "--split", "none", "--no-dedup", "--no-detect"])
    assert r.exit_code == 0 and np.isnan(landmarks_array(read_manifest(tmp_path / "n.csv"))).all()
