"""Classifiers: `[N, classes]` logits or probabilities → the top-k classes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgert.errors import DecoderError
from edgert.frame import Detections
from edgert.preprocess.transform import Transform


def probabilities(x: np.ndarray) -> np.ndarray:
    """`x` (one image's scores) as probabilities: softmax unless it already is a distribution."""
    if x.min() < 0.0 or x.max() > 1.0 or abs(float(x.sum()) - 1.0) > 1e-2:
        x = np.exp(x - x.max())
        x /= x.sum()
    return x


class ClassifyDecoder:
    """Softmax when the output is not already a probability distribution."""

    def __init__(self, labels: tuple[str, ...], output_index: int, conf: float, top_k: int,
                 output_name: str = "") -> None:
        self.labels, self.index, self.conf, self.top_k = labels, output_index, conf, top_k
        self.output_name = output_name or f"#{output_index}"

    def __call__(self, outputs: Sequence[np.ndarray], transform: Transform) -> Detections:
        out = outputs[self.index]
        if out.shape[0] != 1 or out.size != len(self.labels):   # a dynamic batch gave rows
            raise DecoderError(f"output {self.output_name} is {list(out.shape)}, but family "
                               f"'classify' reads [1, {len(self.labels)}]: one image's scores")
        x = probabilities(out.reshape(-1).astype(np.float32))
        top = np.argsort(-x, kind="stable")[:self.top_k]
        top = top[x[top] >= self.conf]
        return Detections(np.zeros((top.size, 0), np.float32), x[top],
                          top.astype(np.int32), self.labels)
