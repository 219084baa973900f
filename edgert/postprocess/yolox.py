"""YOLOX: the grid decode the export leaves outside the graph, then the YOLOv5 row layout."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgert.frame import Detections
from edgert.postprocess.base import finish
from edgert.postprocess.yolo import YoloV5Decoder
from edgert.preprocess.transform import Transform

STRIDES = (8, 16, 32)


def grid(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) grid cell offsets and (N, 1) strides, row-major per stride, strides in order."""
    cells, steps = [], []
    for s in strides:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        ys, xs = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        steps.append(np.full((gh * gw, 1), s))
    return (np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32))


class YoloXDecoder(YoloV5Decoder):
    """cx = (raw_x + grid_x) * stride, w = exp(raw_w) * stride; obj and classes already sigmoided."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, iou: float,
                 max_det: int, input_hw: tuple[int, int]) -> None:
        super().__init__(labels, output_index, conf, iou, max_det)
        self.cells, self.strides = grid(input_hw)   # computed once: the input size is fixed

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        raw = outputs[self.index][0]
        if raw.shape[0] != self.cells.shape[0]:
            raise ValueError(f"YOLOX output has {raw.shape[0]} anchors, the grid {self.cells.shape[0]}")
        pre = np.flatnonzero(raw[:, 4] >= self.conf)   # decode only what can pass
        rows = raw[pre].copy()
        rows[:, :2] = (rows[:, :2] + self.cells[pre]) * self.strides[pre]
        rows[:, 2:4] = np.exp(rows[:, 2:4]) * self.strides[pre]
        boxes, scores, class_ids = self.candidates(rows)
        return finish(boxes, scores, class_ids, self.labels, transform, self.iou, self.max_det)
