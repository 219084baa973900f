"""Create the onnxruntime session once and read what the model says about itself."""

from __future__ import annotations

import ast
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgert.config.types import RuntimeConfig
from edgert.errors import ModelError
from edgert.infer.inputs import detect_layout
from edgert.infer.messages import ort_message
from edgert.infer.providers import check_bound, plan
from edgert.infer.reshape import Dims, output_shapes, with_input_dims

log = logging.getLogger("edgert.infer")

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
    not_bound: tuple[str, ...] = ()   # preferred providers that are missing or failed
    declared_shape: tuple[int | None, ...] | None = None   # the file's own, where it was rewritten

    @property
    def degraded(self) -> bool:
        """Running on a fallback provider: slower than the board should be."""
        return bool(self.not_bound)

    @property
    def static_hw(self) -> tuple[int, int] | None:
        """The fixed (height, width), where the file fixes them, in its own layout."""
        nchw = detect_layout(self.input_shape) == "nchw"
        h, w = self.input_shape[2 if nchw else 1], self.input_shape[3 if nchw else 2]
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


def session_options(rt: RuntimeConfig) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = rt.intra_op_threads
    opts.inter_op_num_threads = rt.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core in every idle gap between frames (measured: ~33 ms of CPU
    # per gap with 2 threads) and slow the grabber and the loop on a 2-core board.
    spin = "1" if rt.spin_wait else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    # Errors only: some exports warn once per initializer, which would bury our own log.
    opts.log_severity_level = 3
    return opts


def load_model(path: Path, rt: RuntimeConfig | None = None, where: str = "",
               key: str = "model.path", dims: Dims | None = None
               ) -> tuple[ort.InferenceSession, ModelInfo]:
    """Create the session once; a file that is not a usable model raises ModelError naming it.

    `where` names the config file (and `key` the key that names the model) for messages.
    `dims`: run the model at this input shape instead of the fixed one its file declares
    (edgert.infer.reshape); `key` then names the key that asked for it.
    """
    rt = rt or RuntimeConfig()
    where = where or str(path)
    pp = plan(rt.providers, rt.provider_options, rt.provider_policy, where)
    source: str | bytes = str(path)
    declared = None
    if dims is not None:
        source, declared = _rewritten(path, dims, where, key)
    try:
        session = ort.InferenceSession(source, sess_options=session_options(rt),
                                       providers=list(zip(pp.requested, pp.options)))
    except Exception as e:  # onnxruntime raises several private exception types
        raise _unusable(path, where, key, e, dims, declared) from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"{i.name}{i.shape}" for i in inputs)
        raise ModelError(f"{path}: edgert feeds one image tensor, [N, 3, H, W] or [N, H, W, 3], "
                         f"but the model's inputs are {shapes}; export the model with a single "
                         "image input")
    inp = inputs[0]
    if inp.type not in _DTYPES:
        raise ModelError(f"{path}: input {inp.name} has type {inp.type}; edgert feeds float32, "
                         "float16 or uint8 images")
    bound = tuple(session.get_providers())
    unbound = check_bound(pp, bound, rt.provider_policy, where)
    meta = session.get_modelmeta().custom_metadata_map or {}
    outs = session.get_outputs()
    info = ModelInfo(
        path=path, input_name=inp.name,
        input_shape=tuple(d if isinstance(d, int) else None for d in inp.shape),
        input_dtype=np.dtype(_DTYPES[inp.type]),
        output_names=tuple(o.name for o in outs),
        output_shapes=tuple(tuple(d if isinstance(d, int) else None for d in o.shape) for o in outs),
        metadata=dict(meta), providers=bound,
        not_bound=pp.missing + tuple(n for n in unbound if n != "CPUExecutionProvider"))
    if dims is not None:
        try:
            shapes = output_shapes(session, inp.name, dims, info.input_dtype)
        except Exception as e:  # the graph holds the old size somewhere (a Reshape, priors …)
            raise _unusable(path, where, key, e, dims, declared) from None
        info = dataclasses.replace(info, output_shapes=shapes, declared_shape=declared)
    if info.degraded:
        log.warning("%s: preferred providers not bound (%s); running on %s (degraded)",
                    where, ", ".join(info.not_bound), ", ".join(bound))
    return session, info


def _rewritten(path: Path, dims: Dims, where: str, key: str) -> tuple[bytes, tuple]:
    try:
        return with_input_dims(path, dims)
    except ImportError:
        raise ModelError(f"{where}: {key}: running {path} at {list(dims)}, not at the input "
                         "shape its file fixes, needs the onnx package to rewrite that shape; "
                         f"pip install onnx, or {_fix(key)}") from None
    except Exception as e:  # onnx's parser raises its own DecodeError
        raise ModelError(f"{where}: {key}: {path} cannot be rewritten to take {list(dims)} "
                         f"({e}); {_fix(key)}") from None


def _unusable(path: Path, where: str, key: str, e: Exception, dims: Dims | None,
              declared: tuple | None) -> ModelError:
    """One sentence for a model onnxruntime will not load or, rewritten, will not run."""
    if dims is not None:
        return ModelError(f"{where}: {key}: onnxruntime cannot run {path} at {list(dims)} "
                          f"instead of the {list(declared or ())} its file declares "
                          f"({ort_message(e)}); {_fix(key)}")
    lead = f"{path}: onnxruntime cannot load this model" if where == str(path) else (
        f"{where}: {key}: onnxruntime cannot load {path}")
    return ModelError(f"{lead} ({ort_message(e)}); check that it is a complete .onnx file "
                      f"that onnxruntime {ort.__version__} supports")


def _fix(key: str) -> str:
    if key.endswith(".size"):
        return (f"remove {key} to run it at its own size, or export it at that size or with a "
                "dynamic input shape")
    return "export it with batch 1 or a dynamic batch"
