"""The few frozen values that cross stage boundaries: Frame, Detections, Decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

SCHEMA_DECISION = "edgert.decision/1"
STAGES = ("capture", "preprocess", "infer", "postprocess", "decide")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image and when it was grabbed.

    `image` is BGR uint8 (H, W, 3) and read-only: sources recycle a small ring of buffers,
    so a stage that wants to keep pixels beyond the next read must copy them.
    """

    index: int             # the source's frame index, from 0
    image: np.ndarray
    captured_wall: float   # Unix seconds, for records
    captured_mono: float   # monotonic seconds, for deadlines
    capture_s: float = 0.0  # time spent grabbing/decoding this frame

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections in frame pixels, highest score first; validated so bad decoders fail loudly."""

    boxes: np.ndarray       # (N, 4) float32 x1, y1, x2, y2; (N, 0) for classification
    scores: np.ndarray      # (N,) float32
    class_ids: np.ndarray   # (N,) int32
    labels: tuple[str, ...]  # label names indexed by class id

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.scores.ndim != 1:
            raise ValueError(f"scores: expected (N,), got {self.scores.shape}")
        if self.class_ids.shape != (n,):
            raise ValueError(f"class_ids: expected ({n},), got {self.class_ids.shape}")
        if self.boxes.ndim != 2 or self.boxes.shape[0] != n or self.boxes.shape[1] not in (0, 4):
            raise ValueError(f"boxes: expected ({n}, 4) or ({n}, 0), got {self.boxes.shape}")

    @classmethod
    def empty(cls, labels: tuple[str, ...], with_boxes: bool = True) -> Detections:
        return cls(np.zeros((0, 4 if with_boxes else 0), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int32), labels)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def has_boxes(self) -> bool:
        return self.boxes.shape[1] == 4

    def label(self, i: int) -> str:
        c = int(self.class_ids[i])
        return self.labels[c] if 0 <= c < len(self.labels) else str(c)

    def to_records(self) -> list[dict]:
        # Whole arrays to Python at once: per-element numpy scalars cost more than the rest.
        ids = self.class_ids.tolist()
        scores = self.scores.astype(np.float64).round(4).tolist()
        boxes = self.boxes.astype(np.float64).round(1).tolist() if self.has_boxes else None
        n = len(self.labels)
        out = []
        for i, c in enumerate(ids):
            rec = {"label": self.labels[c] if 0 <= c < n else str(c), "class_id": c,
                   "score": scores[i]}
            if boxes is not None:
                rec["box"] = boxes[i]
            out.append(rec)
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """What the loop decided for one frame; serialised identically on every output."""

    device_id: str
    run_id: str
    seq: int
    frame_id: int
    captured_at: float
    decided_at: float
    deadline_ms: float
    status: str             # ok | fail_safe | skipped
    action: str
    latency_ms: Mapping[str, float]
    detections: tuple[dict, ...] = ()
    rule: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def to_record(self) -> dict:
        rec: dict = {
            "schema": SCHEMA_DECISION,
            "device_id": self.device_id,
            "run_id": self.run_id,
            "seq": self.seq,
            "frame_id": self.frame_id,
            "captured_at": round(self.captured_at, 6),
            "decided_at": round(self.decided_at, 6),
            "deadline_ms": self.deadline_ms,
            "status": self.status,
            "action": self.action,
            "latency_ms": dict(self.latency_ms),
            "detections": list(self.detections),
        }
        if self.rule is not None:
            rec["rule"] = self.rule
        rec.update(self.extra)
        return rec
