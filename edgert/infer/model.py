"""Create the onnxruntime session once and read what the model says about itself."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgert.errors import ModelError

# Config names → onnxruntime provider names, in the order a user is likely to prefer them.
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider", "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider", "armnn": "ArmNNExecutionProvider",
    "dml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider",
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the model file says: input name/shape/dtype, outputs, Ultralytics metadata."""

    path: Path
    input_name: str
    input_shape: tuple[int | str | None, ...]
    input_dtype: np.dtype
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | str | None, ...], ...]
    metadata: dict[str, str]
    providers: tuple[str, ...]   # actually bound, in onnxruntime's order

    @property
    def static_hw(self) -> tuple[int, int] | None:
        h, w = self.input_shape[2], self.input_shape[3]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    @property
    def names(self) -> tuple[str, ...] | None:
        """Class names from Ultralytics metadata ("{0: 'person', …}"), if present."""
        raw = self.metadata.get("names")
        if not raw:
            return None
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
        if isinstance(parsed, dict):
            return tuple(str(parsed[k]) for k in sorted(parsed))
        if isinstance(parsed, (list, tuple)):
            return tuple(map(str, parsed))
        return None


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core in every idle gap between frames and slow the
    # grabber and the rest of the loop on a 2-core board; sleeping costs ~µs per run.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Errors only: some exports warn once per initializer, which would bury our own log.
    opts.log_severity_level = 3
    return opts


def load_model(path: Path, providers: tuple[str, ...] = ("cpu",),
               threads: int = 2) -> tuple[ort.InferenceSession, ModelInfo]:
    """Create the session; a file that is not a usable model raises ModelError naming it."""
    available = set(ort.get_available_providers())
    wanted = [PROVIDER_NAMES[p] for p in providers if PROVIDER_NAMES[p] in available]
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                       providers=wanted)
    except Exception as e:  # onnxruntime raises several private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: onnxruntime cannot load this model ({first[:200]}); "
                         "check that it is a complete .onnx file") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"{i.name}{i.shape}" for i in inputs)
        raise ModelError(f"{path}: edgert feeds one image tensor [N, 3, H, W], but the model's "
                         f"inputs are {shapes}; export the model with a single image input")
    inp = inputs[0]
    if inp.type not in _DTYPES:
        raise ModelError(f"{path}: input {inp.name} has type {inp.type}; edgert feeds float32, "
                         "float16 or uint8 images")
    meta = session.get_modelmeta().custom_metadata_map or {}
    outs = session.get_outputs()
    info = ModelInfo(
        path=path, input_name=inp.name,
        input_shape=tuple(d if isinstance(d, int) else None for d in inp.shape),
        input_dtype=np.dtype(_DTYPES[inp.type]),
        output_names=tuple(o.name for o in outs),
        output_shapes=tuple(tuple(d if isinstance(d, int) else None for d in o.shape) for o in outs),
        metadata=dict(meta), providers=tuple(session.get_providers()))
    return session, info
