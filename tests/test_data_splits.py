"""Dedup before split, deterministic random/subject/k-fold splits, split files, LDS weights."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agekit.data.dedup import deduplicate
from agekit.data.lds import lds_weights
from agekit.data.manifest import new_manifest
from agekit.data.prepare import prepare_manifest, split_leaks
from agekit.data.splits import apply_split_file, kfold_split, random_split, subject_split, write_split_file


def make_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def dup_folder(tmp_path) -> Path:
    """40 distinct images (10 subjects) plus byte-identical copies: 2 agreeing groups, 2 conflicting."""
    rows = []
    for i in range(40):
        make_image(tmp_path / f"img{i:02d}.jpg", i)
        rows.append(f"img{i:02d}.jpg,{20 + i},{'MF'[i % 2]},s{i % 10}")
    copies = [("img00.jpg", "copy00.jpg", 20, "M"),   # same labels: plain duplicate
              ("img01.jpg", "copy01.jpg", 21, "F"),
              ("img01.jpg", "copy01b.jpg", 21, "F"),  # a group of three
              ("img02.jpg", "copy02.jpg", 55, "M"),   # age disagrees (22 vs 55)
              ("img03.jpg", "copy03.jpg", 23, "M")]   # gender disagrees (F vs M)
    for src, dst, age, g in copies:
        shutil.copy(tmp_path / src, tmp_path / dst)
        rows.append(f"{dst},{age},{g},s{int(src[3:5]) % 10}")
    (tmp_path / "labels.csv").write_text("file,age,gender,subject_id\n" + "\n".join(rows) + "\n")
    return tmp_path


def names(df: pd.DataFrame) -> set[str]:
    return set(df["path"].map(lambda p: Path(p).name))


def test_dedup_before_split_drop_policy(dup_folder):
    df, rep = prepare_manifest("folder", dup_folder, split="random", seed=0)
    assert rep["dedup"] == {"rows_in": 45, "duplicate_groups": 4, "conflicting_groups": 2,
                            "conflict_policy": "drop", "rows_out": 38}
    assert not names(df) & {"img02.jpg", "copy02.jpg", "img03.jpg", "copy03.jpg"}  # whole groups gone
    assert df["content_hash"].is_unique and rep["leaks"] == 0
    assert df.groupby("content_hash")["split"].nunique().max() == 1


def test_dedup_median_policy(dup_folder):
    df, rep = prepare_manifest("folder", dup_folder, split="none", conflict="median")
    assert rep["dedup"]["rows_out"] == 40 and "split" not in df.columns
    kept = df.set_index(df["path"].map(lambda p: Path(p).name))
    assert kept.loc["img02.jpg", "age"] == pytest.approx((22 + 55) / 2)
    assert df["content_hash"].is_unique


def test_without_dedup_copies_can_straddle_splits(dup_folder):
    """Why dedup comes first: split row by row, a copy and its original may be in different splits."""
    leaks = []
    for seed in range(10):
        df, rep = prepare_manifest("folder", dup_folder, split="random", seed=seed, dedup=False)
        assert "dedup" not in rep and len(df) == 45
        df["content_hash"] = df["path"].map(lambda p: Path(p).read_bytes())
        leaks.append(split_leaks(df))
    assert max(leaks) > 0


def test_dedup_keeps_several_faces_of_one_image_and_splits_them_together(tmp_path):
    img = make_image(tmp_path / "group.jpg", 0)
    copy = tmp_path / "group_copy.jpg"
    shutil.copy(img, copy)
    rows = [{"path": str(img), "age": 30, "face_x0": 0, "face_y0": 0, "face_x1": 5, "face_y1": 5},
            {"path": str(img), "age": 60, "face_x0": 8, "face_y0": 8, "face_x1": 15, "face_y1": 15},
            {"path": str(copy), "age": 30, "face_x0": 0, "face_y0": 0, "face_x1": 5, "face_y1": 5}]
    rows += [{"path": str(make_image(tmp_path / f"o{i}.jpg", i + 1)), "age": 20 + i} for i in range(20)]
    df, rep = deduplicate(new_manifest(rows, source="t"))
    assert rep["duplicate_groups"] == 1 and rep["conflicting_groups"] == 0 and len(df) == 22
    assert sorted(df.loc[df["path"] == str(img), "age"]) == [30, 60]  # two faces, not two copies
    for seed in range(5):
        s = random_split(df, seed=seed)
        assert s.loc[s["path"] == str(img), "split"].nunique() == 1
        k = kfold_split(df, k=4, seed=seed)
        assert k.loc[k["path"] == str(img), "split"].nunique() == 1


def toy(n: int = 100, subjects: int = 17) -> pd.DataFrame:
    return new_manifest([{"path": f"/d/{i:03d}.jpg", "age": i % 70, "subject_id": f"s{i % subjects}"}
                         for i in range(n)], source="toy")


def test_random_split_deterministic_and_proportional():
    df = toy(200)
    a, b, c = random_split(df, seed=3), random_split(df, seed=3), random_split(df, seed=4)
    assert a["split"].tolist() == b["split"].tolist() and a["split"].tolist() != c["split"].tolist()
    assert a["split"].value_counts().to_dict() == {"train": 160, "val": 20, "test": 20}
    odd = random_split(toy(3), fracs=(0.5, 0.5, 0.0))  # rounding 1.5 up twice must not overrun
    assert sorted(odd["split"]) == ["train", "train", "val"]


def test_subject_split_keeps_each_subject_in_one_split():
    df = toy(300, subjects=30)
    a = subject_split(df, seed=1)
    assert a.groupby("subject_id")["split"].nunique().max() == 1
    assert a.groupby("split")["subject_id"].nunique().to_dict() == {"test": 3, "train": 24, "val": 3}
    assert a["split"].tolist() == subject_split(df, seed=1)["split"].tolist()
    assert a["split"].tolist() != subject_split(df, seed=2)["split"].tolist()
    with pytest.raises(ValueError, match="subject_id"):
        subject_split(df.assign(subject_id=pd.NA), seed=0)


@pytest.mark.parametrize("by_subject", [False, True])
def test_kfold_partitions(by_subject):
    df = toy(103, subjects=20)
    f = kfold_split(df, k=5, seed=0, by_subject=by_subject)
    assert set(f["split"]) == {"0", "1", "2", "3", "4"} and f["split"].notna().all()  # every row in one fold
    unit = f["subject_id"] if by_subject else f["path"]
    sizes = f.groupby("split")[unit.name].nunique()
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == unit.nunique()
    if by_subject:
        assert f.groupby("subject_id")["split"].nunique().max() == 1
    assert f["split"].tolist() == kfold_split(df, k=5, seed=0, by_subject=by_subject)["split"].tolist()


def test_split_file_round_trip_with_subfolders(tmp_path):
    rows = [{"path": str(tmp_path / d / "001.jpg"), "age": 30} for d in ("a", "b")]
    rows.append({"path": "/elsewhere/x.jpg", "age": 40})
    df = new_manifest(rows, source="t").assign(split=["train", "test", "val"])
    sf = write_split_file(df, tmp_path / "split.csv", root=tmp_path)
    listed = pd.read_csv(sf)
    assert listed["file"].tolist() == ["/elsewhere/x.jpg", "a/001.jpg", "b/001.jpg"]  # outside root: absolute
    back = apply_split_file(df.drop(columns="split"), sf)
    assert back["split"].tolist() == ["train", "test", "val"]  # same name in two folders stays apart


def test_lds_weights_favour_rare_ages():
    ages = np.array([25] * 200 + [26] * 180 + [5] * 10 + [90] * 3, dtype=float)
    w = lds_weights(ages)
    assert w.mean() == pytest.approx(1.0, abs=1e-5)
    assert w[ages == 90].min() > w[ages == 5].max() > w[ages == 25].max()
    assert np.allclose(w[ages == 25], w[ages == 25][0])


def test_lds_reweighting_sqrt_inv_is_gentler_than_inverse():
    ages = np.array([25] * 900 + [90] * 1, dtype=float)
    sq, inv = lds_weights(ages, reweight="sqrt_inv"), lds_weights(ages, reweight="inverse")
    assert sq.mean() == pytest.approx(1.0, abs=1e-5) and inv.mean() == pytest.approx(1.0, abs=1e-5)
    ratio = lambda w: w[ages == 90][0] / w[ages == 25][0]  # noqa: E731
    assert 1 < ratio(sq) < ratio(inv)  # inverse clips counts to [5, 1000]; sqrt_inv takes square roots
    with pytest.raises(ValueError, match="reweighting"):
        lds_weights(ages, reweight="log")
