"""A user's own decoder, loaded by import path, so a new model family needs no change to edgert.

Signature (documented in docs/models.md)::

    def decode(outputs: Sequence[np.ndarray], ctx: DecodeContext)
        -> (boxes, scores, class_ids) | (boxes, scores, class_ids, keypoints) | dict | DecodeResult

`boxes` (N, 4) x1, y1, x2, y2 in model-input pixels, `scores` (N,), `class_ids` (N,) integers,
optional `keypoints` (N, K, 2 or 3) x, y[, score] in model-input pixels. edgert drops scores
below `model.conf`, applies class-aware NMS at `model.iou`, keeps `model.max_det` and maps
boxes and keypoints back to frame pixels.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from edgert.errors import DecoderError
from edgert.frame import Detections
from edgert.postprocess.base import finish
from edgert.preprocess.transform import Transform

_KEYS = ("boxes", "scores", "class_ids", "keypoints")


class DecodeResult(NamedTuple):
    """What a decoder may return by name; a plain 3- or 4-tuple in this order works too."""

    boxes: Any
    scores: Any
    class_ids: Any
    keypoints: Any = None


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
    """A decoder of one's own behind the built-in decoders' protocol; its result is checked
    against the contract on every frame, so a mistake is named instead of mis-published."""

    def __init__(self, fn: Callable[..., Any], ctx: DecodeContext, iou: float, max_det: int,
                 name: str = "", named_by: str = "") -> None:
        self.fn, self.ctx, self.labels = fn, ctx, ctx.labels
        self.iou, self.max_det = iou, max_det
        self.name = name or getattr(fn, "__qualname__", "the decoder")
        self.named_by = named_by or "the labels"   # for messages: model.labels or metadata

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        out = self.fn(outputs, self.ctx)
        if type(out) is tuple and len(out) == 3:   # the original contract, unpacked as before
            boxes, scores, class_ids = out
            kp = None
        else:
            boxes, scores, class_ids, kp = unpack(out, self.name)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        class_ids = np.asarray(class_ids).astype(np.int32).reshape(-1)
        n = scores.shape[0]
        if boxes.shape[0] != n or class_ids.shape[0] != n:
            raise DecoderError(f"decoder {self.name} returned {boxes.shape[0]} boxes, {n} scores "
                               f"and {class_ids.shape[0]} class ids; give one of each per "
                               "detection")
        keep = scores >= self.ctx.conf
        if kp is not None:
            kp = self._keypoints(kp, n)
            # The loop's own NaN filter knows nothing of keypoints: drop such rows here, whole.
            keep &= np.isfinite(boxes).all(axis=1) & np.isfinite(kp).all(axis=(1, 2))
            kp = kp[keep]
        class_ids = class_ids[keep]
        if class_ids.size:
            self._check_ids(class_ids)
        return finish(boxes[keep], scores[keep], class_ids, self.labels, transform, self.iou,
                      self.max_det, keypoints=kp)

    def _check_ids(self, class_ids: np.ndarray) -> None:
        """Records must not mix names with bare numbers: an id the labels do not name is the
        decoder's or the labels file's mistake, said on the frame it happens."""
        low, n = int(class_ids.min()), len(self.labels)
        if low < 0:
            raise DecoderError(f"decoder {self.name} gave class_id {low}; class ids count from 0")
        high = int(class_ids.max())
        if n and high >= n:
            raise DecoderError(f"decoder {self.name} gave class_id {high}, but {self.named_by} "
                               f"has {n} label{'s' * (n != 1)} (ids 0 to {n - 1}); fix the "
                               "decoder or the labels")

    def _keypoints(self, kp: Any, n: int) -> np.ndarray:
        arr = np.asarray(kp, np.float32)
        if n == 0 and arr.size == 0:
            return np.zeros((0, 0, 2), np.float32)
        if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] not in (2, 3):
            raise DecoderError(f"decoder {self.name} returned keypoints shaped {arr.shape} for "
                               f"{n} detections; give (N, K, 2) x, y or (N, K, 3) x, y, score")
        return arr


def unpack(out: Any, name: str) -> tuple[Any, Any, Any, Any]:
    """A 3- or 4-sequence (a DecodeResult is one) or a dict with the same names."""
    if isinstance(out, Mapping):
        missing = [k for k in _KEYS[:3] if k not in out]
        unknown = [k for k in out if k not in _KEYS]
        if missing or unknown:
            raise DecoderError(f"decoder {name} returned a dict with keys {list(out)}; "
                               f"use {', '.join(_KEYS[:3])} and optionally keypoints")
        return out["boxes"], out["scores"], out["class_ids"], out.get("keypoints")
    if isinstance(out, (tuple, list)) and len(out) in (3, 4):
        return (out[0], out[1], out[2], out[3] if len(out) == 4 else None)
    raise DecoderError(f"decoder {name} returned {type(out).__name__}; return "
                       "(boxes, scores, class_ids[, keypoints]), a dict or a DecodeResult")
