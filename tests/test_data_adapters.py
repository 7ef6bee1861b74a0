"""Dataset adapters on tiny look-alike layouts the tests build (no real FG-NET/AAF/LAGENDA here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agekit.data.adapters import get_adapter
from agekit.data.adapters.aaf import AAFError, parse_aaf_name, read_key_points
from agekit.data.adapters.fgnet import FOREHEAD, FGNetError, parse_fgnet_name, read_pts
from agekit.data.adapters.folder import LabelFileError
from agekit.data.manifest import LANDMARK_COLUMNS, MANIFEST_COLUMNS, landmarks_array, validate_manifest


def make_image(path: Path, seed: int, size: tuple[int, int] = (32, 40)) -> Path:
    """A small JPEG with content unique to ``seed`` (so content hashes differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def write_pts(path: Path, pts: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points:  {len(pts)}\n{{\n{body}\n}}\n")


# --------------------------------------------------------------------------------------- FG-NET
def make_fgnet(root: Path, names: list[str], with_pts: set[str] | None = None) -> dict[str, np.ndarray]:
    """``images/NAME`` (80x100) and, for names in ``with_pts`` (default all), ``points/stem.pts``."""
    pts_by_name = {}
    for i, name in enumerate(names):
        make_image(root / "images" / name, i, (80, 100))
        if with_pts is None or name in with_pts:
            rng = np.random.default_rng(100 + i)
            pts = np.column_stack([rng.uniform(20, 60, 68), rng.uniform(30, 90, 68)]).round(3)
            write_pts(root / "points" / f"{Path(name).stem.lower()}.pts", pts)
            pts_by_name[name] = pts
    return pts_by_name


def test_fgnet_labels_subjects_and_landmark_boxes(tmp_path):
    names = ["001A02.JPG", "001A10.JPG", "023A16a.JPG", "023A16b.JPG", "082A69.JPG"]
    pts = make_fgnet(tmp_path, names, with_pts=set(names) - {"082A69.JPG"})
    df = get_adapter("fgnet")(tmp_path)
    validate_manifest(df)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert [Path(p).name for p in df["path"]] == names
    assert df["age"].tolist() == [2, 10, 16, 16, 69]
    assert df["subject_id"].tolist() == ["001", "001", "023", "023", "082"]
    assert df["gender"].isna().all() and (df["source"] == "fgnet").all()
    p = pts["023A16a.JPG"]
    (x0, y0), (x1, y1) = p.min(axis=0), p.max(axis=0)
    row = df.iloc[2]
    assert row[["face_x0", "face_x1", "face_y1"]].tolist() == pytest.approx([x0, x1, y1])
    assert row["face_y0"] == pytest.approx(max(0.0, y0 - FOREHEAD * (y1 - y0)))
    # the five alignment points of the 68: eye-ring means, nose tip 30, mouth corners 48 and 54
    lm = landmarks_array(df)
    np.testing.assert_allclose(lm[2], [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    assert np.isnan(lm[4]).all()  # 082A69 has no .pts: no points, no box (used as a chip)
    assert row["face_y0"] < y0  # the forehead is added above the brows
    assert df.iloc[4][["face_x0", "face_y0", "face_x1", "face_y1"]].isna().all()  # no .pts: detect later
    assert df.attrs["no_landmarks"] == ["082A69.JPG"]
    assert df[["person_x0", "person_y1"]].isna().all().all()


def test_fgnet_without_points_folder_and_name_parser(tmp_path):
    make_fgnet(tmp_path, ["005A33.JPG"], with_pts=set())
    df = get_adapter("fgnet")(tmp_path)
    assert df["face_x0"].isna().all() and df["age"].iat[0] == 33
    assert parse_fgnet_name("023A16b.JPG") == {"subject_id": "023", "age": 16.0}
    assert parse_fgnet_name("023a16.jpg") == {"subject_id": "023", "age": 16.0}
    assert parse_fgnet_name("23A16.JPG") is None and parse_fgnet_name("023A16c.JPG") is None


def test_fgnet_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        get_adapter("fgnet")(tmp_path)
    make_fgnet(tmp_path, ["001A02.JPG", "001B02.JPG"], with_pts=set())
    with pytest.raises(FGNetError, match="001B02.JPG"):
        get_adapter("fgnet")(tmp_path)


def test_fgnet_bad_pts_names_file_and_line(tmp_path):
    make_fgnet(tmp_path, ["001A02.JPG"])
    pts = tmp_path / "points" / "001a02.pts"
    lines = pts.read_text().splitlines()
    lines[5] = "12.0 abc"
    pts.write_text("\n".join(lines))
    with pytest.raises(FGNetError, match=r"001a02\.pts:6"):
        get_adapter("fgnet")(tmp_path)
    pts.write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(FGNetError, match="68 points"):
        read_pts(pts)


# ------------------------------------------------------------------------------------------ AAF
def aaf_points(seed: int) -> np.ndarray:
    """49 plausible key points: AAF's inner-face scheme jittered (eyes 19-30, nose 13, corners 31/37)."""
    from test_crops_eval_vs_predict import _INNER49

    return _INNER49 + np.random.default_rng(seed).normal(0, 1.0, _INNER49.shape)


def make_aaf(root: Path, files: list[str], train: list[str] | None = None, val: list[str] | None = None,
             no_points: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The release layout: ``original images/``, ``key points/<stem>.txt``, ``image sets/train_.txt``."""
    pts = {}
    for i, name in enumerate(files):
        make_image(root / "original images" / name, i, size=(200, 220))
        if name in no_points:
            continue
        pts[name] = aaf_points(i)
        (root / "key points").mkdir(parents=True, exist_ok=True)
        (root / "key points" / f"{Path(name).stem}.txt").write_text(
            "\n".join(f"{x:g} {y:g}" for x, y in pts[name]) + "\n")
    if train is not None:
        (root / "image sets").mkdir(parents=True, exist_ok=True)
        (root / "image sets" / "train_.txt").write_text("\n".join(train) + "\n")
    if val is not None:
        (root / "image sets" / "val_.txt").write_text("\n".join(val) + "\n")
    return pts


AAF_FILES = ["00000A02.jpg", "00001A25.jpg", "00002A40.jpg", "07380A80.jpg", "07381A30.jpg", "08000A55.jpg",
             "13321A61.jpg", "05000A19.jpg"]


def test_aaf_labels_landmarks_and_subjects_without_lists(tmp_path):
    pts = make_aaf(tmp_path, AAF_FILES, no_points=("05000A19.jpg",))
    df = get_adapter("aaf")(tmp_path)
    validate_manifest(df)
    by = dict(zip(df["path"].map(lambda p: Path(p).name), df.to_dict("records")))
    assert "05000A19.jpg" not in by and any("without a key-point file" in n for n in df.attrs["notes"])
    assert by["00000A02.jpg"]["age"] == 2 and by["00000A02.jpg"]["gender"] == 1  # female serial range
    assert by["07380A80.jpg"]["gender"] == 1 and by["07381A30.jpg"]["gender"] == 0  # range boundary
    assert by["13321A61.jpg"]["gender"] == 0 and by["13321A61.jpg"]["age"] == 61
    assert by["08000A55.jpg"]["subject_id"] == "08000"  # one person per photo
    assert df["race"].isna().all() and (df["source"] == "aaf").all()  # mostly Asian, but not labelled per image
    assert "split" not in df.columns and df[["face_x0", "face_y1"]].isna().all().all()
    p = pts["00002A40.jpg"]
    lm = np.array([by["00002A40.jpg"][c] for c in LANDMARK_COLUMNS]).reshape(5, 2)
    np.testing.assert_allclose(lm, [p[19:25].mean(0), p[25:31].mean(0), p[13], p[31], p[37]], atol=1e-3)
    assert parse_aaf_name("13322A20.jpg")["gender"] is pd.NA  # outside the documented serial ranges


def test_aaf_lists_convert_gender_and_flag_disagreements(tmp_path):
    # image-set gender: 1 = male, 0 = female. 00002 is in the female range but listed as male.
    train = ["00000A02.jpg 0", "00001A25.jpg 0", "00002A40.jpg 1", "07381A30.jpg 1", "08000A55.jpg 1",
             "09999A33.jpg 1"]
    make_aaf(tmp_path, AAF_FILES, train, ["13321A61.jpg 1"])
    df = get_adapter("aaf")(tmp_path)
    by = dict(zip(df["path"].map(lambda p: Path(p).name), df.to_dict("records")))
    assert by["00000A02.jpg"]["gender"] == 1 and by["07381A30.jpg"]["gender"] == 0
    assert pd.isna(by["00002A40.jpg"]["gender"])  # disagreement -> unknown, age kept
    assert by["00002A40.jpg"]["age"] == 40
    assert df.attrs["gender_disagreements"] == ["00002A40.jpg"]
    notes = " | ".join(df.attrs["notes"])
    assert "disagrees" in notes and "09999A33.jpg" in notes and "2 photos are in no image-set list" in notes
    assert "split" not in df.columns  # the split is the shipped aaf_v1.csv


def test_prepare_default_split_is_the_shipped_aaf_split_and_fgnet_subjects(tmp_path):
    from agekit.data.prepare import prepare_manifest
    from agekit.data.datasets import default_split_file

    shipped = pd.read_csv(default_split_file("aaf"))
    assert len(shipped) == 9910 and shipped["split"].value_counts().to_dict() == {"train": 7928, "val": 991, "test": 991}
    listed = dict(zip(shipped["file"].map(lambda f: Path(f).name), shipped["split"]))
    make_aaf(tmp_path / "aaf", AAF_FILES)
    df, rep = prepare_manifest("aaf", tmp_path / "aaf", split="default", seed=0)
    assert rep["split"] == "shipped split file aaf_v1.csv"
    got = dict(zip(df["path"].map(lambda p: Path(p).name), df["split"]))
    assert got == {n: listed[n] for n in AAF_FILES if n in listed}  # names not in the shipped list are dropped
    make_fgnet(tmp_path / "fg", [f"{s:03d}A{a:02d}.JPG" for s in range(1, 11) for a in (3, 30)], with_pts=set())
    df, rep = prepare_manifest("fgnet", tmp_path / "fg", split="default", seed=0)
    assert "subject-exclusive" in rep["split"] and df.groupby("subject_id")["split"].nunique().max() == 1


def test_aaf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="original images"):
        get_adapter("aaf")(tmp_path)
    make_aaf(tmp_path, AAF_FILES[:2], ["00000A02.jpg 0", "00001A25.jpg 7"])
    with pytest.raises(AAFError, match=r"train_\.txt:2"):
        get_adapter("aaf")(tmp_path)
    (tmp_path / "image sets" / "train_.txt").unlink()
    kp = tmp_path / "key points" / "00001A25.txt"
    kp.write_text("1 2\n3 4\n")
    with pytest.raises(AAFError, match=r"00001A25\.txt: expected 49"):
        get_adapter("aaf")(tmp_path)
    kp.write_text("1 2\nthree 4\n")
    with pytest.raises(AAFError, match=r"00001A25\.txt:2"):
        read_key_points(kp)
    kp.unlink()
    make_image(tmp_path / "original images" / "0001A25.jpg", 9)
    with pytest.raises(AAFError, match="0001A25.jpg"):
        get_adapter("aaf")(tmp_path)


# -------------------------------------------------------------------------------------- LAGENDA
LAGENDA_HEADER = "img_name,age,gender,face_x0,face_y0,face_x1,face_y1,person_x0,person_y0,person_x1,person_y1"


def make_lagenda(root: Path, rows: list[str], n_images: int = 4, name: str = "annotation.csv") -> Path:
    for i in range(n_images):
        make_image(root / "images" / f"img{i}.jpg", i)
    csv = root / name
    csv.write_text(LAGENDA_HEADER + "\n" + "\n".join(rows) + "\n")
    return csv


LAGENDA_ROWS = [
    "images/img0.jpg,34,M,10,12,20,25,5,5,30,38",     # two people in one image
    "images/img0.jpg,61,F,21,10,29,22,-1,-1,-1,-1",   # no person box
    "images/img1.jpg,7.5,F,-1,-1,-1,-1,2,3,30,39",    # person only: face box absent
    "images/img2.jpg,-1,M,1,1,9,9,-1,-1,-1,-1",       # unknown age: dropped
    "images/img3.jpg,40,-1,-1,-1,-1,-1,-1,-1,-1,-1",  # no box at all: dropped
]


def test_lagenda_rows_boxes_and_genders(tmp_path):
    make_lagenda(tmp_path, LAGENDA_ROWS)
    df = get_adapter("lagenda")(tmp_path)  # the one CSV in root is the label file
    validate_manifest(df)
    assert len(df) == 3 and (df["source"] == "lagenda").all()
    assert df["age"].tolist() == [34, 61, 7.5]
    assert df["gender"].tolist() == [0, 1, 1]
    assert df.iloc[0][["face_x0", "face_y0", "face_x1", "face_y1"]].tolist() == [10, 12, 20, 25]
    assert df.iloc[1][["person_x0", "person_y0", "person_x1", "person_y1"]].isna().all()
    assert df.iloc[2][["face_x0", "face_y0", "face_x1", "face_y1"]].isna().all()
    assert df.iloc[2]["person_x1"] == 30
    assert df["path"].iat[0] == df["path"].iat[1] == str((tmp_path / "images" / "img0.jpg").resolve())
    notes = " ".join(df.attrs["notes"])
    assert "1 rows with unknown age" in notes and "1 rows with neither face nor person box" in notes


def test_lagenda_numeric_gender_and_no_person_columns(tmp_path):
    make_image(tmp_path / "a.jpg", 0)
    make_image(tmp_path / "b.jpg", 1)
    csv = tmp_path / "labels" / "imdb_test.csv"
    csv.parent.mkdir()
    csv.write_text("img_name,age,gender,face_x0,face_y0,face_x1,face_y1\na.jpg,20,0,1,1,5,5\nb.jpg,30,1.0,1,1,5,5\n")
    df = get_adapter("lagenda")(tmp_path, labels=csv)
    assert df["gender"].tolist() == [0, 1]
    assert df["person_x0"].isna().all()


@pytest.mark.parametrize("row, problem", [
    ("images/img1.jpg,abc,M,1,1,9,9,-1,-1,-1,-1", "age 'abc' is not a number"),
    ("images/img1.jpg,-5,M,1,1,9,9,-1,-1,-1,-1", "age '-5' is negative"),
    ("images/img1.jpg,30,7,1,1,9,9,-1,-1,-1,-1", "gender '7' is not"),
    ("images/img1.jpg,30,M,9,1,1,9,-1,-1,-1,-1", "face box has x1<=x0"),
    ("images/img1.jpg,30,M,1,x,9,9,-1,-1,-1,-1", "face_y0 'x' is not a number"),
    ("images/nope.jpg,30,M,1,1,9,9,-1,-1,-1,-1", "img_name 'images/nope.jpg' not found"),
])
def test_lagenda_bad_labels_name_file_and_line(tmp_path, row, problem):
    csv = make_lagenda(tmp_path, LAGENDA_ROWS[:2] + [row])
    with pytest.raises(LabelFileError) as e:
        get_adapter("lagenda")(tmp_path)
    assert str(e.value).startswith(f"{csv}:4: {problem}")


def test_lagenda_missing_files_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="images root"):
        get_adapter("lagenda")(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="exactly one label .csv"):
        get_adapter("lagenda")(tmp_path)
    make_lagenda(tmp_path, LAGENDA_ROWS + ["images/gone.jpg,30,M,1,1,9,9,-1,-1,-1,-1"])
    df = get_adapter("lagenda")(tmp_path, allow_missing=True)
    assert len(df) == 3 and any("gone.jpg" in n for n in df.attrs["notes"])
    (tmp_path / "bad.csv").write_text("img_name,age\nimages/img0.jpg,3\n")
    with pytest.raises(LabelFileError, match="missing column"):
        get_adapter("lagenda")(tmp_path, labels="bad.csv")


# --------------------------------------------------------------------------------------- folder
def make_folder(root: Path, lines: list[str], header: str = "file,age,gender,race,subject_id", n: int = 4) -> Path:
    for i in range(n):
        make_image(root / ("sub" if i % 2 else "") / f"f{i}.jpg", i)
    csv = root / "labels.csv"
    csv.write_text(header + "\n" + "\n".join(lines) + "\n")
    return csv


def test_folder_labels_and_gender_spellings(tmp_path):
    outside = make_image(tmp_path.parent / f"{tmp_path.name}_outside.jpg", 50)
    make_folder(tmp_path, ["f0.jpg,20,M,White,s1", "sub/f1.jpg,31.5,female,,s1", "f2.jpg,40,0,Asian,s2",
                           "", f"{outside},5,,,"])
    df = get_adapter("folder")(tmp_path)
    validate_manifest(df)
    assert df["age"].tolist() == [20, 31.5, 40, 5]
    assert df["gender"].tolist()[:3] == [0, 1, 0] and df["gender"].isna().iat[3]
    assert df["race"].isna().tolist() == [False, True, False, True]
    assert df["subject_id"].tolist()[:3] == ["s1", "s1", "s2"]
    assert df["path"].iat[1] == str((tmp_path / "sub" / "f1.jpg").resolve()) and df["path"].iat[3] == str(outside)
    assert (df["source"] == "folder").all() and df["face_x0"].isna().all()


def test_folder_reads_optional_boxes(tmp_path):
    make_folder(tmp_path, ["f0.jpg,20,F,1,2,11,12", "f2.jpg,21,m,-1,-1,-1,-1"],
                header="file,age,gender,face_x0,face_y0,face_x1,face_y1")
    df = get_adapter("folder")(tmp_path, labels=tmp_path / "labels.csv")
    assert df.iloc[0][["face_x0", "face_y0", "face_x1", "face_y1"]].tolist() == [1, 2, 11, 12]
    assert df.iloc[1][["face_x0", "face_y1"]].isna().all()


@pytest.mark.parametrize("row, problem", [
    ("f2.jpg,abc,M,,", "age 'abc' is not a number"),
    ("f2.jpg,-1,M,,", "age '-1' is negative"),
    ("f2.jpg,,M,,", "age is empty"),
    ("f2.jpg,200,M,,", "age '200' is above 130"),
    ("f2.jpg,30,7,,", "gender '7' is not M/F"),
    ("f9.jpg,30,F,,", "file 'f9.jpg' not found"),
])
def test_folder_bad_labels_name_file_and_line(tmp_path, row, problem):
    csv = make_folder(tmp_path, ["f0.jpg,20,M,,", row])
    with pytest.raises(LabelFileError) as e:
        get_adapter("folder")(tmp_path)
    assert str(e.value).startswith(f"{csv}:3: {problem}")


def test_folder_missing_folder_csv_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        get_adapter("folder")(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="label CSV not found"):
        get_adapter("folder")(tmp_path, labels="missing.csv")
    make_folder(tmp_path, ["f0.jpg,M"], header="file,gender")
    with pytest.raises(LabelFileError, match="missing column.*age"):
        get_adapter("folder")(tmp_path)


def test_unknown_format_lists_known_ones():
    with pytest.raises(KeyError, match="fgnet.*folder.*lagenda.*utkface"):
        get_adapter("imdb-wiki")
