"""Object identities across frames, ByteTrack-style, with lifetimes in media time, not frames.

Two passes of greedy IoU association against each track's constant-velocity prediction: the
confident detections claim tracks first, then the weak ones (a person half behind a door) keep
the tracks they overlap well. A track gets its id after `confirm_hits` hits in a row, so a
one-frame false positive never spends an id, and ends after `lost_s` of observed media time
unseen. `coast` (a frame the deadline cut short) moves time on without counting anyone as
missing: a missed deadline never looks like everyone left. Ids count from 1 per instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgert.config.types import TrackerConfig
from edgert.decide import kernels

_SMOOTH = 0.5   # weight of the newest velocity measurement (an alpha filter on the velocity)


@dataclass(slots=True)
class _Track:
    box: list[float]                   # x1, y1, x2, y2 at `t`, as last measured
    t: float                           # media time of the last measurement
    vel: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])   # pixels per second
    hits: int = 1
    id: int = 0                        # 0 until confirmed
    missing_s: float = 0.0             # observed media time since the last hit

    def predict(self, t: float) -> list[float]:
        # Plain floats: four multiply-adds per track beat a numpy call each.
        dt, b, v = t - self.t, self.box, self.vel
        return [b[0] + v[0] * dt, b[1] + v[1] * dt, b[2] + v[2] * dt, b[3] + v[3] * dt]


class Tracker:
    """One source's tracks; `update` per decided frame, `coast` per frame the deadline cut."""

    def __init__(self, cfg: TrackerConfig, kernels_impl: str = "numba") -> None:
        self.cfg = cfg
        self.tracks: list[_Track] = []
        self._next_id = 1
        self._last_t: float | None = None
        self._match = (kernels.greedy_iou_match if kernels_impl == "numba"
                       else kernels.greedy_iou_match_np)
        self.ended: list[int] = []    # ids that ended in the last update

    def alive(self) -> set[int]:
        return {tr.id for tr in self.tracks if tr.id}

    def coast(self, t: float) -> None:
        """Predict only: nobody is missed, nobody ends, time moves on."""
        self.ended = []
        self._last_t = t if self._last_t is None else max(self._last_t, t)

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float) -> np.ndarray:
        """Track ids for each detection (-1: not tracked, or not yet confirmed)."""
        cfg = self.cfg
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        n = len(scores)
        ids = np.full(n, -1, np.int64)
        boxes = np.ascontiguousarray(boxes, np.float64)
        rows = boxes.tolist()
        tracks = self.tracks
        pairs = np.zeros((min(len(tracks), n) + 1, 2), np.int64)
        matched: list[tuple[int, int]] = []
        det_free = np.ones(n, np.bool_)
        if tracks and n:
            pred = np.array([tr.predict(t) for tr in tracks])
            trk_free = np.ones(len(tracks), np.bool_)
            high = scores >= cfg.high_score
            # Pass 1: confident detections against every track.
            det_free1 = high.copy()
            k = self._match(pred, boxes, cfg.match_iou, trk_free, det_free1, pairs)
            matched += [(int(pairs[i, 0]), int(pairs[i, 1])) for i in range(k)]
            # Pass 2: weak detections against tracks seen last frame and still unmatched.
            recent = np.array([tr.missing_s == 0.0 for tr in tracks], np.bool_)
            trk_free2 = trk_free & recent
            det_free2 = ~high
            k = self._match(pred, boxes, cfg.low_iou, trk_free2, det_free2, pairs)
            matched += [(int(pairs[i, 0]), int(pairs[i, 1])) for i in range(k)]
        hit = np.zeros(len(tracks), np.bool_)
        for ti, di in matched:
            tr = tracks[ti]
            hit[ti] = True
            det_free[di] = False
            new = rows[di]
            if t > tr.t:
                inv = 1.0 / (t - tr.t)
                measured = [(a - b) * inv for a, b in zip(new, tr.box)]
                tr.vel = measured if tr.hits == 1 else [
                    (1 - _SMOOTH) * v + _SMOOTH * m for v, m in zip(tr.vel, measured)]
            tr.box, tr.t = new, t
            tr.hits += 1
            tr.missing_s = 0.0
            if not tr.id and tr.hits >= cfg.confirm_hits:
                tr.id, self._next_id = self._next_id, self._next_id + 1
            if tr.id:
                ids[di] = tr.id
        kept, self.ended = [], []
        for ti, tr in enumerate(tracks):
            if hit[ti]:
                kept.append(tr)
                continue
            tr.missing_s += dt
            if tr.id and tr.missing_s < cfg.lost_s:
                kept.append(tr)
            elif tr.id:
                self.ended.append(tr.id)
        for di in np.flatnonzero(det_free & (scores >= cfg.high_score)).tolist():
            tr = _Track(rows[di], t)
            if cfg.confirm_hits <= 1:
                tr.id, self._next_id = self._next_id, self._next_id + 1
                ids[di] = tr.id
            kept.append(tr)
        self.tracks = kept
        return ids
