"""A user's own decoder, loaded by import path, so a new model family needs no change to edgert.

Signature (documented in docs/models.md)::

    def decode(outputs: Sequence[np.ndarray], ctx: DecodeContext) -> tuple[boxes, scores, class_ids]

`boxes` (N, 4) x1, y1, x2, y2 in model-input pixels, `scores` (N,), `class_ids` (N,) integers.
edgert drops scores below `model.conf`, applies class-aware NMS at `model.iou`, keeps
`model.max_det` and maps boxes back to frame pixels.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgert.frame import Detections
from edgert.postprocess.base import finish
from edgert.preprocess.transform import Transform


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a user decoder may want to know; fixed for the run."""

    input_hw: tuple[int, int]
    output_names: tuple[str, ...]
    labels: tuple[str, ...]
    conf: float
    metadata: Mapping[str, str]


def load_callable(spec: str) -> Callable[..., Any]:
    """'package.module:function' → the function; raises ImportError/AttributeError/TypeError."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError("write it as package.module:function")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"{attr} in {module_name} is not a function")
    return fn


class UserDecoder:
    def __init__(self, fn: Callable[..., Any], ctx: DecodeContext, iou: float, max_det: int) -> None:
        self.fn, self.ctx, self.labels = fn, ctx, ctx.labels
        self.iou, self.max_det = iou, max_det

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        boxes, scores, class_ids = self.fn(outputs, self.ctx)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        class_ids = np.asarray(class_ids).astype(np.int32).reshape(-1)
        keep = scores >= self.ctx.conf
        return finish(boxes[keep], scores[keep], class_ids[keep], self.labels, transform,
                      self.iou, self.max_det)
