"""Faithfulness (detections kept, both directions) and speed (interleaved medians) of a candidate."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edgert.frame import Detections

MATCH_IOU = 0.5
NEAR = 0.1   # a lost detection that scored below conf + NEAR in FP32 was marginal anyway
# Matched detections whose scores moved this much on average are not the same detections
# for rules with their own min_score (a quantized output tail once turned 0.9 into 1.28).
MAX_SCORE_SHIFT = 0.1


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
    score_shift: float = 0.0  # mean |candidate score - FP32 score| over matched detections

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

    @property
    def scores_kept(self) -> bool:
        return self.score_shift <= MAX_SCORE_SHIFT

    def meets(self, threshold: float) -> bool:
        return self.measurable and self.scores_kept and self.worst >= threshold

    def clears(self, threshold: float, z: float = 1.0) -> bool:
        """Meets `threshold` by `z` binomial standard errors both ways.

        A candidate picked because it just meets the threshold on some frames is as likely
        as not to miss it on others (there are only a few hundred detections to count, and
        the ones near the confidence threshold flip with any change); the search asks for
        this margin on the frames it chooses on, the verdict only for the threshold.
        """
        if not self.measurable or not self.scores_kept:
            return False

        def bar(n: int) -> float:   # never above 1: all of them always clears
            return min(1.0, threshold + z * math.sqrt(threshold * (1.0 - threshold) / max(n, 1)))

        if self.kind == "top1":
            return self.kept >= bar(self.frames)
        return self.kept >= bar(self.reference) and self.confirmed >= bar(self.candidate)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def pairs(ref: Detections, cand: Detections, iou: float = MATCH_IOU) -> np.ndarray:
    """For each FP32 detection, the index of the candidate detection matched to it, else -1:
    greedy one-to-one, by descending FP32 score, same class, IoU ≥ `iou`."""
    used = np.zeros(len(cand), bool)
    partner = np.full(len(ref), -1, np.int64)
    for i in np.argsort(-ref.scores, kind="stable"):
        same = (cand.class_ids == ref.class_ids[i]) & ~used
        if not same.any():
            continue
        overlaps = np.where(same, _iou(ref.boxes[i], cand.boxes), -1.0)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou:
            used[j] = True
            partner[i] = j
    return partner


def matches(ref: Detections, cand: Detections, iou: float = MATCH_IOU) -> np.ndarray:
    """Which FP32 detections the candidate has (see `pairs`)."""
    return pairs(ref, cand, iou) >= 0


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
    partners = [pairs(r, c) for r, c in zip(ref, cand)]
    marginal = 0 if near is None else sum(
        int(np.sum((p < 0) & (r.scores < near))) for r, p in zip(ref, partners))
    shifts = np.concatenate([np.abs(c.scores[p[p >= 0]] - r.scores[p >= 0])
                             for r, c, p in zip(ref, cand, partners)] or [np.zeros(0)])
    return Agreement("detections", len(ref), sum(map(len, ref)), sum(map(len, cand)),
                     sum(int(np.sum(p >= 0)) for p in partners), marginal,
                     float(shifts.mean()) if shifts.size else 0.0)


def chance_agreement(ref: Sequence[Detections], kind: str) -> Agreement | None:
    """FP32 against itself on other frames: what a model that ignored its input would score.

    Every ordered pair of distinct frames, FP32's results on one taken as the "candidate"
    for the other (detections in model-input pixels, so frame sizes do not matter). When
    this meets the threshold, meeting it proves nothing about a candidate (an untrained
    YOLOv8n at conf 1e-4 finds the same 20 boxes on every frame: 100 % both ways). None
    with fewer than two frames.
    """
    if len(ref) < 2:
        return None
    others = [(i, j) for i in range(len(ref)) for j in range(len(ref)) if i != j]
    return agreement([ref[i] for i, _ in others], [ref[j] for _, j in others], kind)


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
