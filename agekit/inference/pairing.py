"""Which face belongs to which person: one-to-one matching of face boxes to person boxes.

As MiVOLO's reference implementation: the score of a (person, face) pair is the mean of their IoU and
of the share of the face inside the person box, and the pairs are chosen by an optimal (Hungarian)
assignment that maximises the total score. One rule is stricter than the reference (which accepts
any overlap): a face must lie mostly inside the person box (``min_face_inside``, default half of its
area), or a neighbour's face that grazes the box of someone seen from behind would be paired with them.
A face left unpaired is a face-only person; a person left unpaired is a body-only person.
"""
from __future__ import annotations

import numpy as np

from ..data.boxes import box_areas, box_intersections, box_iou

__all__ = ["max_weight_assignment", "pair_faces", "pair_scores", "MIN_FACE_INSIDE"]

MIN_FACE_INSIDE = 0.5


def max_weight_assignment(weight: np.ndarray) -> list[tuple[int, int]]:
    """Row/column pairs of a one-to-one assignment with the largest total weight (every row or every
    column assigned, whichever are fewer), like ``scipy.optimize.linear_sum_assignment(w, maximize=True)``.

    Hand-written because scipy is not an agekit dependency (the project dropped it, see
    ``data/lds.py``), and a photo holds few people: this is the textbook O(n^2 m) shortest augmenting
    path Hungarian algorithm with row/column potentials, exact, a millisecond for 50 x 50.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weight must be a 2-D matrix, got shape {w.shape}")
    if not w.size:
        return []
    transposed = w.shape[0] > w.shape[1]
    cost = -(w.T if transposed else w)  # maximise weight = minimise cost; rows <= columns from here
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=int)  # match[j] = 1-based row assigned to column j (0 = free)
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # augment along the alternating path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    pairs = [(int(match[j]) - 1, j - 1) for j in range(1, m + 1) if match[j]]
    pairs = [(c, r) for r, c in pairs] if transposed else pairs
    return sorted(pairs)


def pair_scores(person_boxes: np.ndarray, face_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((P, F) pair score = (IoU + face share inside) / 2, (P, F) face share inside the person box)."""
    inter = box_intersections(person_boxes, face_boxes)
    area_f = box_areas(face_boxes)[None, :]
    inside = np.where(area_f > 0, inter / np.maximum(area_f, 1e-12), 0.0)
    return (box_iou(person_boxes, face_boxes) + inside) / 2, inside


def pair_faces(person_boxes: np.ndarray, face_boxes: np.ndarray,
               min_face_inside: float = MIN_FACE_INSIDE) -> tuple[list[int | None], list[int]]:
    """(person index per face, or None for a face-only person; indices of persons without a face)."""
    person_boxes = np.asarray(person_boxes, dtype=np.float64).reshape(-1, 4)
    face_boxes = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4)
    face_to_person: list[int | None] = [None] * len(face_boxes)
    if len(person_boxes) and len(face_boxes):
        score, inside = pair_scores(person_boxes, face_boxes)
        for pi, fi in max_weight_assignment(score):
            if inside[pi, fi] >= min_face_inside and score[pi, fi] > 0:
                face_to_person[fi] = pi
    taken = {p for p in face_to_person if p is not None}
    return face_to_person, [i for i in range(len(person_boxes)) if i not in taken]
