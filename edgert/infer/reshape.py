"""A model run at another input shape than its file fixes: many exports declare a placeholder
shape ([10, 3, 32, 32]) that their own project rewrites at load, and a ladder rung may run a
fixed-size model smaller."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

# A str names a dimension left open (a dynamic batch: "batch").
Dims = tuple["int | str", int, int, int]


def with_input_dims(path: Path, dims: Dims) -> tuple[bytes, tuple]:
    """The model's bytes with its input declared as `dims`, and the shape the file declared.

    Every shape the file states for a later tensor was derived from the old input, so those
    are dropped (value_info, the outputs' shapes) for onnxruntime to infer again. Raises
    ImportError without the onnx package and ValueError for a file it cannot rewrite.
    """
    import onnx   # only for models that need it: a board may run without the package

    model = onnx.load(str(path))
    weights = {w.name for w in model.graph.initializer}   # some exports list them as inputs
    graph_input = next((i for i in model.graph.input if i.name not in weights), None)
    if graph_input is None:
        raise ValueError("the file has no graph input")
    shape = graph_input.type.tensor_type.shape
    declared = tuple(d.dim_value if d.HasField("dim_value") else None for d in shape.dim)
    shape.ClearField("dim")
    for value in dims:
        if isinstance(value, str):
            shape.dim.add().dim_param = value
        else:
            shape.dim.add().dim_value = value
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    if model.ByteSize() >= 2**31:   # protobuf's limit on one message
        raise ValueError("it is over 2 GB, too large to rewrite in memory")
    return model.SerializeToString(), declared


def output_shapes(session: ort.InferenceSession, input_name: str, dims: Dims,
                  dtype: np.dtype) -> tuple[tuple[int, ...], ...]:
    """Run once on zeros: proves onnxruntime can run the rewritten model, and gives the output
    shapes the decoders choose by (the file's own were dropped). Raises what ORT raises."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4   # the failure is raised, and said once, by the caller
    one = tuple(1 if isinstance(d, str) else d for d in dims)
    outputs: Sequence[np.ndarray] = session.run(None, {input_name: np.zeros(one, dtype)}, quiet)
    return tuple(tuple(int(d) for d in o.shape) for o in outputs)
