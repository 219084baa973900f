"""Preprocessing: a camera's BGR frame to the model's input tensor, into buffers allocated once.

`FusedPreprocessor` (numba, one pass) is what the loop uses; `ReferencePreprocessor` (OpenCV +
numpy) is its plain twin that tests compare it with. The numba kernels load on first use, so
importing this package compiles nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgert.preprocess.reference import ReferencePreprocessor
from edgert.preprocess.transform import Transform, plan_transform

if TYPE_CHECKING:
    from edgert.preprocess.fused import FusedPreprocessor

__all__ = ["Transform", "plan_transform", "ReferencePreprocessor", "FusedPreprocessor"]


def __getattr__(name: str) -> object:
    if name == "FusedPreprocessor":
        from edgert.preprocess.fused import FusedPreprocessor
        return FusedPreprocessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
