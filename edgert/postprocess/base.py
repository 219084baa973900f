"""What every decoder shares: the protocol, candidates → NMS → frame pixels, label checks."""

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


def finish(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, labels: tuple[str, ...],
           transform: Transform, iou: float, max_det: int, nms: bool = True,
           keypoints: np.ndarray | None = None) -> Detections:
    """Candidates in input pixels (x1, y1, x2, y2) → NMS → frame pixels, highest score first.
    `keypoints` (N, K, 2 or 3) follow their boxes through the same selection and mapping."""
    if scores.shape[0] == 0:
        return Detections.empty(labels)
    boxes = np.ascontiguousarray(boxes, np.float32)
    scores = scores.astype(np.float32, copy=False)
    class_ids = class_ids.astype(np.int32, copy=False)
    if nms:
        keep = nms_class_aware(boxes, scores, class_ids, iou, max_det)
    else:
        keep = np.argsort(-scores, kind="stable")[:max_det]
    boxes = boxes[keep]
    transform.to_frame(boxes)
    if keypoints is not None:
        keypoints = keypoints[keep]              # a copy: mapping it leaves the caller's alone
        transform.points_to_frame(keypoints[..., :2])
    return Detections(boxes, scores[keep], class_ids[keep], labels, keypoints=keypoints)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty((xywh.shape[0], 4), np.float32)
    out[:, :2] = xywh[:, :2] - xywh[:, 2:4] / 2
    out[:, 2:] = xywh[:, :2] + xywh[:, 2:4] / 2
    return out


def unnamed_labels(classes: int) -> tuple[str, ...]:
    """Names for a model nobody named the classes of: `class_0` … (a bare "0" reads as a count
    in `edgert check` and as a number beside real names in records)."""
    return tuple(f"class_{i}" for i in range(classes))


def resolve_labels(cfg: ModelConfig, info: ModelInfo, classes: int) -> tuple[str, ...]:
    """Labels from config, else the model's metadata, else class_0 …; a count mismatch is an
    error."""
    labels = cfg.labels or info.names
    if labels is None:
        return unnamed_labels(classes)
    if len(labels) != classes:
        src = "model.labels" if cfg.labels else "the model's metadata 'names'"
        raise ModelError(f"{info.path}: the model has {classes} classes but {src} lists "
                         f"{len(labels)} labels; make the labels file match the model")
    return labels


def no_output(info: ModelInfo, family: str, wanted: str, fits: Sequence[str] = ()) -> ModelError:
    """The outputs, by name and shape, and which family reads them, if a built-in one does."""
    outputs = ", ".join(f"{n} {list(s)}" for n, s in zip(info.output_names, info.output_shapes))
    others = [f for f in fits if f != family]
    hint = (f"the outputs fit family {' or '.join(map(repr, others))}" if others else
            "no built-in family reads these outputs; a decoder of your own can "
            "(docs/models.md, \"A decoder of your own\")")
    return ModelError(f"{info.path}: family {family!r} needs {wanted}, but the outputs are "
                      f"{outputs}; check model.family: {hint}")
