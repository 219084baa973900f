"""Ultralytics-style detectors: YOLOv8/v11 `[1, 4+nc, N]`, YOLOv5 `[1, N, 5+nc]`, end-to-end `[1, K, 6]`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgert.frame import Detections
from edgert.postprocess.base import finish, xywh_to_xyxy
from edgert.preprocess.transform import Transform


class YoloV8Decoder:
    """cx, cy, w, h in input pixels, then sigmoided class scores; no objectness row."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, iou: float,
                 max_det: int) -> None:
        self.labels, self.index = labels, output_index
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        pred = outputs[self.index][0]          # (4+nc, N)
        cls_scores = pred[4:]
        class_ids = cls_scores.argmax(axis=0)
        scores = np.take_along_axis(cls_scores, class_ids[None], axis=0)[0]
        cand = np.flatnonzero(scores >= self.conf)
        if cand.size == 0:
            return Detections.empty(self.labels)
        boxes = xywh_to_xyxy(pred[:4, cand].T)
        return finish(boxes, scores[cand], class_ids[cand], self.labels, transform, self.iou,
                      self.max_det)


class YoloV5Decoder:
    """cx, cy, w, h, objectness, class scores per row; score = objectness × class score."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, iou: float,
                 max_det: int) -> None:
        self.labels, self.index = labels, output_index
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def candidates(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes xyxy in input pixels, scores, class ids) above conf; YOLOX reuses this."""
        obj = pred[:, 4]
        pre = np.flatnonzero(obj >= self.conf)   # score ≤ obj, so this prunes safely
        rows = pred[pre]
        cls = rows[:, 5:]
        class_ids = cls.argmax(axis=1)
        scores = rows[:, 4] * cls[np.arange(len(rows)), class_ids]
        keep = scores >= self.conf
        return xywh_to_xyxy(rows[keep, :4]), scores[keep], class_ids[keep]

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        boxes, scores, class_ids = self.candidates(outputs[self.index][0])
        return finish(boxes, scores, class_ids, self.labels, transform, self.iou, self.max_det)


class EndToEndDecoder:
    """NMS already inside the graph: rows of x1, y1, x2, y2, score, class in input pixels."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float,
                 max_det: int) -> None:
        self.labels, self.index, self.conf, self.max_det = labels, output_index, conf, max_det

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        rows = outputs[self.index][0]
        rows = rows[rows[:, 4] >= self.conf]
        return finish(rows[:, :4].copy(), rows[:, 4], rows[:, 5].astype(np.int32), self.labels,
                      transform, 1.0, self.max_det, nms=False)
