"""The frozen values that cross stage boundaries: a Frame in, Detections out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgert.records import Attr, Det


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image, where it is from, and when: in the video and on this machine.

    `image` is BGR uint8 (H, W, 3) and read-only: sources recycle a small ring of buffers,
    so a stage that wants to keep pixels beyond the next read must copy them.
    `media_s` is the frame's time in its video (the container's presentation time; for a live
    source, its capture time): what decisions measure windows and ages in. `arrival_s` is the
    monotonic instant the grab returned: where the frame's deadline runs from.
    """

    index: int             # the source's frame index, from 0
    image: np.ndarray
    media_s: float         # seconds on the video's own time line
    arrival_s: float       # monotonic seconds, on the run's clock
    capture_s: float = 0.0  # time spent grabbing/decoding this frame
    source_id: str = "main"
    uid: int = 0            # how the herald knows it once armed (0: not armed yet)

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
    track_ids: np.ndarray | None = None   # (N,) int64 where tracking is on; -1: no track (yet)
    keypoints: np.ndarray | None = None   # (N, K, 2 or 3) float32 x, y[, score] where given
    # Per detection, what secondary models said (None: no secondary model looked at it).
    attributes: tuple[Mapping[str, Attr] | None, ...] | None = None

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.track_ids is not None and self.track_ids.shape != (n,):
            raise ValueError(f"track_ids: expected ({n},), got {self.track_ids.shape}")
        kp = self.keypoints
        if kp is not None and (kp.ndim != 3 or kp.shape[0] != n or kp.shape[2] not in (2, 3)):
            raise ValueError(f"keypoints: expected ({n}, K, 2) or ({n}, K, 3), got {kp.shape}")
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
        return label_of(int(self.class_ids[i]), self.labels)

    def to_dets(self) -> tuple[Det, ...]:
        dets = self._plain_dets()
        if self.attributes is None:
            return dets
        return tuple(d if a is None else d._replace(attributes=a)
                     for d, a in zip(dets, self.attributes))

    def _plain_dets(self) -> tuple[Det, ...]:
        """As record values. Whole arrays go to Python at once: per-element numpy scalars
        would cost more than the rest of the record."""
        ids = self.class_ids.tolist()
        scores = self.scores.astype(np.float64).round(4).tolist()
        labels, n = self.labels, len(self.labels)
        if not self.has_boxes:
            return tuple(Det(labels[c] if 0 <= c < n else label_of(c, labels), c, scores[i])
                         for i, c in enumerate(ids))
        boxes = self.boxes.astype(np.float64).round(1).tolist()
        if self.keypoints is not None:
            return self._with_keypoints(ids, scores, boxes)
        if self.track_ids is not None:
            tids = [t if t >= 0 else None for t in self.track_ids.tolist()]
            return tuple(Det(labels[c] if 0 <= c < n else label_of(c, labels), c, scores[i],
                             tuple(boxes[i]), tids[i]) for i, c in enumerate(ids))
        return tuple(Det(labels[c] if 0 <= c < n else label_of(c, labels), c, scores[i],
                         tuple(boxes[i])) for i, c in enumerate(ids))

    def _with_keypoints(self, ids: list[int], scores: list[float],
                        boxes: list[list[float]]) -> tuple[Det, ...]:
        """Keypoints as (x, y, score) tuples; score None where the decoder gave only x, y."""
        kp = self.keypoints
        xy = kp[..., :2].astype(np.float64).round(1).tolist()
        ks = (kp[..., 2].astype(np.float64).round(4).tolist() if kp.shape[2] == 3
              else [[None] * kp.shape[1]] * kp.shape[0])
        tids = ([t if t >= 0 else None for t in self.track_ids.tolist()]
                if self.track_ids is not None else [None] * len(ids))
        return tuple(Det(label_of(c, self.labels), c, scores[i], tuple(boxes[i]), tids[i],
                         tuple((p[0], p[1], s) for p, s in zip(xy[i], ks[i])))
                     for i, c in enumerate(ids))


def label_of(class_id: int, labels: tuple[str, ...]) -> str:
    """A class's name; `class_7` where no labels name it (a decoder of one's own, unlabelled)."""
    return labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}"
