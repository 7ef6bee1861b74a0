"""PETA adapter, interval columns in the manifest, the shipped person split and `data stats` on groups.

A look-alike PETA (GRID + MIT layout, Label.txt per subset) is built here; the real ../shared/data/PETA is
checked too when present (counts from its README)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.config.roots import dataset_root
from agekit.data.adapters import get_adapter
from agekit.data.adapters.peta import AGE_GROUPS, PETAError, person_id, read_labels
from agekit.data.dedup import deduplicate
from agekit.data.manifest import (AGE_MAX, ManifestError, age_bounds, has_intervals, interval_name, interval_rows,
                                  read_manifest, validate_manifest, write_manifest)
from agekit.data.prepare import prepare_manifest
from agekit.data.splits import subject_split

REPO = Path(__file__).resolve().parents[1]
PETA = (REPO / dataset_root("peta")).resolve()
runner = CliRunner()

ATTRS = "upperBodyBlack lowerBodyBlue hairBlack carryingNothing"


def _img(path: Path, seed: int, size=(40, 90)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(px).save(path, quality=90)


def make_peta(root: Path) -> Path:
    """GRID: ids 0001-0004 (0001 with two images, 0004 without an age group); MIT: ids 00001-00004 with
    gender in the names (00003's name disagrees with its label), plus an image nobody labelled."""
    grid, mit = root / "GRID" / "archive", root / "MIT" / "archive"
    _img(grid / "0001_1_25004_107_32_106_221.jpeg", 1, (60, 120))
    _img(grid / "0001_2_25023_116_134_128_330.jpeg", 2)
    _img(grid / "0002_1_25008_169_19_94_224.jpeg", 3)
    _img(grid / "0003_1_25008_57_44_97_265.jpeg", 4)
    _img(grid / "0004_1_25072_204_72_106_277.jpeg", 5)
    (grid / "Label.txt").write_text(
        f"0001 {ATTRS} personalMale personalLess30\n0002 {ATTRS} personalFemale personalLess45\n"
        f"0003 personalLarger60 {ATTRS} personalMale\n0004 {ATTRS} personalFemale\n")
    for i, (name, seed) in enumerate([("00001_male_back.jpg", 11), ("00002_female_fore.jpg", 12),
                                      ("00003_male_back.jpg", 13), ("00004_female_back.jpg", 14),
                                      ("00009_male_back.jpg", 15)]):
        _img(mit / name, seed, (64, 128))
    (mit / "Label.txt").write_text(
        f"00001 {ATTRS} personalMale personalLess15\n00002 personalFemale personalLess60 {ATTRS}\n"
        f"00003 {ATTRS} personalFemale personalLess30\n00004 personalFemale personalLess30\n"
        f"00005 personalMale personalLess30\n")
    return root


def test_peta_rows_groups_boxes_and_subjects(tmp_path):
    df = get_adapter("peta")(make_peta(tmp_path))
    df = validate_manifest(df)  # interval rows pass the age check
    by = {Path(p).name: r for p, r in zip(df["path"], df.to_dict("records"))}
    assert len(df) == 8  # 4 GRID images of labelled-age people + 4 labelled MIT images
    r = by["0001_1_25004_107_32_106_221.jpeg"]
    assert (r["age_lo"], r["age_hi"]) == (16, 30) and np.isnan(r["age"]) and r["gender"] == 0
    assert [r["person_x0"], r["person_y0"], r["person_x1"], r["person_y1"]] == [0, 0, 60, 120]  # the whole image
    assert all(np.isnan(r[c]) for c in ("face_x0", "face_y0", "face_x1", "face_y1"))
    assert r["subject_id"] == "GRID/0001" and by["00001_male_back.jpg"]["subject_id"] == "MIT/00001"
    assert by["0003_1_25008_57_44_97_265.jpeg"]["age_hi"] == AGE_MAX  # over 60: open top
    assert (by["00001_male_back.jpg"]["age_lo"], by["00001_male_back.jpg"]["age_hi"]) == (0, 15)
    assert pd.isna(by["00003_male_back.jpg"]["gender"])  # name says male, Label.txt female: unknown
    assert by["00004_female_back.jpg"]["gender"] == 1
    assert not any(n.startswith("0004_") or n.startswith("00009") for n in by)
    notes = " | ".join(df.attrs["notes"])
    assert "GRID: 1 people without an age group" in notes and "MIT: 1 people with images but no Label.txt" in notes
    assert "MIT: 1 Label.txt people have no image" in notes and "disagrees with Label.txt" in notes
    assert df.attrs["gender_disagreements"] == ["MIT/00003"] and df.attrs["no_age_group"] == ["GRID/0004"]
    assert set(df["source"]) == {"peta"} and has_intervals(df) and interval_rows(df).all()


def test_peta_person_split_keeps_people_together_and_prepare_round_trip(tmp_path):
    root = make_peta(tmp_path / "PETA")
    df, report = prepare_manifest("peta", root, split="subject", seed=0, fracs=(0.5, 0.25, 0.25))
    assert report["leaks"] == 0 and df.groupby("subject_id")["split"].nunique().max() == 1
    write_manifest(df, tmp_path / "peta.csv")
    back = read_manifest(tmp_path / "peta.csv")
    np.testing.assert_array_equal(back["age_lo"], df["age_lo"])
    assert back["age"].isna().all() and has_intervals(back)


def test_peta_label_errors_name_file_and_line(tmp_path):
    p = tmp_path / "Label.txt"
    p.write_text("0001 personalMale personalLess30\n0001 personalMale personalLess45\n")
    with pytest.raises(PETAError, match=r"Label.txt:2: person 0001 is already labelled on line 1"):
        read_labels(p)
    p.write_text("0001 personalMale personalLess30 personalLess45\n")
    with pytest.raises(PETAError, match=r"Label.txt:1: .*more than one age group"):
        read_labels(p)
    p.write_text("\n0001 personalMale personalFemale personalLess30\n")
    with pytest.raises(PETAError, match=r"Label.txt:2: .*both personalMale and personalFemale"):
        read_labels(p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PETAError, match="no PETA subset"):
        get_adapter("peta")(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="PETA folder not found"):
        get_adapter("peta")(tmp_path / "nope")
    assert person_id("0001_1_25004_107_32_106_221.jpeg") == "0001" and person_id("0042.png") == "0042"
    assert set(AGE_GROUPS.values()) == {(0, 15), (16, 30), (31, 45), (46, 60), (61, AGE_MAX)}


def test_peta_one_subset_or_archive_folder_as_root(tmp_path):
    root = make_peta(tmp_path)
    a = get_adapter("peta")(root / "GRID")
    b = get_adapter("peta")(root / "GRID" / "archive")
    assert len(a) == len(b) == 4 and set(a["subject_id"]) == {"GRID/0001", "GRID/0002", "GRID/0003"}


def test_data_stats_reports_groups_people_and_splits(tmp_path):
    root = make_peta(tmp_path / "PETA")
    out = tmp_path / "peta.csv"
    res = runner.invoke(app, ["data", "prepare", "peta", str(root), "--out", str(out), "--split", "subject",
                              "--fracs", "0.5,0.25,0.25"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "stats", str(out), "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert "by age group only" in res.output and "age groups (interval labels)" in res.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["age"]["missing"] == 0 and s["age"]["age_group_only"] == 8
    groups = {g["group"]: g for g in s["age_groups"]}
    assert list(groups) == ["0-15", "16-30", "31-45", "46-60", "61+"]
    assert groups["16-30"]["images"] == 4 and groups["16-30"]["people"] == 3  # GRID 0001 has two images
    assert sum(v["people"] for v in groups["16-30"]["by_split"].values()) == 3
    assert sum(r["people"] for r in s["splits"]) == 7


# ------------------------------------------------------------------- manifest interval columns
def _manifest(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {"path": [f"{i}.jpg" for i in range(n)], "gender": [0] * n, "race": [None] * n, "subject_id": [None] * n,
            "source": ["x"] * n, **{c: [np.nan] * n for c in ("face_x0", "face_y0", "face_x1", "face_y1",
                                                                "person_x0", "person_y0", "person_x1", "person_y1")}}
    return pd.DataFrame({**base, **cols})


def test_manifest_interval_columns_validate_and_bounds():
    df = validate_manifest(_manifest(age=[30.0, np.nan, 40.0], age_lo=[np.nan, 16, 40], age_hi=[np.nan, 30, 40]))
    lo, hi = age_bounds(df)
    np.testing.assert_array_equal(lo, [30, 16, 40]) and np.testing.assert_array_equal(hi, [30, 30, 40])
    assert interval_rows(df).tolist() == [False, True, False]
    old = validate_manifest(_manifest(age=[30.0, 5.0]))  # a manifest from before the interval columns
    assert not has_intervals(old) and np.array_equal(age_bounds(old)[0], [30, 5])
    bad = [({"age": [np.nan], "age_lo": [16.0], "age_hi": [np.nan]}, "both be set"),
           ({"age": [np.nan], "age_lo": [30.0], "age_hi": [16.0]}, "age_hi < age_lo"),
           ({"age": [np.nan], "age_lo": [61.0], "age_hi": [200.0]}, "outside 0-130"),
           ({"age": [50.0], "age_lo": [16.0], "age_hi": [30.0]}, "age 50 is outside its age group"),
           ({"age": [np.nan], "age_lo": [np.nan], "age_hi": [np.nan]}, "age is missing"),
           ({"age": [np.nan], "age_lo": [16.0]}, "has age_lo but not age_hi")]
    for cols, msg in bad:
        with pytest.raises(ManifestError, match=msg):
            validate_manifest(_manifest(**cols))
    assert interval_name(16, 30) == "16-30" and interval_name(61, AGE_MAX) == "61+" and interval_name(5, 5) == "5"


def test_dedup_sees_conflicting_groups(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _img(tmp_path / name, 0 if name in ("a.jpg", "b.jpg") else ord(name[0]))
    _img(tmp_path / "d.jpg", ord("c"))  # c and d identical too
    df = _manifest(age=[np.nan] * 4, age_lo=[16.0, 31, 16, 16], age_hi=[30.0, 45, 30, 30])
    df["path"] = [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    out, rep = deduplicate(validate_manifest(df))
    assert rep["duplicate_groups"] == 2 and rep["conflicting_groups"] == 1 and len(out) == 1  # a/b disagree
    out, _ = deduplicate(validate_manifest(df), conflict="median")
    assert len(out) == 2 and (out["age_lo"].iat[0], out["age_hi"].iat[0]) == (16, 45)  # the hull of both


def test_folder_csv_with_age_groups(tmp_path):
    from agekit.data.adapters.folder import LabelFileError

    for i in range(3):
        _img(tmp_path / f"{i}.jpg", i)
    (tmp_path / "labels.csv").write_text("file,age,age_lo,age_hi\n0.jpg,33,,\n1.jpg,,16,30\n2.jpg,20,16,30\n")
    df = get_adapter("folder")(tmp_path)
    assert interval_rows(df).tolist() == [False, True, False]
    (tmp_path / "labels.csv").write_text("file,age_lo,age_hi\n0.jpg,16,30\n1.jpg,,\n")
    with pytest.raises(LabelFileError, match=r"labels.csv:3: no age and no age_lo/age_hi"):
        get_adapter("folder")(tmp_path)
    (tmp_path / "labels.csv").write_text("file,age_lo,age_hi\n0.jpg,30,16\n")
    with pytest.raises(LabelFileError, match=r"labels.csv:2: age_hi is below age_lo"):
        get_adapter("folder")(tmp_path)
    (tmp_path / "labels.csv").write_text("file,age_lo\n0.jpg,30\n")
    with pytest.raises(LabelFileError, match=r"missing column\(s\) age \(or age_lo and age_hi\)"):
        get_adapter("folder")(tmp_path)


# ------------------------------------------------------------------- the real PETA (when ../shared is present)
@pytest.fixture(scope="module")
def real_peta() -> Path:
    if not (PETA / "GRID" / "archive" / "Label.txt").is_file():
        pytest.skip("real PETA not present (../shared/data/PETA)")
    return PETA


def test_real_peta_counts_and_shipped_split(real_peta):
    df, report = prepare_manifest("peta", real_peta)  # default: the shipped peta_v1.csv
    assert report["split"] == "shipped split file peta_v1.csv" and report["leaks"] == 0
    people = df.groupby(["age_lo", "age_hi"])["subject_id"].nunique()
    assert people.tolist() == [23, 903, 785, 174, 26]  # the README's counts per age group
    assert df["subject_id"].nunique() == 1911 and len(df) == 2160
    assert df.groupby("subject_id")["split"].nunique().max() == 1  # split by person
    assert report["split_counts"] == {"train": 1725, "val": 217, "test": 218}
    # the shipped file is the subject split with seed 0: reproducible from the data
    again = subject_split(df.drop(columns="split"), (0.8, 0.1, 0.1), 0)
    assert (again.sort_values("path")["split"].to_numpy() == df.sort_values("path")["split"].to_numpy()).all()


def test_eval_of_a_face_model_on_body_crops_is_one_clear_line(tmp_path, random_model_file):
    root = make_peta(tmp_path / "PETA")
    df, _ = prepare_manifest("peta", root, split="subject", seed=0, fracs=(0.0, 0.0, 1.0))
    m = write_manifest(df, tmp_path / "peta.csv")
    res = runner.invoke(app, ["eval", str(random_model_file), "--data", str(m), "--out", str(tmp_path / "e"),
                              "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2
    assert "has person (body) crops only, no faces, and this model scores face crops" in res.output
