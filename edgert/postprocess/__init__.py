"""Postprocessing: a model family's raw outputs to Detections in frame pixels."""

from edgert.postprocess.families import Decoder, make_decoder

__all__ = ["Decoder", "make_decoder"]
