"""Stable face IDs across video frames, and temporal smoothing of each face's probabilities.

:class:`FaceTracker` matches the boxes of a new frame to the faces it already follows: first by
overlap (IoU), then, for boxes that moved too far to overlap, by centre distance relative to the
face size. A face not seen for ``max_missed`` consecutive updates is dropped; a box that matches no
followed face starts a new ID. IDs start at 1 and are never reused within one tracker.

:class:`ExponentialSmoother` keeps an exponential moving average per face ID so that a label does
not flicker from frame to frame. Pure numpy; no OpenCV state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..faces.detection import Box  # x, y, w, h in pixels


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes, in [0, 1]."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def _centre_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance between box centres divided by the larger side of ``a`` (the followed face)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    d = np.hypot((ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2))
    return float(d / max(aw, ah, 1))


@dataclass
class Track:
    """One followed face."""

    track_id: int
    box: Box
    hits: int = 1  # updates in which it was matched
    missed: int = 0  # consecutive updates without a match


class FaceTracker:
    """Greedy IoU-then-centroid tracker.

    ``iou_threshold``: minimum overlap for an IoU match. ``max_centre_distance``: a box whose centre is
    within this many face sizes of a followed face still matches it (fast motion, low frame rate).
    ``max_missed``: a face unseen for more consecutive updates than this is dropped.
    """

    def __init__(self, iou_threshold: float = 0.3, max_centre_distance: float = 0.6, max_missed: int = 10):
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = iou_threshold
        self.max_centre_distance = max_centre_distance
        self.max_missed = max_missed
        self._tracks: dict[int, Track] = {}
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """All faces still followed (seen now or missed for at most ``max_missed`` updates), by ID."""
        return [self._tracks[k] for k in sorted(self._tracks)]

    def update(self, boxes: Sequence[Sequence[int]]) -> list[int]:
        """Match this frame's boxes to followed faces. Returns one track ID per box, in the order of ``boxes``.

        Also ages the faces that were not matched and drops those missed for more than ``max_missed`` updates.
        """
        boxes = [tuple(int(v) for v in b) for b in boxes]
        ids: list[int | None] = [None] * len(boxes)
        free_tracks = set(self._tracks)

        # Pass 1: overlap. Pass 2: centre distance for what is left. Both greedy, best pair first.
        pairs = sorted(((iou(self._tracks[t].box, b), t, i) for t in free_tracks for i, b in enumerate(boxes)),
                       reverse=True)
        for score, t, i in pairs:
            if score < self.iou_threshold or score == 0.0:
                break
            if t in free_tracks and ids[i] is None:
                ids[i] = t
                free_tracks.discard(t)
        pairs = sorted((_centre_distance(self._tracks[t].box, b), t, i)
                       for t in free_tracks for i, b in enumerate(boxes) if ids[i] is None)
        for dist, t, i in pairs:
            if dist > self.max_centre_distance:
                break
            if t in free_tracks and ids[i] is None:
                ids[i] = t
                free_tracks.discard(t)

        for i, box in enumerate(boxes):
            t = ids[i]
            if t is None:
                t = ids[i] = self._next_id
                self._next_id += 1
                self._tracks[t] = Track(t, box)
            else:
                track = self._tracks[t]
                track.box, track.hits, track.missed = box, track.hits + 1, 0
        for t in free_tracks:
            self._tracks[t].missed += 1
            if self._tracks[t].missed > self.max_missed:
                del self._tracks[t]
        return [int(t) for t in ids]

    def reset(self) -> None:
        """Forget every followed face. IDs keep counting, so an ID still never refers to two faces."""
        self._tracks.clear()


class ExponentialSmoother:
    """Per-key exponential moving average of probability vectors.

    ``strength`` in [0, 1): the weight kept from the previous average at each update
    (``avg = strength * avg + (1 - strength) * new``). 0 disables smoothing (the new value is returned).
    After n updates with a constant input the remaining gap to it is ``strength ** n`` of the initial gap.
    The result of averaging probability vectors is again a probability vector.
    """

    def __init__(self, strength: float = 0.6):
        self.strength = strength
        self._state: dict[int, np.ndarray] = {}

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"smoothing strength must be in [0, 1) (0 = off), got {value}")
        self._strength = float(value)

    def update(self, key: int, value: np.ndarray) -> np.ndarray:
        """Fold ``value`` (C,) into the average of ``key`` and return the new average (a copy)."""
        value = np.asarray(value, dtype=np.float32)
        prev = self._state.get(key)
        avg = value.copy() if prev is None or self._strength == 0.0 else (
            self._strength * prev + (1.0 - self._strength) * value).astype(np.float32)
        self._state[key] = avg
        return avg.copy()

    def keep_only(self, keys) -> None:
        """Forget the averages of keys not in ``keys`` (faces the tracker dropped)."""
        keys = set(keys)
        for k in [k for k in self._state if k not in keys]:
            del self._state[k]

    def reset(self) -> None:
        self._state.clear()
