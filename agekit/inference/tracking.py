"""Who is who across video frames: ByteTrack from Roboflow's ``trackers`` package over the predictor's detections.

``sv.ByteTrack`` was removed from ``supervision`` in 0.31; its maintained successor, by the same authors,
is ``trackers.ByteTrackTracker`` (Apache-2.0), used here unchanged: Kalman-predicted boxes, overlap matching
(Jonker-Volgenant) with the package's buffered IoU, a lost-track buffer measured in seconds. Frame times are passed to it, so a
``stride`` (or a variable frame rate) only lengthens the prediction step instead of breaking the motion model.

What is tracked is whatever :func:`observations` makes of one frame's :class:`ImageResult`: today the
faces; when prediction returns persons (a face and a body), that function is the one place to change.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .results import ImageResult, Observation

__all__ = ["observations", "Tracker"]


def _covered(box: tuple[float, ...], by: tuple[float, ...]) -> float:
    """Fraction of ``box``'s area inside ``by``."""
    w = min(box[2], by[2]) - max(box[0], by[0])
    h = min(box[3], by[3]) - max(box[1], by[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(w, 0.0) * max(h, 0.0) / area if area > 0 else 1.0


def observations(res: ImageResult, frame: int, time: float, max_covered: float = 0.5) -> list[Observation]:
    """The detections of one processed frame that tracks are made of (faces with an age).

    A face whose box lies more than ``max_covered`` inside the box of a more confident (or, at equal
    score, larger) face is left out: where two people cross, such a box is the hidden person's sliver
    or a blend of both faces, its crop is mostly the other person, and near a hidden track's predicted
    position it would take over that track. Leaving it out lets the tracker's lost-track buffer bridge
    the occlusion instead.
    """
    faces = sorted(res.faces, key=lambda f: (-f.score, -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    kept: list[tuple[float, ...]] = []
    out = []
    for f in faces:
        if f.age is None or not math.isfinite(f.age):
            continue  # the model never ran on it (should not happen for a finished frame)
        if any(_covered(f.box, k) > max_covered for k in kept):
            continue
        kept.append(f.box)
        p_female = None
        if f.gender is not None and f.gender_prob is not None:
            p_female = f.gender_prob if f.gender == "female" else 1.0 - f.gender_prob
        out.append(Observation(frame=frame, time=round(time, 4), box=tuple(float(v) for v in f.box), score=f.score,  # type: ignore[arg-type]
                               age=float(f.age), age_low=f.age_low, age_high=f.age_high, p_female=p_female))
    return out


class Tracker:
    """Track ids for a video's observations, one frame at a time (:meth:`update`).

    ByteTrack confirms a track on its second matched sighting and returns the first sighting untracked;
    that first observation is kept here (by the tracklet the tracker spawned from it) and given to the
    track once it is confirmed, so no frame of a confirmed track is lost. A detection seen only once
    (a flicker) never gets an id.

    Args:
        fps: the video's frame rate (frame times are in seconds).
        min_score: detections at or above it start and continue tracks (the predictor's own threshold).
        lost_seconds: how long a track that is not seen (occluded, turned away) is kept for re-association; 2 s
            (ByteTrack's default is 1 s for whole bodies; a face hides longer: a head turns, a slow walker passes).
        min_iou: overlap between a track's predicted box and a detection needed to match them.
        step_seconds: time between the frames looked at (``stride / fps``); sets the matching buffer.
        buffer: how far boxes are grown before their overlap is measured, as a fraction of their size on each side
            (Buffered IoU, Yang et al., WACV 2023, ``trackers.utils.iou.BIoU``); default ``0.3 + step_seconds``,
            at most 1. A face box is small next to how far a walking person moves: with plain IoU a face that
            moves more than its own width between looked-at frames (``--stride``) never matches its track
            (two faces crossing a 640 px frame in 2 s at stride 5 gave no track at all). 0.3 is the paper's
            first-pass value for consecutive frames; the buffer grows by one box-size per second of gap.
    """

    def __init__(self, fps: float, min_score: float = 0.8, lost_seconds: float = 2.0, min_iou: float = 0.1,
                 step_seconds: float | None = None, buffer: float | None = None) -> None:
        from trackers import ByteTrackTracker  # heavy (supervision, scipy): only when a video is tracked
        from trackers.utils.iou import BIoU

        step = 1.0 / fps if step_seconds is None else step_seconds
        self.buffer = min(0.3 + step, 1.0) if buffer is None else buffer
        self._bt = ByteTrackTracker(lost_track_buffer=max(0, round(lost_seconds * 30)),  # its unit: 30 fps frames
                                    frame_rate=fps, track_activation_threshold=min_score,
                                    minimum_consecutive_frames=2, minimum_iou_threshold=min_iou,
                                    high_conf_det_threshold=min_score, iou=BIoU(self.buffer))
        self._spawned: dict[int, tuple[Any, Observation]] = {}  # id(tracklet) -> (tracklet, its first observation)
        self._seen: set[int] = set()

    def update(self, obs: list[Observation], time: float) -> list[tuple[int, Observation]]:
        """(track id, observation) for this frame's tracked observations; a newly confirmed track also
        gets its first sighting (from an earlier frame) ahead of this frame's. Ids count from 1 in the
        order tracks are confirmed."""
        import supervision as sv

        if obs:
            dets = sv.Detections(xyxy=np.array([o.box for o in obs], dtype=np.float32),
                                 confidence=np.array([o.score for o in obs], dtype=np.float32),
                                 data={"index": np.arange(len(obs))})
        else:
            dets = sv.Detections.empty()
            dets.data = {"index": np.empty(0, dtype=int)}
        kept = list(self._bt.tracks)  # held, so no tracklet freed during the update can lend its id() to a new one
        before = {id(t) for t in kept}
        out = self._bt.update(dets, timestamp=time)
        del kept
        live = {id(t): t for t in self._bt.tracks}
        self._spawned = {k: v for k, v in self._spawned.items() if k in live}
        untracked = [int(i) for i, tid in zip(out.data.get("index", []), out.tracker_id) if tid < 0]
        for t in self._bt.tracks:  # tracklets born in this frame start exactly at their detection's box
            if id(t) in before or t.tracker_id >= 0 or not untracked:
                continue
            box = np.asarray(t.get_state_bbox(), dtype=np.float64)
            j = min(untracked, key=lambda i: float(np.abs(np.asarray(obs[i].box) - box).sum()))
            self._spawned[id(t)] = (t, obs[j])
        result: list[tuple[int, Observation]] = []
        for i, tid in zip(out.data.get("index", []), out.tracker_id):
            tid = int(tid)
            if tid < 0:
                continue
            if tid not in self._seen:
                self._seen.add(tid)
                key = next((k for k, (t, _) in self._spawned.items() if t.tracker_id == tid), None)
                if key is not None:
                    result.append((tid + 1, self._spawned.pop(key)[1]))
            result.append((tid + 1, obs[int(i)]))
        return result
