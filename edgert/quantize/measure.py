"""Faithfulness (detections kept, both directions) and speed (interleaved medians) of a candidate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edgert.frame import Detections

MATCH_IOU = 0.5
NEAR = 0.1   # a lost detection that scored below conf + NEAR in FP32 was marginal anyway


@dataclass(frozen=True, slots=True)
class Agreement:
    """How far a candidate's results match FP32's on the same frames.

    Detectors: `kept` = matched / FP32 detections (what INT8 kept), `confirmed` = matched /
    candidate detections (what FP32 also has); a match is the same label at IoU ≥ 0.5,
    one-to-one. Classifiers: both are the top-1 agreement over frames.
    """

    kind: str          # "detections" | "top1"
    frames: int
    reference: int     # FP32 detections (top1: frames)
    candidate: int     # candidate detections (top1: frames)
    matched: int
    lost_marginal: int = 0   # lost FP32 detections that scored within NEAR of the threshold

    @property
    def measurable(self) -> bool:
        """False when FP32 found nothing on the frames: then agreement proves nothing."""
        return self.reference > 0

    @property
    def kept(self) -> float:
        return self.matched / self.reference if self.reference else 1.0

    @property
    def confirmed(self) -> float:
        return self.matched / self.candidate if self.candidate else 1.0

    @property
    def worst(self) -> float:
        return min(self.kept, self.confirmed)

    def meets(self, threshold: float) -> bool:
        return self.measurable and self.worst >= threshold


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def matches(ref: Detections, cand: Detections, iou: float = MATCH_IOU) -> np.ndarray:
    """Which FP32 detections the candidate has: greedy one-to-one, by descending FP32 score,
    same class, IoU ≥ `iou`."""
    used = np.zeros(len(cand), bool)
    found = np.zeros(len(ref), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        same = (cand.class_ids == ref.class_ids[i]) & ~used
        if not same.any():
            continue
        overlaps = np.where(same, _iou(ref.boxes[i], cand.boxes), -1.0)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou:
            used[j] = found[i] = True
    return found


def match_count(ref: Detections, cand: Detections, iou: float = MATCH_IOU) -> int:
    return int(matches(ref, cand, iou).sum())


def agreement(ref: Sequence[Detections], cand: Sequence[Detections], kind: str,
              near: float | None = None) -> Agreement:
    """Agreement of `cand` with `ref` frame by frame; `near` counts lost FP32 detections
    scoring below it (just above the confidence threshold: lost to a small score change)."""
    if kind == "top1":
        same = sum(1 for r, c in zip(ref, cand)
                   if len(r) and len(c) and r.class_ids[0] == c.class_ids[0])
        return Agreement("top1", len(ref), len(ref), len(cand), same)
    found = [matches(r, c) for r, c in zip(ref, cand)]
    marginal = 0 if near is None else sum(
        int(np.sum(~f & (r.scores < near))) for r, f in zip(ref, found))
    return Agreement("detections", len(ref), sum(map(len, ref)), sum(map(len, cand)),
                     sum(int(f.sum()) for f in found), marginal)


def interleaved_ms(sessions: Sequence[ort.InferenceSession], feeds: Sequence[dict[str, np.ndarray]],
                   runs: int = 40, warmup: int = 5) -> list[list[float]]:
    """Per-session run times (ms), the sessions taking turns on the same tensors.

    Taking turns, in an order that rotates every round, exposes every session to the same
    background load (a training job, a benchmark), so medians can be compared.
    """
    n = len(sessions)
    for s in sessions:
        for k in range(warmup):
            s.run(None, feeds[k % len(feeds)])
    times: list[list[float]] = [[] for _ in range(n)]
    for r in range(runs):
        feed = feeds[r % len(feeds)]
        for j in range(n):
            i = (r + j) % n
            t0 = time.perf_counter()
            sessions[i].run(None, feed)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times
