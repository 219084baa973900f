"""Postprocessing: a model family's raw outputs to Detections in frame pixels.

`YoloV8Kernel` (numba decode + NMS) serves the YOLOv8 family in the loop; `YoloV8Decoder`
(numpy + OpenCV) is its twin. The kernels load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgert.postprocess.base import Decoder
from edgert.postprocess.families import make_decoder
from edgert.postprocess.user import DecodeContext, DecodeResult

if TYPE_CHECKING:
    from edgert.postprocess.kernels import YoloV8Kernel

__all__ = ["Decoder", "DecodeContext", "DecodeResult", "make_decoder", "YoloV8Kernel"]


def __getattr__(name: str) -> object:
    if name == "YoloV8Kernel":
        from edgert.postprocess.kernels import YoloV8Kernel
        return YoloV8Kernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
