"""UTKFace quirks on the real files (skipped without ../shared) and the shipped utkface_v1 split."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from agekit.data.adapters import get_adapter
from agekit.data.adapters.utkface import parse_utkface_name
from agekit.data.datasets import default_split_file
from agekit.data.dedup import content_hash, deduplicate
from agekit.data.splits import random_split

ODD_NAMES = {
    "24_0_1_20170116220224657 .jpg.chip.jpg": (24, 0, "Black"),   # space before .jpg
    "55_0_0_20170116232725357jpg.chip.jpg": (55, 0, "White"),     # no dot before jpg
    "39_1_20170116174525125.jpg.chip.jpg": (39, 1, None),         # race missing
    "61_1_20170109142408075.jpg.chip.jpg": (61, 1, None),
    "61_1_20170109150557335.jpg.chip.jpg": (61, 1, None),
}
SHIPPED = default_split_file("utkface")


def _labels(rec: dict) -> tuple:
    race = rec["race"]
    return int(rec["age"]), int(rec["gender"]), None if race is None or pd.isna(race) else race


def test_odd_names_parse():
    for name, want in ODD_NAMES.items():
        assert _labels(parse_utkface_name(name)) == want, name


@pytest.fixture(scope="module")
def utk(utkface_root) -> pd.DataFrame:
    return get_adapter("utkface")(utkface_root)


@pytest.fixture(scope="module")
def utk_hashed(utk) -> pd.DataFrame:
    """Every file hashed once (about 1 s warm, a few seconds cold, for 23,708 files)."""
    return utk.assign(content_hash=[content_hash(p) for p in utk["path"]])


@pytest.mark.realdata
def test_real_utkface_rows_and_odd_files(utk):
    assert len(utk) == 23_708 and utk.attrs["skipped"] == []
    by_name = dict(zip(utk["path"].map(lambda p: Path(p).name), utk.to_dict("records")))
    for name, want in ODD_NAMES.items():
        assert _labels(by_name[name]) == want, name
    assert (utk["age"] <= 5).sum() == 2_363 and (utk["age"] >= 90).sum() == 169


@pytest.mark.realdata
def test_real_utkface_duplicates(utk_hashed):
    sizes = utk_hashed.groupby("content_hash").size()
    assert len(sizes) == 23_318 and (sizes > 1).sum() == 375  # the README's counts
    dup = utk_hashed[utk_hashed["content_hash"].isin(sizes[sizes > 1].index)]
    assert (dup.groupby("content_hash")["age"].nunique() > 1).sum() == 205
    out, report = deduplicate(utk_hashed)
    assert report["duplicate_groups"] == 375 and report["conflicting_groups"] == 224  # age or gender differ
    assert report["rows_out"] == len(out) == 23_094 and out["content_hash"].is_unique


def test_shipped_split_is_80_10_10():
    sf = pd.read_csv(SHIPPED)
    assert list(sf.columns) == ["file", "split"] and sf["file"].is_unique and len(sf) == 23_094
    frac = sf["split"].value_counts(normalize=True)
    assert set(frac.index) == {"train", "val", "test"}
    assert frac["train"] == pytest.approx(0.8, abs=0.001)
    assert frac["val"] == pytest.approx(0.1, abs=0.001) and frac["test"] == pytest.approx(0.1, abs=0.001)


@pytest.mark.realdata
def test_shipped_split_has_no_duplicate_content(utk_hashed):
    out, _ = deduplicate(utk_hashed)
    sf = pd.read_csv(SHIPPED)
    files = out["path"].map(lambda p: Path(p).name)
    assert set(sf["file"]) == set(files)  # exactly the images left after dropping conflicting groups
    assert out.set_index(files).loc[sf["file"], "content_hash"].is_unique
    again = random_split(out, seed=0)  # and it is reproducible: dedup (drop) + random 80/10/10, seed 0
    assert dict(zip(files, again["split"])) == dict(zip(sf["file"], sf["split"]))


@pytest.mark.realdata
def test_prepare_random_seed0_reproduces_shipped_split_file(utkface_root, tmp_path):
    from agekit.data.prepare import prepare_manifest, write_prepared

    df, report = prepare_manifest("utkface", utkface_root, split="random", seed=0)
    assert report["rows_out"] == 23_094 and report["leaks"] == 0
    written = write_prepared(df, tmp_path / "utk.csv", utkface_root)
    assert Path(written["split_file"]).read_bytes() == SHIPPED.read_bytes()
