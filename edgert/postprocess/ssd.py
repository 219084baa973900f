"""SSD-style models with boxes decoded in the graph (UltraFace): scores [1, N, C] + boxes [1, N, 4]."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgert.frame import Detections
from edgert.postprocess.base import finish
from edgert.preprocess.transform import Transform


class SsdDecoder:
    """Boxes are x1, y1, x2, y2 as fractions of the model input; score column 0 is background."""

    def __init__(self, labels: tuple[str, ...], scores_index: int, boxes_index: int, conf: float,
                 iou: float, max_det: int, input_hw: tuple[int, int]) -> None:
        self.labels, self.si, self.bi = labels, scores_index, boxes_index
        self.conf, self.iou, self.max_det = conf, iou, max_det
        h, w = input_hw
        self._size = np.array([w, h, w, h], np.float32)

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        cls = outputs[self.si][0][:, 1:]          # drop background
        class_ids = cls.argmax(axis=1)
        scores = cls[np.arange(cls.shape[0]), class_ids]
        cand = np.flatnonzero(scores >= self.conf)
        boxes = outputs[self.bi][0][cand] * self._size
        return finish(boxes, scores[cand], class_ids[cand], self.labels, transform, self.iou,
                      self.max_det)
