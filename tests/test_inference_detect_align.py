"""Face detector and alignment on real images: the bundled astronaut photo and real UTKFace chips."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from agekit.evaluation.pipeline_check import paste_chip as paste
from agekit.data.imageio import load_rgb
from agekit.data.align import CHIP_SIZE, TEMPLATE, align_face, similarity_transform, transform_points
from agekit.inference.defaults import example_photo_path
from agekit.inference.detectors import DETECTORS, Detection, FaceDetector, RetinaFaceDetector, create_detector, register_detector


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return RetinaFaceDetector(threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_rgb(example_photo_path())


def _chips(root, n: int, seed: int) -> list[np.ndarray]:
    files = sorted(root.glob("*.jpg"))
    return [load_rgb(p) for p in np.random.default_rng(seed).choice(files, n, replace=False)]


def test_detector_finds_astronaut_face_with_plausible_landmarks(detector, astronaut):
    dets = detector.detect(astronaut)
    assert len(dets) == 1
    d = dets[0]
    assert d.score > 0.99 and d.box.dtype == np.float32 and d.landmarks.shape == (5, 2)
    x0, y0, x1, y1 = d.box
    assert 150 < x0 < x1 < 300 and 30 < y0 < y1 < 200  # the face is top-centre of the portrait
    le, re, nose, ml, mr = d.landmarks
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]  # left/right as seen in the image
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # eyes above nose above mouth
    assert np.all((d.landmarks >= [x0, y0]) & (d.landmarks <= [x1, y1]))
    assert 30 < re[0] - le[0] < 60  # eye distance of a ~95 px wide face


def test_detector_downscales_big_photos_and_maps_back(detector, astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    small = detector.detect(astronaut)[0]
    d = detector.detect(big)
    assert len(d) == 1
    np.testing.assert_allclose(d[0].landmarks / 4, small.landmarks, atol=3)
    np.testing.assert_allclose(d[0].box / 4, small.box, atol=4)


def test_detector_on_blank_and_tiny_images(detector):
    assert detector.detect(np.full((300, 400, 3), 127, np.uint8)) == []
    assert detector.detect(np.zeros((5, 7, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_detector_registry_and_plugins(astronaut):
    assert "retinaface" in DETECTORS
    with pytest.raises(ValueError, match="unknown face detector 'nope'.*retinaface"):
        create_detector("nope")

    @register_detector("fixed-test")
    class Fixed:
        def __init__(self, box=(0.0, 0.0, 10.0, 10.0)) -> None:
            self.box = np.array(box, np.float32)

        def detect(self, rgb):
            return [Detection(self.box, 1.0, TEMPLATE.copy())]

    try:
        det = create_detector("fixed-test", box=(1, 2, 3, 4))
        assert isinstance(det, FaceDetector) and det.detect(astronaut)[0].box[1] == 2
        assert create_detector(det) is det
        with pytest.raises(TypeError, match="detect"):
            create_detector(object())  # type: ignore[arg-type]
    finally:
        DETECTORS.pop("fixed-test")


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    angle, scale, shift = np.deg2rad(17.0), 2.3, np.array([40.0, -12.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = rng.uniform(0, 200, (5, 2))
    dst = src @ r.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-6)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-4)
    np.testing.assert_allclose(transform_points(m, src), dst, atol=1e-4)
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), dst)
    with pytest.raises(ValueError):
        similarity_transform(np.full((5, 2), np.nan), dst)


def test_align_astronaut_puts_landmarks_on_template(detector, astronaut):
    d = detector.detect(astronaut)[0]
    chip = align_face(astronaut, d.landmarks)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    again = detector.detect(cv2.copyMakeBorder(chip, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(127, 127, 127)))
    assert len(again) == 1
    # aligning the aligned chip again is (nearly) the identity: the face already sits on the template
    m = similarity_transform(again[0].landmarks - 100, TEMPLATE)
    scale, angle = np.sqrt(np.linalg.det(m[:, :2])), np.degrees(np.arctan2(m[1, 0], m[0, 0]))
    assert abs(scale - 1) < 0.06 and abs(angle) < 3
    assert np.abs(transform_points(m, [[100, 100]]) - 100).max() < 4
    # a big face takes the INTER_AREA path and gives the same chip as the small photo
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    chip_big = align_face(big, d.landmarks * 4)
    assert np.abs(chip_big.astype(float) - chip).mean() < 6


def test_template_is_a_plausible_chip_geometry():
    le, re, nose, ml, mr = TEMPLATE
    assert 70 < re[0] - le[0] < 90 and abs(le[1] - re[1]) < 3  # level eyes ~80 px apart in 200 px
    assert 90 < nose[0] < 105 and le[1] < nose[1] < ml[1]
    assert abs((le[0] + re[0]) / 2 - CHIP_SIZE / 2) < 5  # horizontally centred


def test_realigning_utkface_chips_reproduces_them(detector, utkface_root):
    """Detect + align the chip pasted at another scale/angle: the result must look like the chip, and
    aligning the result once more must barely move it (typically < 5% scale, < 3 deg, < 3 px)."""
    rng = np.random.default_rng(5)
    corrs, moves, missed = [], [], 0
    for chip in _chips(utkface_root, 12, seed=11):
        canvas = np.full((500, 500, 3), 127, np.uint8)
        paste(canvas, chip, (250, 250), rng.uniform(0.7, 1.8), rng.uniform(-20, 20))
        d = detector.detect(canvas)
        if not d:  # UTKFace has a few blurred non-faces (one in this sample)
            missed += 1
            continue
        out = align_face(canvas, d[0].landmarks)
        c = slice(30, 170)
        corrs.append(np.corrcoef(out[c, c].ravel().astype(float), chip[c, c].ravel().astype(float))[0, 1])
        padded = cv2.copyMakeBorder(out, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        m = similarity_transform(detector.detect(padded)[0].landmarks - 100, TEMPLATE)  # ~identity if aligned
        moves.append((abs(np.sqrt(np.linalg.det(m[:, :2])) - 1), abs(np.degrees(np.arctan2(m[1, 0], m[0, 0]))),
                      np.abs(transform_points(m, [[100, 100]]) - 100).max()))
    assert missed <= 2
    assert np.median(corrs) > 0.85, corrs
    scale_err, angle_err, shift = np.median(moves, axis=0)
    assert scale_err < 0.05 and angle_err < 3 and shift < 3, moves


def test_group_photo_with_three_pasted_chips_gives_three_faces(detector, utkface_root):
    chips = _chips(utkface_root, 3, seed=2)
    canvas = np.full((600, 900, 3), 0, np.uint8)
    canvas[:] = np.linspace(90, 200, 900, dtype=np.uint8)[None, :, None]
    for chip, (cx, cy, s, a) in zip(chips, [(170, 200, 1.0, 10), (460, 380, 0.7, -15), (720, 220, 1.4, 5)]):
        paste(canvas, chip, (cx, cy), s, a)
    dets = sorted(detector.detect(canvas), key=lambda d: d.box[0])
    assert len(dets) == 3
    for d, cx in zip(dets, (170, 460, 720)):
        assert abs((d.box[0] + d.box[2]) / 2 - cx) < 40
