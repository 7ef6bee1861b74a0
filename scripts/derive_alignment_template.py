"""Recompute agekit.data.align.TEMPLATE: where our detector puts 5 landmarks on UTKFace chips.

    python scripts/derive_alignment_template.py [--utkface ../shared/data/UTKFace] [--n 500] [--pad 100]

Each chip is padded with grey so the detector sees the face in context (as in a raw photo) rather
than touching the image border; the best detection's landmarks are shifted back into chip
coordinates and the per-coordinate median over all chips is the template, then corrected by the
inverse of the median chip->template similarity (a ~1.5% scale-up) so that the typical chip aligns
onto itself. It prints the constant to paste into align.py, plus how far individual chips sit from
it after a similarity fit.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from agekit.data.imageio import load_rgb
from agekit.data.align import similarity_transform, transform_points
from agekit.inference.detectors import RetinaFaceDetector

REPO = Path(__file__).resolve().parents[1]


CENTRE = np.array([100.0, 100.0])


def _median_similarity(fits: list[np.ndarray]) -> tuple[float, float, np.ndarray]:
    """Median scale, angle (deg) and shift of the chip centre over 2x3 similarity matrices."""
    scales = [np.sqrt(np.linalg.det(m[:, :2])) for m in fits]
    angles = [np.degrees(np.arctan2(m[1, 0], m[0, 0])) for m in fits]
    shifts = [transform_points(m, CENTRE)[0] - CENTRE for m in fits]
    return float(np.median(scales)), float(np.median(angles)), np.median(shifts, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", type=Path, default=REPO.parent / "shared" / "data" / "UTKFace")
    ap.add_argument("--n", type=int, default=500, help="number of chips to sample")
    ap.add_argument("--pad", type=int, default=100, help="grey border (px) around each chip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    files = sorted(p for p in args.utkface.iterdir() if p.name.endswith(".jpg"))
    files = np.random.default_rng(args.seed).choice(files, min(args.n, len(files)), replace=False)
    det = RetinaFaceDetector(score_threshold=0.5, max_side=None)
    pts = []
    for path in files:
        chip = load_rgb(path)
        if chip.shape[:2] != (200, 200):
            continue
        padded = cv2.copyMakeBorder(chip, *[args.pad] * 4, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        found = det.detect(padded)
        if found:
            pts.append(found[0].landmarks - args.pad)
    pts = np.stack(pts)
    median = np.median(pts, axis=0)
    template = median.copy()
    # The per-coordinate median is ~3% smaller than a typical chip's constellation (medians of
    # jittered points shrink, and least-squares similarity fits of noisy landmarks shrink too), so
    # aligning a chip to it would zoom out. Undo the median chip->template similarity, so that the
    # typical chip, detected and aligned by our pipeline, maps onto itself.
    for _ in range(3):
        fits = [similarity_transform(p, template) for p in pts]
        s, a, c = _median_similarity(fits)
        print(f"# median chip->template fit: scale {s:.4f}, angle {a:+.2f} deg, centre shift {np.round(c, 2).tolist()} px")
        m = np.array([[s * np.cos(np.radians(a)), -s * np.sin(np.radians(a))], [s * np.sin(np.radians(a)), s * np.cos(np.radians(a))]])
        template = (template - CENTRE - c) @ np.linalg.inv(m).T + CENTRE  # inverse of p -> m (p - C) + C + c
    resid = [np.abs(transform_points(similarity_transform(p, template), p) - template).mean() for p in pts]
    print(f"# {len(pts)}/{len(files)} chips with a face; pad={args.pad}; seed={args.seed}")
    print(f"# per-coordinate median before the correction: {np.round(median.astype(float), 2).tolist()}")
    print(f"# per-point spread (std, px): {[round(float(s), 2) for s in pts.std(axis=0).mean(axis=1)]}")
    print(f"# mean |residual| after similarity fit: {np.mean(resid):.2f} px (median chip {np.median(resid):.2f})")
    print("TEMPLATE = np.array([")
    for x, y in template:
        print(f"    [{x:.2f}, {y:.2f}],")
    print("], dtype=np.float32)")


if __name__ == "__main__":
    main()
