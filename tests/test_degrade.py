"""Issue 8 §2: the old-photo degradation (agekit.data.degrade), its training switch (data.degrade_p) and
the `agekit eval --degrade old-photo` benchmark."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from agekit.config.train import load_config
from agekit.data import degrade as D
from agekit.data.degrade import OldPhotoDegrade, OldPhotoRecipe, degrade_indexed, jpeg_roundtrip

# every operation off: a recipe switches on exactly one
OFF = OldPhotoRecipe(colour_p=0.0, blur_p=0.0, rescale_p=0.0, noise_p=0.0, jpeg_p=0.0)


def _faces(b: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Image-like uint8 batch: smooth colour gradients plus fine detail (a checkerboard and noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([60 + 150 * xx, 40 + 120 * yy, 200 - 120 * xx * yy])  # (3,H,W)
    checker = ((torch.arange(size)[:, None] // 2 + torch.arange(size)[None] // 2) % 2).float() * 40 - 20
    x = base[None] + checker + torch.randn(b, 3, size, size, generator=g) * 10
    x = x * (0.7 + 0.6 * torch.rand(b, 1, 1, 1, generator=g))
    return x.clamp(0, 255).round().to(torch.uint8)


def _highfreq(x: torch.Tensor) -> torch.Tensor:
    """Mean squared Laplacian per image: the energy in fine detail."""
    xf = x.float().mean(1, keepdim=True)
    lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(xf, lap).pow(2).mean(dim=(1, 2, 3))


def test_greyscale_has_equal_channels():
    r = replace(OFF, colour_p=1.0)
    d = D._Draws(8, None)
    d.u[:, D._COLS.index("mode")] = 0.1  # mode 0: greyscale
    y = D._apply(_faces(), d, 1.0, r)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


def test_sepia_and_faded_change_colour_but_keep_a_valid_image():
    x = _faces()
    for mode in (0.5, 0.9):  # faded, sepia
        d = D._Draws(8, None)
        d.u[:, D._COLS.index("mode")] = mode
        y = D._apply(x, d, 1.0, replace(OFF, colour_p=1.0))
        assert y.dtype == torch.uint8 and y.shape == x.shape
        assert (y.float() - x.float()).abs().mean() > 5
        sat = lambda t: (t.float().max(1).values - t.float().min(1).values).mean()  # noqa: E731
        assert sat(y) < sat(x)  # both wash colour out
    d = D._Draws(8, None)
    d.u[:, D._COLS.index("mode")] = 0.9
    d.u[:, D._COLS.index("sep")] = 1.0  # full strength: the sepia matrix itself
    y = D._apply(x, d, 1.0, replace(OFF, colour_p=1.0)).float()
    assert (y[:, 0] >= y[:, 1]).all() and (y[:, 1] >= y[:, 2]).all()  # sepia: red over green over blue


def test_jpeg_q15_differs_and_is_a_valid_image():
    x = _faces()
    img = x[0].permute(1, 2, 0).contiguous().numpy()
    out = jpeg_roundtrip(img, 15)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 2
    r = replace(OFF, jpeg_p=1.0, jpeg_quality=(15, 15))
    y = OldPhotoDegrade(1.0, r)(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape and not torch.equal(x, y)
    np.testing.assert_array_equal(y[0].permute(1, 2, 0).numpy(), out)  # the batch path is the same codec
    q60 = OldPhotoDegrade(1.0, replace(OFF, jpeg_p=1.0, jpeg_quality=(60, 60)))(x)
    assert (q60.float() - x.float()).abs().mean() < (y.float() - x.float()).abs().mean()  # q15 is worse


def test_blur_lowers_high_frequency_energy():
    x = _faces(8, 128)  # sigmas are given at 128 px
    y = OldPhotoDegrade(1.0, replace(OFF, blur_p=1.0, blur_sigma=(1.0, 1.8)))(x)
    assert (_highfreq(y) < 0.5 * _highfreq(x)).all()
    assert (y.float().mean(dim=(1, 2, 3)) - x.float().mean(dim=(1, 2, 3))).abs().max() < 3  # brightness kept


def test_down_up_scale_loses_detail():
    x = _faces()
    y = OldPhotoDegrade(1.0, replace(OFF, rescale_p=1.0))(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert (_highfreq(y) < 0.5 * _highfreq(x)).all()
    # a lost checkerboard cannot be recovered: the 2-px pattern's amplitude collapses
    assert (y.float() - x.float()).abs().mean() > 5


def test_noise_adds_variation_sensor_and_film():
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    for ntype, mono in ((0.9, False), (0.1, True)):  # sensor (per channel), film grain (same in every channel)
        d = D._Draws(8, None)
        d.u[:, D._COLS.index("ntype")] = ntype
        y = D._apply(x, d, 1.0, replace(OFF, noise_p=1.0)).float()
        assert y.std() > 2
        assert torch.equal(y[:, 0], y[:, 1]) == mono


def test_parameters_differ_across_a_batch_and_p_selects_a_share():
    x = _faces(32)
    torch.manual_seed(0)
    y = OldPhotoDegrade(1.0)(x)
    diffs = (y.float() - x.float()).abs().mean(dim=(1, 2, 3))
    assert diffs.std() > 1  # not one set of parameters for the whole batch
    grey = (y[:, 0] == y[:, 1]).all(dim=(1, 2)) & (y[:, 1] == y[:, 2]).all(dim=(1, 2))
    assert 0 < int(grey.sum()) < 32
    torch.manual_seed(1)
    half = OldPhotoDegrade(0.5)(_faces(64))
    same = (half == _faces(64)).flatten(1).all(1)
    assert 10 < int(same.sum()) < 54  # about half pass through untouched
    assert torch.equal(OldPhotoDegrade(0.0)(x), x)


def test_benchmark_mode_is_deterministic_per_index_and_differs_across_images():
    x = _faces(6)
    a = degrade_indexed(x, np.arange(100, 106), seed=0)
    b = degrade_indexed(x, np.arange(100, 106), seed=0)
    assert torch.equal(a, b)
    assert torch.equal(x, _faces(6))  # input untouched
    # the copy of image 102 does not depend on the batch it is in
    c = degrade_indexed(x[2:4], np.array([102, 103]), seed=0)
    assert torch.equal(c, a[2:4])
    # the same picture under different indices (or seeds) is degraded differently
    same = x[:1].expand(6, -1, -1, -1).contiguous()
    d = degrade_indexed(same, np.arange(6), seed=0)
    assert len({bytes(t.numpy()) for t in d}) == 6
    assert not torch.equal(degrade_indexed(x, np.arange(100, 106), seed=1), a)


def test_degrade_makes_every_tensor_on_the_batch_device():
    """A CPU tensor mixed into a `meta` batch raises, as a CPU tensor mixed into a CUDA batch does."""
    x = torch.empty(16, 3, 32, 32, device="meta", dtype=torch.uint8)
    with pytest.raises(RuntimeError):  # the check itself works: mixing devices fails on meta
        _ = x.float() - torch.zeros(1, 3, 1, 1)
    for ntype in (0.1, 0.9):
        d = D._Draws(16, None)
        d.u[:, D._COLS.index("ntype")] = ntype
        d.u[:, D._COLS.index("apply")] = 0.0
        for name in ("colour", "blur", "rescale", "noise", "jpeg"):
            d.u[:, D._COLS.index(name)] = 0.0  # every operation on every image
        z = D._apply(x, d, 1.0, OldPhotoRecipe())
        assert z.device.type == "meta" and z.dtype == torch.uint8 and z.shape == x.shape
    z = OldPhotoDegrade(0.7)(x)
    assert z.device.type == "meta" and z.shape == x.shape


def _module(*overrides: str):
    from agekit.training.module import TaskModule

    return TaskModule(load_config(None, ["model.pretrained=false", *overrides]).model_dump())


def test_degrade_p_config_and_training_batches():
    assert load_config(None, []).data.degrade_p == 0.0
    from agekit.config.train import ConfigError

    with pytest.raises(ConfigError):
        load_config(None, ["data.degrade_p=1.5"])
    x = _faces(16, 32)
    batch = (x, torch.zeros(16), torch.zeros(16, dtype=torch.long), torch.ones(16))
    m = _module("data.augment=none")  # degrade_p=0: the batch is not touched at all
    assert m.degrade is None
    assert m.augment_batch(batch)[0] is x
    m = _module("data.augment=none", "data.degrade_p=1.0")
    assert isinstance(m.degrade, OldPhotoDegrade) and m.degrade.p == 1.0
    torch.manual_seed(0)
    y = m.augment_batch(batch)[0]
    assert y.shape == x.shape and not torch.equal(y, x)
    m = _module("data.degrade_p=0.3")  # with the default augmentation, degradation comes after it
    assert m.augment is not None and m.degrade.p == pytest.approx(0.3)


# -- the benchmark through the CLI ------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory) -> Path:
    """12 synthetic face chips (UTKFace file names, so the adapter labels them), half of them aged 0-12."""
    from agekit.data.adapters.utkface import utkface_manifest
    from agekit.data.manifest import write_manifest

    root = tmp_path_factory.mktemp("synth_utk")
    faces = _faces(12, 96, seed=3)
    ages = [2, 5, 8, 11, 12, 7, 25, 33, 41, 58, 67, 80]
    for i, (img, age) in enumerate(zip(faces, ages)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / f"{age}_{i % 2}_{i % 4}_2017010{i:02d}.jpg")
    df = utkface_manifest(root)
    df["split"] = pd.array(["test"] * len(df), dtype="string")
    return write_manifest(df, tmp_path_factory.mktemp("synth_manifest") / "synth.csv")


def test_eval_cli_degrade_prints_both_maes(random_model_file: Path, synthetic_manifest: Path, tmp_path):
    from agekit.cli.main import app

    out = tmp_path / "eval"
    args = ["eval", str(random_model_file), "--data", str(synthetic_manifest), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--n-boot", "50", "--degrade", "old-photo"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "clean MAE" in res.output and "degraded (old-photo) MAE" in res.output
    r = json.loads((out / "results.json").read_text())
    dg = r["degrade"]
    pred = pd.read_csv(out / "predictions.csv")
    assert {"pred_degraded", "p_female_degraded"} <= set(pred.columns) and len(pred) == 12
    assert dg["degraded"]["gender_acc"]["value"] == pytest.approx(
        ((pred["p_female_degraded"] > 0.5) == (pred["gender"] == 1)).mean())
    assert dg["clean"]["mae"]["value"] == pytest.approx(np.abs(pred["pred"] - pred["age"]).mean())
    assert dg["degraded"]["mae"]["value"] == pytest.approx(np.abs(pred["pred_degraded"] - pred["age"]).mean())
    assert r["metrics"]["mae"]["value"] == pytest.approx(dg["clean"]["mae"]["value"])  # main table stays clean
    kids = pred[pred["age"] <= 12]
    assert dg["degraded"]["bias_0_12"]["value"] == pytest.approx((kids["pred_degraded"] - kids["age"]).mean())
    assert dg["clean"]["bias_0_12"]["n"] == 6
    assert dg["mae_ratio"] == pytest.approx(dg["degraded"]["mae"]["value"] / dg["clean"]["mae"]["value"])
    assert dg["bar"] == {"mae_ratio_max": 1.2, "child_bias_abs_max": 2.0}
    assert "Degraded benchmark" in (out / "report.md").read_text()
    # reproducible: a second run gives the same degraded predictions
    out2 = tmp_path / "eval2"
    res2 = CliRunner().invoke(app, args[:5] + [str(out2)] + args[6:])
    assert res2.exit_code == 0, res2.output
    np.testing.assert_allclose(pd.read_csv(out2 / "predictions.csv")["pred_degraded"], pred["pred_degraded"])
    bad = CliRunner().invoke(app, args[:-1] + ["sepia-only"])
    assert bad.exit_code != 0 and "unknown degradation" in bad.output
