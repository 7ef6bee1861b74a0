"""Age and gender for every face in photos: the product's main job.

One image goes through clear stages, each a method you can call or time on its own:

    load (safe decode) -> detect (faces + 5 landmarks) -> align (UTKFace-chip geometry)
    -> preprocess (the training transform) -> infer (batched across images, flip TTA) -> postprocess

Face crops from consecutive images are pooled and run through the model ``batch_size`` at a
time, so a folder of one-face photos still uses full batches. A failure in one image (unreadable
file, no face) becomes that image's ``error``/status and the run goes on.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data.imageio import ImageLoadError
from ..data.transforms import crops_to_batch
from ..data.crops import CropSpec
from ..runtime import ModelFileError
from ..runtime.runner import reported_gender
from .backend import default_runner
from .detectors import Detection, FaceDetector, create_detector
from .results import FaceResult, ImageResult
from .sources import SourceItem, list_sources

__all__ = ["Predictor", "STAGES", "summarize_timings", "ModelFileError"]

STAGES = ("load", "detect", "align", "preprocess", "infer", "postprocess")
ALIGN = CropSpec("align")


class Predictor:
    """Estimate age and gender for the faces in images.

    Args:
        model: agekit ``.safetensors``/``.ckpt`` (torch or onnx backend), ``.onnx`` or ``.tflite`` file;
            ``None`` uses the bundled model.
        backend: a runnable format of ``agekit.export.formats.EXPORT_FORMATS`` (``"torch"``, ``"onnx"``
            = onnxruntime, ``"onnx-int8"``, ``"tflite"``, ``"tflite-int8"``). ``None``: exported files run
            as they are; agekit weights on CPU run in ONNX Runtime, exported once into ``cache_dir``
            (default: the user cache) and checked against PyTorch, else in PyTorch with a warning
            (:func:`agekit.inference.backend.default_runner`). ``"onnx"``/``"tflite"`` on a
            ``.safetensors`` model export it once into ``cache_dir`` too.
        detector: a registered detector name (see ``agekit.inference.detectors.DETECTORS``) or an
            object with ``detect(rgb) -> list[Detection]``.
        batch_size: face crops per model call (pooled across images).
        flip_tta: average the model's outputs on each crop and its mirror image, as evaluation does.
        min_score: faces with a lower detector score are ignored.
        threads: CPU threads for onnxruntime (detector, onnx backend) and torch; ``None`` = a
            sensible default (``AGEKIT_THREADS``/``OMP_NUM_THREADS`` or up to 4 cores).
        max_side: the detector sees the photo downscaled to this longest side (speed).
    """

    def __init__(self, model: str | Path | None = None, backend: str | None = None, detector: str | FaceDetector = "retinaface",
                 device: str = "cpu", batch_size: int = 32, flip_tta: bool = True, min_score: float = 0.8,
                 threads: int | None = None, max_side: int | None = 640, cache_dir: str | Path | None = None,
                 detector_kwargs: dict[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.runner = default_runner(model, backend, device=device, threads=threads, cache_dir=cache_dir)
        self.model_path = getattr(self.runner, "source_path", None) or self.runner.path
        self.backend_name = self.runner.backend
        self.cfg = self.runner.cfg
        if isinstance(detector, str):
            kw = dict(detector_kwargs or {})
            if detector == "retinaface":
                kw = {"score_threshold": min_score, "max_side": max_side, "threads": threads, **kw}
            detector = create_detector(detector, **kw)
        self.detector = create_detector(detector)
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        self.min_score = min_score

    def __repr__(self) -> str:
        return (f"Predictor(model={str(self.model_path)!r}, backend={self.backend_name!r}, model_name={self.cfg.name!r}, "
                f"detector={type(self.detector).__name__}, batch_size={self.batch_size}, flip_tta={self.flip_tta})")

    # -- whole pipeline -------------------------------------------------------------------------
    def predict(self, source: Any, keep_images: bool = False) -> list[ImageResult]:
        """Results for every image in ``source`` (path, folder, glob, numpy RGB array, PIL image, or a list)."""
        return list(self.stream(source, keep_images=keep_images))

    def stream(self, source: Any, keep_images: bool = False) -> Iterator[ImageResult]:
        """Like :meth:`predict` but yields results in input order as soon as their batch is done."""
        pending: list[tuple[ImageResult, list[np.ndarray]]] = []
        n_crops = 0
        max_pending = 8 if keep_images else 4 * self.batch_size  # decoded photos are big; crops are not
        for item in list_sources(source):
            res, crops = self.prepare(item, keep_image=keep_images)
            pending.append((res, crops))
            n_crops += len(crops)
            if n_crops >= self.batch_size or len(pending) >= max_pending:
                yield from self._finish(pending)
                pending, n_crops = [], 0
        yield from self._finish(pending)

    def prepare(self, item: SourceItem, keep_image: bool = False) -> tuple[ImageResult, list[np.ndarray]]:
        """Stages that work per image: load -> detect -> align. Returns the result so far and its chips."""
        res = ImageResult(name=item.name, path=str(item.path) if item.path is not None else None)
        t0 = time.perf_counter()
        try:
            rgb = item.load()
        except Exception as e:  # noqa: BLE001 - one bad input must not stop a folder run
            res.error = _one_line(e) if isinstance(e, ImageLoadError) else \
                f"{item.path or item.name}: cannot read image ({type(e).__name__}: {_one_line(e)})"
            res.timings["load"] = time.perf_counter() - t0
            return res, []
        res.height, res.width = rgb.shape[:2]
        if keep_image:
            res.image = rgb
        t1 = time.perf_counter()
        try:
            dets = self.detect(rgb)
        except Exception as e:  # noqa: BLE001
            res.error = f"face detection failed: {_one_line(e)}"
            dets = []
        t2 = time.perf_counter()
        crops, kept = self.align(rgb, dets)
        t3 = time.perf_counter()
        res.timings.update(load=t1 - t0, detect=t2 - t1, align=t3 - t2)
        res.faces = [_face_stub(d) for d in kept]
        return res, crops

    # -- stages ---------------------------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces with score >= ``min_score``, best first."""
        return [d for d in self.detector.detect(rgb) if d.score >= self.min_score]

    def align(self, rgb: np.ndarray, dets: list[Detection]) -> tuple[list[np.ndarray], list[Detection]]:
        """200x200 UTKFace-geometry chips for the detections whose landmarks allow alignment.

        The same :class:`CropSpec` crop as the training cache and ``agekit eval`` use for photos.
        """
        crops, kept = [], []
        for d in dets:
            try:
                crops.append(ALIGN.crop(rgb, d.landmarks))
            except ValueError:  # degenerate landmarks: skip this face, keep the others
                continue
            kept.append(d)
        return crops, kept

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        """The training transform (``crops_to_batch``): float32 NCHW normalised with the model's cfg."""
        return np.ascontiguousarray(crops_to_batch(crops, self.cfg).numpy(), dtype=np.float32)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The runner's outputs, averaged with the mirror image when ``flip_tta``; ``p_female`` = P(female)."""
        return self.runner.predict(x, tta_flip=self.flip_tta)

    def postprocess(self, out: dict[str, np.ndarray], n: int) -> list[tuple[float, str | None, float | None]]:
        """(age, gender, gender_prob) per crop, where gender_prob is the probability of the reported gender."""
        age = np.asarray(out["age"], dtype=np.float64)
        if "p_female" not in out:
            return [(float(a), None, None) for a in age[:n]]
        gender, prob = reported_gender(out["p_female"])
        return [(float(age[i]), str(gender[i]), float(prob[i])) for i in range(n)]

    @staticmethod
    def intervals(out: dict[str, np.ndarray], n: int) -> list[tuple[float | None, float | None]]:
        """(age_low, age_high) per crop from the runner's calibrated interval; (None, None) without one."""
        if "age_low" not in out or "age_high" not in out:
            return [(None, None)] * n
        lo, hi = np.asarray(out["age_low"], dtype=np.float64), np.asarray(out["age_high"], dtype=np.float64)
        return [(float(lo[i]), float(hi[i])) for i in range(n)]

    def estimate(self, crops: list[np.ndarray]) -> list[tuple[float, str | None, float | None]]:
        """preprocess -> infer -> postprocess for aligned chips, ``batch_size`` at a time."""
        rows: list[tuple[float, str | None, float | None]] = []
        for i in range(0, len(crops), self.batch_size):
            chunk = crops[i:i + self.batch_size]
            rows.extend(self.postprocess(self.infer(self.preprocess(chunk)), len(chunk)))
        return rows

    # -- batching across images -----------------------------------------------------------------
    def _finish(self, pending: list[tuple[ImageResult, list[np.ndarray]]]) -> Iterator[ImageResult]:
        """Run the model on every crop of ``pending`` images, fill in their faces, yield them in order."""
        crops = [c for _, cs in pending for c in cs]
        rows: list[tuple[float, str | None, float | None]] = []
        bounds: list[tuple[float | None, float | None]] = []
        spent = dict.fromkeys(("preprocess", "infer", "postprocess"), 0.0)
        for i in range(0, len(crops), self.batch_size):
            chunk = crops[i:i + self.batch_size]
            t0 = time.perf_counter()
            x = self.preprocess(chunk)
            t1 = time.perf_counter()
            out = self.infer(x)
            t2 = time.perf_counter()
            rows.extend(self.postprocess(out, len(chunk)))
            bounds.extend(self.intervals(out, len(chunk)))
            t3 = time.perf_counter()
            spent["preprocess"] += t1 - t0
            spent["infer"] += t2 - t1
            spent["postprocess"] += t3 - t2
        k = 0
        for res, cs in pending:
            share = len(cs) / len(crops) if crops else 0.0
            for stage, sec in spent.items():
                res.timings.setdefault(stage, 0.0)
                res.timings[stage] += sec * share
            for face, (age, gender, prob), (lo, hi) in zip(res.faces, rows[k:k + len(cs)], bounds[k:k + len(cs)]):
                face.age, face.gender, face.gender_prob = age, gender, prob
                face.age_low, face.age_high = lo, hi
            k += len(cs)
            yield res


def _face_stub(d: Detection) -> FaceResult:
    """A FaceResult with the detector's part filled in; the model's part comes after batching."""
    return FaceResult(box=tuple(round(float(v), 2) for v in d.box),  # type: ignore[arg-type]
                      landmarks=tuple((round(float(x), 2), round(float(y), 2)) for x, y in d.landmarks),
                      score=round(float(d.score), 4), age=float("nan"), gender=None, gender_prob=None)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return msg if msg else type(e).__name__


def summarize_timings(results: list[ImageResult]) -> dict[str, float]:
    """Mean seconds per image for each stage over the images that loaded, plus ``total``."""
    ok = [r for r in results if r.error is None]
    out = {s: float(np.mean([r.timings.get(s, 0.0) for r in ok])) if ok else 0.0 for s in STAGES}
    out["total"] = sum(out.values())
    return out
