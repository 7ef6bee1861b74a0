"""People in a photo: faces and person boxes paired into persons, each with the crops a model can use.

Every person gets the inputs that exist for them:
- a face paired with a person box -> face chip + body chip (``"face+body"``);
- a face with no person around it -> face chip only (``"face"``);
- a person box with no face (turned away, hidden, too small) -> body chip only (``"body"``).
A body chip is dropped under the reference rules (:func:`agekit.data.crops.body_crop_problem`: under 50 px,
or less than 40% left after blacking out the other people in it); the person then keeps the face alone,
or, with no face either, stays in the results with a ``note`` and no estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.crops import CropError, CropSpec, body_crop, body_crop_problem
from .detectors import Detection
from .pairing import pair_faces
from .person_detectors import PersonDetection
from .results import PersonResult

__all__ = ["PersonUnit", "person_units", "kind_of"]

ALIGN = CropSpec("align")


@dataclass
class PersonUnit:
    """A person's result (model part still empty) and its model inputs: aligned face chip, body chip."""

    result: PersonResult
    face: np.ndarray | None
    body: np.ndarray | None


def kind_of(face: np.ndarray | None, body: np.ndarray | None) -> str | None:
    """``"face+body"``, ``"face"``, ``"body"``, or None when neither crop exists."""
    if face is not None and body is not None:
        return "face+body"
    return "face" if face is not None else ("body" if body is not None else None)


def _union(a: np.ndarray, b: np.ndarray, width: int, height: int) -> np.ndarray:
    box = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def _box(b: np.ndarray | None) -> tuple[float, float, float, float] | None:
    return None if b is None else tuple(round(float(v), 2) for v in b)  # type: ignore[return-value]


def person_units(rgb: np.ndarray, faces: list[Detection], people: list[PersonDetection],
                 body_size: int) -> list[PersonUnit]:
    """Pair ``faces`` with ``people`` and cut each person's crops from ``rgb``.

    A paired person's box is grown to hold their face (a detector's body box can stop at the chin on
    close-ups). Other people's boxes and faces are masked in each body crop, not the person's own face.
    """
    h, w = rgb.shape[:2]
    face_boxes = [np.asarray(d.box, np.float32) for d in faces]
    face_to_person, _ = pair_faces(np.array([p.box for p in people]).reshape(-1, 4),
                                   np.array(face_boxes).reshape(-1, 4))
    face_of = {p: f for f, p in enumerate(face_to_person) if p is not None}
    boxes = [(_union(p.box, face_boxes[face_of[i]], w, h) if i in face_of else np.asarray(p.box, np.float32))
             for i, p in enumerate(people)]
    # (person index or None, face index or None) for every person: detected people first, then lone faces
    members = [(i, face_of.get(i)) for i in range(len(people))] + [(None, f) for f, p in enumerate(face_to_person)
                                                                    if p is None]
    units = []
    for pi, fi in members:
        note = None
        face = None
        if fi is not None:
            try:
                face = ALIGN.crop(rgb, faces[fi].landmarks)
            except CropError as e:
                note = f"face not usable ({e})"
        body = None
        if pi is not None:
            others = [b for j, b in enumerate(boxes) if j != pi] + [b for j, b in enumerate(face_boxes) if j != fi]
            mask = np.array(others, np.float32).reshape(-1, 4)
            problem = body_crop_problem(rgb.shape, boxes[pi], mask)
            if problem is None:
                body = body_crop(rgb, boxes[pi], body_size, mask)
            else:
                note = problem
        score = people[pi].score if pi is not None else faces[fi].score  # type: ignore[index]
        kind = kind_of(face, body) or ("body" if pi is not None else "face")
        res = PersonResult(person_box=_box(boxes[pi]) if pi is not None else None,
                           face_box=_box(face_boxes[fi]) if fi is not None else None,
                           inputs=kind, score=round(float(score), 4), note=note)
        units.append(PersonUnit(res, face, body))
    return units
