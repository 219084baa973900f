"""Postprocessing: a model family's raw outputs to Detections in frame pixels."""

from edgert.postprocess.base import Decoder
from edgert.postprocess.families import make_decoder
from edgert.postprocess.user import DecodeContext

__all__ = ["Decoder", "DecodeContext", "make_decoder"]
