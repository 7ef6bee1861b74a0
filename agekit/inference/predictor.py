"""Age and gender for every face in photos: the product's main job.

One image goes through clear stages, each a method you can call or time on its own:

    load (safe decode) -> detect (faces + 5 landmarks) -> align (UTKFace-chip geometry)
    -> preprocess (the training transform) -> infer (batched across images, flip TTA) -> postprocess

Face crops from consecutive images are pooled and run through the model ``batch_size`` at a
time, so a folder of one-face photos still uses full batches. A failure in one image (unreadable
file, no face) becomes that image's ``error``/status and the run goes on.

Person mode (``persons=True``) also detects people (:mod:`.person_detectors`), pairs faces with them
(:mod:`.pairing`) and gives one :class:`PersonResult` per person, made from the inputs that person has
(:mod:`.persons`). ``crops="face"``/``"person"`` skips detection: each input already is a face chip or a
person crop.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from ..data.imageio import ImageLoadError
from ..data.transforms import crops_to_batch
from ..data.crops import CropSpec, body_crop
from ..runtime import ModelFileError, load_runner
from ..runtime.runner import age_interval, bundled_person_model_path, model_age_range, reported_gender
from .backend import default_runner
from .detectors import Detection, FaceDetector, create_detector
from .person_detectors import PersonDetector, create_person_detector
from .persons import person_units
from .results import FaceResult, ImageResult, PersonResult
from .sources import SourceItem, list_sources

if TYPE_CHECKING:
    from .results import VideoResult

__all__ = ["Predictor", "STAGES", "summarize_timings", "ModelFileError", "NO_BODY_MODEL", "CROP_INPUTS"]

STAGES = ("load", "detect", "align", "preprocess", "infer", "postprocess")
ALIGN = CropSpec("align")
CHIP = CropSpec("chip")
CROP_INPUTS = ("face", "person")
NO_BODY_MODEL = "no model input for body (this model takes faces only)"
# one model input set per prediction: (where the result goes, face chip or None, body chip or None)
Unit = tuple["FaceResult | PersonResult", "np.ndarray | None", "np.ndarray | None"]


class Predictor:
    """Estimate age and gender for the faces in images.

    Args:
        model: agekit ``.safetensors``/``.ckpt`` (torch or onnx backend), ``.onnx`` or ``.tflite`` file;
            ``None`` uses the bundled model (person mode: the bundled face+body model when shipped).
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
        persons: person mode: one :class:`PersonResult` per person (face+body, face or body) in
            ``ImageResult.persons`` instead of one :class:`FaceResult` per face.
        crops: ``"face"``: each input is a face chip (used as it is, no detection); ``"person"``: each
            input is one person's crop (its body input; implies person mode, no detection).
        person_detector: a registered person detector name (``PERSON_DETECTORS``) or an object with
            ``detect(rgb) -> list[PersonDetection]``; used in person mode on photos.
    """

    def __init__(self, model: str | Path | None = None, backend: str | None = None, detector: str | FaceDetector = "retinaface",
                 device: str = "cpu", batch_size: int = 32, flip_tta: bool = True, min_score: float = 0.8,
                 threads: int | None = None, max_side: int | None = 640, cache_dir: str | Path | None = None,
                 detector_kwargs: dict[str, Any] | None = None, persons: bool = False, crops: str | None = None,
                 person_detector: str | PersonDetector = "mediapipe_pose",
                 person_detector_kwargs: dict[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crops is not None and crops not in CROP_INPUTS:
            raise ValueError(f"crops must be one of {', '.join(CROP_INPUTS)} (or None for photos), got {crops!r}")
        if model is None and (persons or crops == "person") and bundled_person_model_path().is_file():
            model = bundled_person_model_path()  # person mode: the shipped face+body model (bodies get an age too)
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
        self.crops = crops
        self.persons = persons or crops == "person"
        # a face+body (MiVOLO) model's runner takes pairs of crops (Runner.predict_pairs); face models one face
        self.takes_pairs = bool(getattr(self.runner, "takes_pairs", False))
        self.body_size = int(self.cfg.input_size[-1])
        self.person_detector = None
        if self.persons and crops is None:
            kw = {"threads": threads, **(person_detector_kwargs or {})} if isinstance(person_detector, str) else {}
            self.person_detector = create_person_detector(person_detector, **kw)

    def __repr__(self) -> str:
        return (f"Predictor(model={str(self.model_path)!r}, backend={self.backend_name!r}, model_name={self.cfg.name!r}, "
                f"detector={type(self.detector).__name__}, batch_size={self.batch_size}, flip_tta={self.flip_tta}, "
                f"persons={self.persons}, crops={self.crops!r})")

    # -- whole pipeline -------------------------------------------------------------------------
    def predict(self, source: Any, keep_images: bool = False) -> list[ImageResult]:
        """Results for every image in ``source`` (path, folder, glob, numpy RGB array, PIL image, or a list)."""
        return list(self.stream(source, keep_images=keep_images))

    def stream(self, source: Any, keep_images: bool = False) -> Iterator[ImageResult]:
        """Like :meth:`predict` but yields results in input order as soon as their batch is done."""
        return self.stream_items(list_sources(source), keep_images=keep_images)

    def stream_items(self, items: Iterable[SourceItem], keep_images: bool = False) -> Iterator[ImageResult]:
        """:meth:`stream` over inputs that are already listed; ``items`` is consumed lazily (video frames)."""
        pending: list[tuple[ImageResult, list[Unit]]] = []
        n_crops = 0
        max_pending = 8 if keep_images else 4 * self.batch_size  # decoded photos are big; crops are not
        for item in items:
            res, units = self.prepare_units(item, keep_image=keep_images)
            pending.append((res, units))
            n_crops += len(units)
            if n_crops >= self.batch_size or len(pending) >= max_pending:
                yield from self._finish(pending)
                pending, n_crops = [], 0
        yield from self._finish(pending)

    def predict_video(self, path: str | Path, stride: int = 1, draw: str | Path | None = None,
                      on_frame: Callable[[int, int], None] | None = None, **kwargs: Any) -> VideoResult:
        """Track the people in a video and give each track one age, interval and gender.

        ``stride``: look at every Nth frame; ``draw``: a folder for the annotated ``<name>.mp4``;
        ``on_frame(frames_done, tracks_so_far)`` is called after each processed frame (progress bars).
        Other keyword arguments go to :func:`agekit.inference.video.predict_video`. A video that cannot be
        used raises :class:`~agekit.inference.sources.VideoError` (one line); one with nobody in it gives a
        result with no tracks (``status`` "nobody found").
        """
        from .video import predict_video  # the video pipeline builds on this class, so it is imported late

        return predict_video(self, path, stride=stride, draw=draw, on_frame=on_frame, **kwargs)

    def prepare(self, item: SourceItem, keep_image: bool = False) -> tuple[ImageResult, list[np.ndarray]]:
        """Stages that work per image: load -> detect -> align. Returns the result so far and its face chips."""
        res, units = self.prepare_units(item, keep_image)
        return res, [face for _, face, _ in units if face is not None]

    def prepare_units(self, item: SourceItem, keep_image: bool = False) -> tuple[ImageResult, list[Unit]]:
        """load -> detect -> crop for one input: the result so far and its model inputs, one unit per face
        (or per person in person mode)."""
        res = ImageResult(name=item.name, path=str(item.path) if item.path is not None else None)
        if self.persons:
            res.persons = []
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
        if self.crops is not None:
            units = self._given_crop(rgb, res)
            res.timings.update(load=t1 - t0, detect=0.0, align=time.perf_counter() - t1)
            return res, units
        try:
            dets = self.detect(rgb)
            people = self.person_detector.detect(rgb) if self.person_detector is not None else []
        except Exception as e:  # noqa: BLE001
            res.error = f"{'person' if self.persons else 'face'} detection failed: {_one_line(e)}"
            dets, people = [], []
        t2 = time.perf_counter()
        if self.persons:
            found = person_units(rgb, dets, people, self.body_size)
            res.persons = [u.result for u in found]
            units: list[Unit] = [(u.result, u.face, u.body) for u in found]
        else:
            crops, kept = self.align(rgb, dets)
            res.faces = [_face_stub(d) for d in kept]
            units = [(f, c, None) for f, c in zip(res.faces, crops)]
        t3 = time.perf_counter()
        res.timings.update(load=t1 - t0, detect=t2 - t1, align=t3 - t2)
        return res, units

    def _given_crop(self, rgb: np.ndarray, res: ImageResult) -> list[Unit]:
        """The whole input as one face chip (``crops="face"``) or one person crop (``crops="person"``)."""
        whole = (0.0, 0.0, float(res.width), float(res.height))
        if self.crops == "face":
            chip = CHIP.crop(rgb)
            if self.persons:
                person = PersonResult(person_box=None, face_box=whole, inputs="face", score=1.0)
                res.persons = [person]
                return [(person, chip, None)]
            face = FaceResult(box=whole, landmarks=(), score=1.0, age=float("nan"), gender=None, gender_prob=None)
            res.faces = [face]
            return [(face, chip, None)]
        person = PersonResult(person_box=whole, face_box=None, inputs="body", score=1.0)
        res.persons = [person]
        return [(person, None, body_crop(rgb, whole, self.body_size))]

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
    def _finish(self, pending: list[tuple[ImageResult, list[Unit]]]) -> Iterator[ImageResult]:
        """Run the model on every unit of ``pending`` images, fill in their results, yield them in order."""
        units = [u for _, us in pending for u in us]
        spent = dict.fromkeys(("preprocess", "infer", "postprocess"), 0.0)
        groups: dict[str, list[int]] = {}
        for i, (target, face, body) in enumerate(units):
            if not self.takes_pairs:  # a face model: the face is all it can use
                if face is None:
                    if isinstance(target, PersonResult) and target.note is None:
                        target.note = NO_BODY_MODEL
                    continue
                groups.setdefault("face", []).append(i)
            elif face is not None or body is not None:
                groups.setdefault("face+body" if face is not None and body is not None else
                                  ("face" if face is not None else "body"), []).append(i)
        for kind, idx in groups.items():
            for k in range(0, len(idx), self.batch_size):
                chunk = idx[k:k + self.batch_size]
                t0 = time.perf_counter()
                if self.takes_pairs:  # a face+body model: crops as they are, a missing one as None
                    t1 = t0
                    out = self.runner.predict_pairs([units[i][1] for i in chunk], [units[i][2] for i in chunk],
                                                    tta_flip=self.flip_tta)
                    widened = age_interval(out, self.runner.calibration, model_age_range(self.cfg, self.runner.meta),
                                           inputs=kind)
                    if widened is not None:
                        out["age_low"], out["age_high"] = widened
                else:
                    x = self.preprocess([units[i][1] for i in chunk])
                    t1 = time.perf_counter()
                    out = self.infer(x)
                t2 = time.perf_counter()
                for i, (age, gender, prob), (lo, hi) in zip(chunk, self.postprocess(out, len(chunk)),
                                                            self.intervals(out, len(chunk))):
                    target = units[i][0]
                    target.age, target.gender, target.gender_prob = age, gender, prob
                    target.age_low, target.age_high = lo, hi
                    if isinstance(target, PersonResult):
                        target.inputs = kind
                spent["preprocess"] += t1 - t0
                spent["infer"] += t2 - t1
                spent["postprocess"] += time.perf_counter() - t2
        for res, us in pending:
            share = len(us) / len(units) if units else 0.0
            for stage, sec in spent.items():
                res.timings.setdefault(stage, 0.0)
                res.timings[stage] += sec * share
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
