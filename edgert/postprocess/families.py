"""Decoders per model family, chosen by config; each turns raw outputs into Detections."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from edgert.config.types import ModelConfig
from edgert.errors import ModelError
from edgert.frame import Detections
from edgert.infer.model import ModelInfo
from edgert.postprocess.nms import nms_class_aware
from edgert.preprocess.transform import Transform


class Decoder(Protocol):
    labels: tuple[str, ...]

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections: ...


class YoloV8Decoder:
    """[1, 4+nc, N]: cx, cy, w, h in input pixels, then sigmoided class scores, no objectness."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, iou: float,
                 max_det: int) -> None:
        self.labels, self.index = labels, output_index
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        pred = outputs[self.index][0]          # (4+nc, N)
        cls_scores = pred[4:]
        class_ids = cls_scores.argmax(axis=0)
        scores = cls_scores[class_ids, np.arange(pred.shape[1])]
        cand = np.flatnonzero(scores >= self.conf)
        if cand.size == 0:
            return Detections.empty(self.labels)
        xywh = pred[:4, cand].T
        boxes = np.empty((cand.size, 4), np.float32)
        boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
        boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
        scores, class_ids = scores[cand].astype(np.float32), class_ids[cand].astype(np.int32)
        keep = nms_class_aware(boxes, scores, class_ids, self.iou, self.max_det)
        boxes = boxes[keep]
        transform.to_frame(boxes)
        return Detections(boxes, scores[keep], class_ids[keep], self.labels)


class ClassifyDecoder:
    """[1, nc] logits or probabilities → the top-k classes with probabilities."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, top_k: int) -> None:
        self.labels, self.index, self.conf, self.top_k = labels, output_index, conf, top_k

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        x = outputs[self.index].reshape(-1).astype(np.float32)
        if x.min() < 0.0 or x.max() > 1.0 or abs(float(x.sum()) - 1.0) > 1e-2:
            x = np.exp(x - x.max())      # logits: softmax
            x /= x.sum()
        top = np.argsort(-x, kind="stable")[:self.top_k]
        top = top[x[top] >= self.conf]
        return Detections(np.zeros((top.size, 0), np.float32), x[top],
                          top.astype(np.int32), self.labels)


def _labels(cfg: ModelConfig, info: ModelInfo, classes: int) -> tuple[str, ...]:
    labels = cfg.labels or info.names
    if labels is None:
        return tuple(str(i) for i in range(classes))
    if len(labels) != classes:
        src = "model.labels" if cfg.labels else "the model's metadata 'names'"
        raise ModelError(f"{info.path}: the model has {classes} classes but {src} lists "
                         f"{len(labels)} labels; make the labels file match the model")
    return labels


def make_decoder(cfg: ModelConfig, info: ModelInfo) -> Decoder:
    """Pick the output by shape (export names are unreliable) and build the family's decoder."""
    shapes = info.output_shapes
    if cfg.family == "yolov8":
        for i, shp in enumerate(shapes):
            if len(shp) == 3 and isinstance(shp[1], int) and isinstance(shp[2], int) \
                    and 5 <= shp[1] < shp[2]:
                labels = _labels(cfg, info, shp[1] - 4)
                return YoloV8Decoder(labels, i, cfg.conf, cfg.iou, cfg.max_det)
        raise ModelError(f"{info.path}: family 'yolov8' needs an output shaped [1, 4+classes, "
                         f"anchors], but the outputs are {list(shapes)}; check model.family")
    if cfg.family == "classify":
        for i, shp in enumerate(shapes):
            dims = [d for d in shp[1:] if d != 1]
            if len(dims) == 1 and isinstance(dims[0], int) and dims[0] >= 2:
                return ClassifyDecoder(_labels(cfg, info, dims[0]), i, cfg.conf, cfg.top_k)
        raise ModelError(f"{info.path}: family 'classify' needs an output shaped [N, classes], "
                         f"but the outputs are {list(shapes)}; check model.family")
    raise ModelError(f"{info.path}: no decoder for family {cfg.family!r}")
