"""`agekit.Predictor`: sources, batching across images, flip TTA, timings, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

import agekit
from agekit.data.imageio import load_rgb
from agekit.inference import ModelFileError, summarize_timings
from agekit.inference.defaults import example_photo_path
from agekit.inference.predictor import STAGES
from agekit.inference.sources import SourceError, list_sources


@pytest.fixture(scope="module")
def predictor(random_model_file):
    return agekit.Predictor(random_model_file, threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_rgb(example_photo_path())


def _check_face(f, w=512, h=512):
    x0, y0, x1, y1 = f.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert len(f.landmarks) == 5 and all(len(p) == 2 for p in f.landmarks)
    assert not math.isnan(f.age) and f.gender in ("male", "female")


def _reference(predictor, rgb) -> tuple[float, str, float]:
    """What the model itself says on the predictor's aligned crop, with flip TTA: age, gender, P(gender)."""
    crops, _ = predictor.align(rgb, predictor.detect(rgb))
    out = predictor.runner.predict(predictor.preprocess(crops[:1]), tta_flip=True)
    p = float(out["p_female"][0])
    return float(out["age"][0]), ("female" if p > 0.5 else "male"), max(p, 1 - p)


def test_predict_numpy_array(predictor, astronaut):
    [res] = predictor.predict(astronaut)
    assert res.ok and res.status == "ok" and res.name == "array0" and res.path is None
    assert (res.width, res.height) == (512, 512) and len(res.faces) == 1
    _check_face(res.faces[0])
    age, gender, prob = _reference(predictor, astronaut)
    f = res.faces[0]
    assert f.age == pytest.approx(age, abs=1e-4) and f.gender == gender and f.gender_prob == pytest.approx(prob, abs=1e-6)
    assert set(res.timings) == set(STAGES) and all(v >= 0 for v in res.timings.values())
    assert res.image is None  # not kept unless asked
    assert res.faces[0].label.count(" ") == 2  # "34 F 0.97"


def test_predict_path_pil_and_list_agree(predictor, astronaut):
    path = example_photo_path()
    by_path = predictor.predict(path)[0]
    by_str = predictor.predict(str(path))[0]
    by_pil = predictor.predict(Image.open(path))[0]
    by_arr = predictor.predict(astronaut)[0]
    assert by_path.name == "astronaut.jpg" and by_path.path == str(path)
    ages = [r.faces[0].age for r in (by_path, by_str, by_pil, by_arr)]
    assert max(ages) - min(ages) < 1e-4
    batch = predictor.predict([path, astronaut, astronaut[..., 0]])  # mixed list, grayscale array too
    assert [r.name for r in batch] == ["astronaut.jpg", "array1", "array2"]
    assert abs(batch[0].faces[0].age - by_path.faces[0].age) < 1e-3
    assert len(batch[2].faces) == 1


def test_batching_across_images_gives_same_results(random_model_file, astronaut):
    images = [astronaut, astronaut[:, ::-1], astronaut[100:400, 50:450], np.zeros((64, 64, 3), np.uint8)]  # views too
    one = agekit.Predictor(random_model_file, batch_size=1, threads=1).predict(images)
    many = agekit.Predictor(random_model_file, batch_size=32, threads=1).predict(images)
    assert [len(r.faces) for r in one] == [len(r.faces) for r in many] == [1, 1, 1, 0]
    for a, b in zip(one, many):
        for fa, fb in zip(a.faces, b.faces):
            assert abs(fa.age - fb.age) < 1e-3 and fa.gender == fb.gender
    assert many[3].status == "no face detected"
    # a mirrored photo gives nearly the same age (flip TTA; the detector itself is not exactly mirror-symmetric)
    assert abs(many[0].faces[0].age - many[1].faces[0].age) < 2


def test_flip_tta_averages_crop_and_mirror(random_model_file, astronaut):
    p = agekit.Predictor(random_model_file, flip_tta=False, threads=1)
    crops, _ = p.align(astronaut, p.detect(astronaut))
    plain = p.estimate(crops)[0][0]
    mirrored = p.estimate([crops[0][:, ::-1].copy()])[0][0]
    p.flip_tta = True
    tta = p.estimate(crops)[0][0]
    assert abs(tta - (plain + mirrored) / 2) < 1e-3


def test_stream_yields_in_order_and_keeps_images(predictor, astronaut, tmp_path):
    for i in range(3):
        Image.fromarray(astronaut).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not listed: not an image extension")
    names = [r.name for r in predictor.stream(tmp_path, keep_images=True)]
    assert names == ["img0.png", "img1.png", "img2.png"]
    res = predictor.predict(str(tmp_path / "img*.png"), keep_images=True)
    assert len(res) == 3 and res[0].image.shape == (512, 512, 3)
    t = summarize_timings(res)
    assert set(t) == {*STAGES, "total"} and t["detect"] > 0 and t["total"] >= t["infer"]


def test_sources_errors(tmp_path):
    with pytest.raises(SourceError, match="input not found"):
        list_sources(tmp_path / "missing.jpg")
    with pytest.raises(SourceError, match="no images in folder"):
        list_sources(tmp_path)
    with pytest.raises(SourceError, match="no images match"):
        list_sources(str(tmp_path / "*.jpg"))
    with pytest.raises(SourceError, match="unsupported source type"):
        list_sources(42)
    items = list_sources([tmp_path / "missing.jpg"])  # inside a list: kept, reported when loaded
    assert len(items) == 1 and items[0].name == "missing.jpg"


def test_in_memory_arrays_of_all_kinds(predictor, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    as_float = astronaut.astype(np.float32) / 255.0
    as_16 = astronaut.astype(np.uint16) * 257
    res = predictor.predict([rgba, as_float, as_16, np.zeros((4, 4, 5), np.uint8), np.full((8, 8, 3), np.nan)])
    assert [len(r.faces) for r in res[:3]] == [1, 1, 1]
    assert "expected an HxW, HxWx3 or HxWx4" in res[3].error
    assert "NaN" in res[4].error


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match=r"model file not found: .*nothere\.safetensors$"):
        agekit.Predictor(tmp_path / "nothere.safetensors")
    with pytest.raises(ValueError, match="batch_size"):
        agekit.Predictor(tmp_path / "nothere.safetensors", batch_size=0)


def test_default_model_is_used_when_none_given(bundled_model_file, astronaut):
    p = agekit.Predictor(threads=1)
    assert p.model_path == bundled_model_file
    [res] = p.predict(astronaut)
    assert len(res.faces) == 1
    _check_face(res.faces[0])
    f = res.faces[0]  # the bundled model's known answer; gender_prob = P(reported gender)
    assert f.age == pytest.approx(29.91, abs=0.05) and f.gender == "male" and f.gender_prob == pytest.approx(0.851, abs=0.005)
    assert f.age_low == pytest.approx(14.5, abs=0.1) and f.age_high == pytest.approx(45.3, abs=0.1)  # age -/+ q*std
