"""Write prediction results as they arrive (JSON, JSON Lines or CSV), so a long run keeps what it did.

Every input appears in the output: images without a face or that could not be read get a record
with their ``status`` and no face fields. In person mode (``persons=True``) JSON records hold
``persons`` instead of ``faces``, and CSV has one row per person (``PERSON_CSV_COLUMNS``). Videos
(:class:`TrackWriter`) get one JSON object each: the video's facts and its tracks, each with its per-frame
observations.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import IO, Any

from .results import ImageResult, VideoResult

__all__ = ["result_record", "ResultWriter", "JsonWriter", "JsonlWriter", "CsvWriter", "open_writer", "WRITER_SUFFIXES",
           "CSV_COLUMNS", "PERSON_CSV_COLUMNS", "TrackWriter", "video_record", "TRACK_SUFFIXES"]

_LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
CSV_COLUMNS = ["image", "path", "status", "width", "height", "face", "x0", "y0", "x1", "y1", "score", "age", "age_low",
               "age_high", "gender", "gender_prob"] + [f"{n}_{c}" for n in _LANDMARKS for c in "xy"]
PERSON_CSV_COLUMNS = ["image", "path", "status", "width", "height", "person", "inputs", "person_x0", "person_y0",
                      "person_x1", "person_y1", "face_x0", "face_y0", "face_x1", "face_y1", "score", "age", "age_low",
                      "age_high", "gender", "gender_prob", "note"]


def _clean(v: Any) -> Any:
    """JSON has no NaN: faces that never reached the model get null."""
    return None if isinstance(v, float) and math.isnan(v) else v


class ResultWriter:
    """Base: opened on a path, ``write(result)`` per image (flushed), ``close()`` at the end."""

    def __init__(self, path: str | Path, persons: bool = False) -> None:
        self.persons = persons
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(self.path, "w", encoding="utf-8", newline="")
        self.count = 0

    def write(self, res: ImageResult) -> None:
        self._write(res)
        self.count += 1
        self._f.flush()

    def _write(self, res: ImageResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def result_record(res: ImageResult) -> dict[str, Any]:
    """The JSON object for one image, as every JSON output writes it (``--out x.json``, ``.jsonl``, the HTTP API)."""
    d = res.to_dict()
    key = "persons" if "persons" in d else "faces"
    d[key] = [{k: _clean(v) for k, v in f.items()} for f in d[key]]
    d["timings"] = {k: round(v, 6) for k, v in d["timings"].items()}
    return d


class JsonWriter(ResultWriter):
    """A JSON array with one object per image; valid JSON once closed (an interrupted run leaves all
    finished records, lacking only the closing bracket)."""

    def __init__(self, path: str | Path, persons: bool = False) -> None:
        super().__init__(path, persons)
        self._f.write("[")

    def _write(self, res: ImageResult) -> None:
        self._f.write(("," if self.count else "") + "\n  " + json.dumps(result_record(res)))

    def close(self) -> None:
        if not self._f.closed:
            self._f.write("\n]\n")
        super().close()


class JsonlWriter(ResultWriter):
    """One JSON object per line, per image."""

    def _write(self, res: ImageResult) -> None:
        self._f.write(json.dumps(result_record(res)) + "\n")


class CsvWriter(ResultWriter):
    """One row per face (``CSV_COLUMNS``), or per person (``PERSON_CSV_COLUMNS``); an image without any gets
    one row with its status only."""

    def __init__(self, path: str | Path, persons: bool = False) -> None:
        super().__init__(path, persons)
        self._w = csv.DictWriter(self._f, fieldnames=PERSON_CSV_COLUMNS if persons else CSV_COLUMNS)
        self._w.writeheader()

    def _write(self, res: ImageResult) -> None:
        base = {"image": res.name, "path": res.path or "", "status": res.status, "width": res.width, "height": res.height}
        if self.persons:
            self._write_persons(res, base)
            return
        if not res.faces:
            self._w.writerow(base)
            return
        for i, f in enumerate(res.faces):
            row = dict(base, face=i, score=f.score, age=_fmt(f.age), age_low=_fmt(f.age_low), age_high=_fmt(f.age_high),
                       gender=f.gender or "",
                       gender_prob="" if f.gender_prob is None else round(f.gender_prob, 4))
            row.update(zip(("x0", "y0", "x1", "y1"), f.box))
            for name, (x, y) in zip(_LANDMARKS, f.landmarks):
                row[f"{name}_x"], row[f"{name}_y"] = x, y
            self._w.writerow(row)


    def _write_persons(self, res: ImageResult, base: dict[str, Any]) -> None:
        if not res.persons:
            self._w.writerow(base)
            return
        for i, p in enumerate(res.persons):
            row = dict(base, person=i, inputs=p.inputs, score=p.score, age=_fmt(p.age), age_low=_fmt(p.age_low),
                       age_high=_fmt(p.age_high), gender=p.gender or "",
                       gender_prob="" if p.gender_prob is None else round(p.gender_prob, 4), note=p.note or "")
            for prefix, box in (("person", p.person_box), ("face", p.face_box)):
                if box is not None:
                    row.update(zip((f"{prefix}_x0", f"{prefix}_y0", f"{prefix}_x1", f"{prefix}_y1"), box))
            self._w.writerow(row)


def _fmt(age: float | None) -> Any:
    return "" if age is None or math.isnan(age) else round(age, 2)


WRITER_SUFFIXES = {".json": JsonWriter, ".jsonl": JsonlWriter, ".csv": CsvWriter}


def open_writer(path: str | Path, persons: bool = False) -> ResultWriter:
    """The writer for ``path``'s suffix (.json, .jsonl or .csv); ``persons``: person-mode records."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITER_SUFFIXES:
        raise ValueError(f"cannot write results to {path}: use a .json, .jsonl or .csv file name")
    return WRITER_SUFFIXES[suffix](path, persons)


# -- videos ---------------------------------------------------------------------------------------------------
TRACK_SUFFIXES = (".json", ".jsonl")


def _rounded(v: Any, nd: int = 3) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, nd)
    if isinstance(v, dict):
        return {k: _rounded(x, nd) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x, nd) for x in v]
    return v


def video_record(res: VideoResult) -> dict[str, Any]:
    """The JSON object for one video: its facts, ``status``, ``timings`` (ms per processed frame) and ``tracks``
    (``id``, ``first_frame``, ``last_frame``, ``num_frames``, ``age``, ``age_low``/``age_high``, ``interval``,
    ``gender``, ``gender_prob``, ``p_female``, ``effective_frames``, ``frames``: one record per observation
    with ``frame``, ``time``, ``box`` and that frame's own ``score``, ``age``, interval and ``p_female``)."""
    d = res.to_dict()
    d["timings"] = {f"{k}_ms": round(v * 1e3, 2) for k, v in d["timings"].items()}
    return _rounded(d)


class TrackWriter:
    """Video results to ``.json`` (one video: a JSON object) or ``.jsonl`` (one object per line, any number
    of videos), each written as soon as its video is done. Compact JSON: a long video has many frames."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in TRACK_SUFFIXES:
            raise ValueError(f"cannot write video results to {path}: use a .json or .jsonl file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lines = self.path.suffix.lower() == ".jsonl"
        self._f: IO[str] = open(self.path, "w", encoding="utf-8")
        self.count = 0

    def write(self, res: VideoResult) -> None:
        if self.count and not self._lines:
            raise ValueError(f"{self.path}: a .json file holds one video; use .jsonl for several")
        rec = video_record(res)
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "TrackWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
