"""Inference: onnxruntime sessions created once, run where the loop can give up on them."""

from edgert.infer.model import ModelInfo, load_model
from edgert.infer.runner import InferenceRunner, RunResult

__all__ = ["ModelInfo", "load_model", "InferenceRunner", "RunResult"]
