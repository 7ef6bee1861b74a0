"""Figures that show alignment reproduces UTKFace chip geometry (docs/alignment/*.png).

    python scripts/make_alignment_figures.py [--utkface ../shared/data/UTKFace] [--out docs/alignment] [--check N]

* ``group_aligned.png``: a synthetic "group photo" (the public-domain astronaut portrait plus two
  UTKFace chips pasted at other scales and angles) with detections drawn, then each face's aligned
  200x200 crop; for the pasted chips the original chip is shown under its re-aligned crop.
* ``--check N`` also writes ``realign_check.png`` (not for the docs: N chips, original above
  re-aligned from a random paste) and prints the mean correlation, to check by eye and by number.

UTKFace images are for non-commercial research only, so the committed figure uses just two chips.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from agekit.data.imageio import load_rgb
from agekit.evaluation.pipeline_check import paste_chip as paste
from agekit.data.align import TEMPLATE, align_face
from agekit.inference.defaults import example_photo_path
from agekit.inference.detectors import RetinaFaceDetector

REPO = Path(__file__).resolve().parents[1]


def draw_detections(img: np.ndarray, dets) -> np.ndarray:
    out = img.copy()
    for d in dets:
        x0, y0, x1, y1 = d.box.round().astype(int)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 220, 0), 2)
        for x, y in d.landmarks:
            cv2.circle(out, (int(x), int(y)), 3, (255, 0, 0), -1)
    return out


def with_template(chip: np.ndarray) -> np.ndarray:
    out = chip.copy()
    for x, y in TEMPLATE:
        cv2.circle(out, (int(x), int(y)), 3, (255, 255, 0), -1)
    return out


def group_figure(utk: Path, out: Path, det: RetinaFaceDetector) -> None:
    rng = np.random.default_rng(3)
    chips = [load_rgb(p) for p in rng.choice(sorted(utk.glob("*.jpg")), 2, replace=False)]
    canvas = np.full((560, 900, 3), 200, np.uint8)
    canvas[:, :] = np.linspace(170, 230, 900, dtype=np.uint8)[None, :, None]
    canvas[24:536, 0:512] = load_rgb(example_photo_path())
    paste(canvas, chips[0], (670, 170), 0.9, 15)
    paste(canvas, chips[1], (780, 420), 0.65, -20)
    dets = sorted(det.detect(canvas), key=lambda d: d.box[0])
    crops = [align_face(canvas, d.landmarks) for d in dets]
    tile = 200
    panel = np.full((2 * tile, tile * len(crops), 3), 255, np.uint8)
    for i, c in enumerate(crops):
        panel[:tile, i * tile:(i + 1) * tile] = with_template(c)
    for i, c in enumerate(chips):  # originals under the re-aligned pasted chips (faces 1 and 2, left to right)
        panel[tile:, (i + 1) * tile:(i + 2) * tile] = c
    for j, line in enumerate(["top: aligned 200x200", "crops, template points", "in yellow", "", "right: the UTKFace", "chips that were pasted"]):
        cv2.putText(panel, line, (10, tile + 40 + 24 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (60, 60, 60), 1, cv2.LINE_AA)
    photo = draw_detections(canvas, dets)
    photo = cv2.resize(photo, (round(photo.shape[1] * panel.shape[0] / photo.shape[0]), panel.shape[0]), interpolation=cv2.INTER_AREA)
    fig = np.hstack([photo, np.full((panel.shape[0], 8, 3), 255, np.uint8), panel])
    fig = cv2.resize(fig, (720, round(fig.shape[0] * 720 / fig.shape[1])), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out / "group_aligned.png"), cv2.cvtColor(fig, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"group_aligned.png: {len(dets)} faces, scores {[round(d.score, 3) for d in dets]}")


def check_figure(utk: Path, out: Path, det: RetinaFaceDetector, n: int) -> None:
    rng = np.random.default_rng(1)
    files = rng.choice(sorted(utk.glob("*.jpg")), n, replace=False)
    tops, bottoms, corrs = [], [], []
    for f in files:
        chip = load_rgb(f)
        canvas = np.full((600, 600, 3), 127, np.uint8)
        paste(canvas, chip, (300, 300), rng.uniform(0.6, 2.0), rng.uniform(-25, 25))
        dets = det.detect(canvas)
        if not dets:
            print(f"no face found in pasted {f.name}")
            continue
        a = align_face(canvas, dets[0].landmarks)
        c = slice(30, 170)
        corrs.append(np.corrcoef(a[c, c].ravel().astype(float), chip[c, c].ravel().astype(float))[0, 1])
        tops.append(chip)
        bottoms.append(a)
    rows = [np.vstack([np.hstack(tops[i:i + 8]), np.hstack(bottoms[i:i + 8])]) for i in range(0, len(tops) - len(tops) % 8, 8)]
    if rows:
        grid = np.vstack(rows)
        grid = cv2.resize(grid, (grid.shape[1] // 2, grid.shape[0] // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "realign_check.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"re-aligned {len(corrs)}/{n} pasted chips; correlation with the original (central 140 px): "
          f"mean {np.mean(corrs):.3f}, median {np.median(corrs):.3f}, min {np.min(corrs):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", type=Path, default=REPO.parent / "shared" / "data" / "UTKFace")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "alignment")
    ap.add_argument("--check", type=int, default=0, help="also write realign_check.png for N chips")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    det = RetinaFaceDetector()
    group_figure(args.utkface, args.out, det)
    if args.check:
        check_figure(args.utkface, args.out, det, args.check)


if __name__ == "__main__":
    main()
