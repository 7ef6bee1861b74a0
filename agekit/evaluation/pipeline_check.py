"""Does the photo pipeline (detect -> align -> estimate) score like the ready-made crops?

Each test chip is pasted into a larger synthetic "photo" at a random scale, angle and position;
the Predictor must find and re-align it. Comparing the MAE on those photos with the MAE on the
original chips measures what detection + alignment cost (or a mismatch in crop geometry).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import cv2
import numpy as np
import pandas as pd

from ..data.imageio import load_rgb
from ..data.manifest import resolve_paths

__all__ = ["paste_chip", "make_photo", "crossing_faces_frames", "PipelineCheck", "run_pipeline_check"]


def paste_chip(canvas: np.ndarray, chip: np.ndarray, center: tuple[float, float], scale: float, angle: float) -> None:
    """Paste ``chip`` into ``canvas`` in place, rotated by ``angle`` degrees and scaled, centred at ``center``."""
    h, w = chip.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += np.array(center) - [w / 2, h / 2]
    size = (canvas.shape[1], canvas.shape[0])
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), m, size) > 127
    canvas[mask] = cv2.warpAffine(chip, m, size)[mask]


def make_photo(chip: np.ndarray, rng: np.random.Generator, size: int = 640) -> np.ndarray:
    """A size x size grey-gradient photo with ``chip`` pasted at scale 0.6-1.6, angle +-20 deg."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = np.linspace(rng.integers(60, 140), rng.integers(150, 230), size, dtype=np.uint8)[None, :, None]
    scale, angle = float(rng.uniform(0.6, 1.6)), float(rng.uniform(-20, 20))
    r = 100 * scale * 1.42
    cx, cy = rng.uniform(r, size - r, 2)
    paste_chip(canvas, chip, (float(cx), float(cy)), scale, angle)
    return canvas


def crossing_faces_frames(chips: list[np.ndarray], n_frames: int, size: tuple[int, int] = (640, 360),
                          scale: float = 0.6, offset: float = 0.2) -> list[np.ndarray]:
    """A video scene: face chips moving across a gradient background, for tracking checks and benchmarks.

    One chip walks left to right. Two chips walk towards each other along diagonals that cross in the middle
    of the frame (``offset``: their vertical separation at the crossing, as a fraction of the chip's pasted
    size; 0 = the front face hides the other completely), the second one passing in front.
    Returns ``n_frames`` HxWx3 uint8 RGB frames of ``size`` (width, height).
    """
    if not 1 <= len(chips) <= 2:
        raise ValueError(f"crossing_faces_frames takes one or two chips, got {len(chips)}")
    w, h = size
    bg = np.empty((h, w, 3), np.uint8)
    bg[:] = np.linspace(70, 200, w, dtype=np.uint8)[None, :, None]
    bg[..., 2] = np.linspace(180, 90, h, dtype=np.uint8)[:, None]
    side = 200 * scale
    margin = side * 0.75
    sep = side * offset / 2
    if len(chips) == 1:
        paths = [((margin, h / 2), (w - margin, h / 2))]
    else:
        paths = [((margin, h / 2 - side * 0.35 - sep), (w - margin, h / 2 + side * 0.35 - sep)),
                 ((w - margin, h / 2 - side * 0.35 + sep), (margin, h / 2 + side * 0.35 + sep))]
    frames = []
    for i in range(n_frames):
        a = i / max(n_frames - 1, 1)
        canvas = bg.copy()
        for chip, (p0, p1) in zip(chips, paths):
            center = (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]))
            paste_chip(canvas, chip, center, side / max(chip.shape[:2]), 0.0)
        frames.append(canvas)
    return frames


@dataclass
class PipelineCheck:
    n: int
    detected: int
    mae_crops: float
    mae_photos: float
    mae_crops_on_detected: float
    gender_acc_crops: float
    gender_acc_photos: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_pipeline_check(predictor, df: pd.DataFrame, n: int = 300, seed: int = 0) -> tuple[PipelineCheck, pd.DataFrame]:
    """Score ``n`` manifest rows both ways with the same ``predictor`` (same model, same TTA)."""
    rng = np.random.default_rng(seed)
    rows = df.iloc[np.sort(rng.choice(len(df), min(n, len(df)), replace=False))]
    paths = resolve_paths(rows)
    chips = [load_rgb(p) for p in paths]
    direct = predictor.estimate(chips)
    photos = [make_photo(c, rng) for c in chips]
    results = predictor.predict(photos)
    out = []
    for (_, row), p, (age_c, g_c, _), res in zip(rows.iterrows(), paths, direct, results):
        best = max(res.faces, key=lambda f: f.score) if res.faces else None
        out.append({"path": str(p), "age": row["age"], "gender": row["gender"], "pred_crop": age_c, "gender_crop": g_c,
                    "pred_photo": best.age if best else np.nan, "gender_photo": best.gender if best else None})
    t = pd.DataFrame(out)
    det = t["pred_photo"].notna()
    truth_g = t["gender"].map({0: "male", 1: "female"})
    check = PipelineCheck(
        n=len(t), detected=int(det.sum()),
        mae_crops=float((t["pred_crop"] - t["age"]).abs().mean()),
        mae_photos=float((t.loc[det, "pred_photo"] - t.loc[det, "age"]).abs().mean()),
        mae_crops_on_detected=float((t.loc[det, "pred_crop"] - t.loc[det, "age"]).abs().mean()),
        gender_acc_crops=float((t["gender_crop"] == truth_g).mean()),
        gender_acc_photos=float((t.loc[det, "gender_photo"] == truth_g[det]).mean()),
    )
    return check, t
