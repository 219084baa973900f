"""Preprocessing: a camera's BGR frame to the model's input tensor, into buffers allocated once."""

from edgert.preprocess.transform import Transform, plan_transform
from edgert.preprocess.reference import ReferencePreprocessor

__all__ = ["Transform", "plan_transform", "ReferencePreprocessor"]
