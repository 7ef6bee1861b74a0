"""`agekit data prepare` and `agekit data stats` through Typer's CliRunner, on a folder it builds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.data.manifest import read_manifest
from agekit.data.stats import age_histogram, manifest_stats

runner = CliRunner()


@pytest.fixture
def folder(tmp_path) -> Path:
    """60 images of 12 subjects, ages 1-90, plus one byte-identical copy with a conflicting age."""
    root = tmp_path / "faces"
    root.mkdir()
    rows = []
    for i in range(60):
        pixels = np.random.default_rng(i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{1 + (i * 37) % 90},{'MF'[i % 2]},{['White', 'Asian'][i % 3 == 0]},p{i % 12}")
    shutil.copy(root / "00.png", root / "00_copy.png")
    rows.append("00_copy.png,50,M,White,p0")
    (root / "labels.csv").write_text("file,age,gender,race,subject_id\n" + "\n".join(rows) + "\n")
    return root


def prepare(*args: str):
    return runner.invoke(app, ["data", "prepare", *map(str, args)])


def test_prepare_writes_manifest_and_split_file_deterministically(folder, tmp_path):
    out1, out2, out3 = (tmp_path / f"m{i}.csv" for i in range(1, 4))
    r = prepare("folder", folder, "--out", out1, "--split", "random", "--seed", "7")
    assert r.exit_code == 0, r.output
    assert "1 groups of byte-identical images, 1 with conflicting labels" in " ".join(r.output.split())
    assert "no shipped" not in r.output and "random" in r.output
    df = read_manifest(out1)
    assert len(df) == 59 and df["split"].value_counts().to_dict() == {"train": 47, "val": 6, "test": 6}
    assert df["content_hash"].is_unique
    split_file = tmp_path / "m1.split.csv"
    sf = pd.read_csv(split_file)
    assert list(sf.columns) == ["file", "split"] and sf["file"].iat[0] == "01.png"  # relative to ROOT
    assert prepare("folder", folder, "--out", out2, "--split", "random", "--seed", "7").exit_code == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert split_file.read_bytes() == (tmp_path / "m2.split.csv").read_bytes()
    assert prepare("folder", folder, "--out", out3, "--split", "random", "--seed", "8").exit_code == 0
    assert split_file.read_bytes() != (tmp_path / "m3.split.csv").read_bytes()


def test_prepare_subject_kfold_none_and_default(folder, tmp_path):
    r = prepare("folder", folder, "--out", tmp_path / "s.csv", "--split", "subject", "--fracs", "0.5,0.25,0.25",
                "--split-out", tmp_path / "lists" / "subject.csv")
    assert r.exit_code == 0, r.output
    s = read_manifest(tmp_path / "s.csv")
    assert s.groupby("subject_id")["split"].nunique().max() == 1
    assert (tmp_path / "lists" / "subject.csv").is_file()
    r = prepare("folder", folder, "--out", tmp_path / "k.csv", "--split", "kfold", "--k", "3")
    assert r.exit_code == 0 and "3-fold by subject" in r.output
    assert set(read_manifest(tmp_path / "k.csv")["split"]) == {"0", "1", "2"}
    r = prepare("folder", folder, "--out", tmp_path / "n.csv", "--split", "none", "--no-dedup")
    assert r.exit_code == 0 and "not removed" in r.output
    assert len(read_manifest(tmp_path / "n.csv")) == 61 and not (tmp_path / "n.split.csv").exists()
    r = prepare("folder", folder, "--out", tmp_path / "d.csv")  # no shipped split: subject ids -> subject split
    assert r.exit_code == 0 and "no shipped split for folder: subject-exclusive" in " ".join(r.output.split())


@pytest.mark.parametrize("args, message", [
    (["--split", "bogus"], "unknown split mode"),
    (["--fracs", "0.8,0.3,0.1"], "--fracs must be"),
    (["--conflict", "vote"], "--conflict must be"),
])
def test_prepare_option_errors(folder, tmp_path, args, message):
    r = prepare("folder", folder, "--out", tmp_path / "m.csv", *args)
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {message}") and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "m.csv").exists()


def test_prepare_dataset_errors_are_one_line(folder, tmp_path):
    def one_line(r) -> str:
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output
        lines = r.stderr.splitlines()
        assert len(lines) == 1, r.stderr
        return lines[0]

    assert "unknown dataset format 'nosuch'" in one_line(prepare("nosuch", folder, "--out", tmp_path / "m.csv"))
    assert "FG-NET images folder not found" in one_line(prepare("fgnet", tmp_path / "absent", "--out", tmp_path / "m.csv"))
    (folder / "labels.csv").write_text("file,age\n00.png,abc\n")
    line = one_line(prepare("folder", folder, "--out", tmp_path / "m.csv"))
    assert "labels.csv:2: age 'abc' is not a number" in line  # printed whole: errors never wrap


def test_parquet_output_needs_pyarrow(folder, tmp_path, monkeypatch):
    import agekit.data.prepare as prep

    monkeypatch.setattr(prep, "parquet_engine", lambda: None)
    r = prepare("folder", folder, "--out", tmp_path / "m.parquet")
    assert r.exit_code == 2 and "pyarrow" in r.output and not (tmp_path / "m.parquet").exists()


def test_stats_cli_and_json(folder, tmp_path):
    assert prepare("folder", folder, "--out", tmp_path / "m.csv", "--split", "random").exit_code == 0
    r = runner.invoke(app, ["data", "stats", str(tmp_path / "m.csv"), "--json", str(tmp_path / "s.json"),
                            "--bin", "10", "--lds"])
    assert r.exit_code == 0, r.output
    for word in ("59 rows", "age histogram", "train", "female", "Asian", "LDS weights (train split"):
        assert word in r.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["rows"] == 59 and sum(b["count"] for b in s["age_histogram"]) == 59
    assert {r["group"]: r["count"] for r in s["splits"]} == {"train": 47, "val": 6, "test": 6}
    assert all(b["hi"] - b["lo"] == 10 for b in s["age_histogram"])
    from agekit.data.lds import lds_weights

    train_ages = read_manifest(tmp_path / "m.csv").query("split == 'train'")["age"].to_numpy()
    w = lds_weights(train_ages)
    assert s["lds"]["rows"] == 47 and s["lds"]["computed_on"] == "train split"
    assert (s["lds"]["min"], s["lds"]["max"]) == pytest.approx((float(w.min()), float(w.max())), abs=1e-4)  # 4 decimals
    r = runner.invoke(app, ["data", "stats", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "manifest not found" in r.output


def test_manifest_stats_groups_and_histogram():
    df = pd.DataFrame({"path": list("abcdef"), "age": [1, 4, 12, 30, 31, np.nan], "gender": [0, 1, 1, pd.NA, 0, 1],
                       "race": ["A", "A", "B", None, "B", "B"], "subject_id": None, "source": "t"})
    from agekit.data.manifest import new_manifest

    s = manifest_stats(new_manifest(df.to_dict("records"), source="t"), bin_width=5)
    assert s["rows"] == 6 and s["age"]["missing"] == 1 and s["age"]["min"] == 1 and s["age"]["max"] == 31
    assert [(b["lo"], b["count"]) for b in s["age_histogram"]] == [(0, 2), (5, 0), (10, 1), (15, 0), (20, 0),
                                                                    (25, 0), (30, 2)]
    g = {r["group"]: (r["count"], r["mean_age"]) for r in s["gender"]}
    assert g == {"female": (3, 8.0), "male": (2, 16.0), "unknown": (1, 30.0)}
    assert {r["group"]: r["count"] for r in s["race"]} == {"A": 2, "B": 3, "unknown": 1}
    assert s["splits"] == [] and "lds" not in s
    assert age_histogram(np.array([np.nan])) == []
