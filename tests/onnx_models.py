"""Real ONNX graphs built with onnx.helper, for tests that need a model of known shape or cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_model(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolo_constant(path: Path, pred: np.ndarray, hw: tuple[int, int] = (64, 64),
                  dynamic: bool = False, metadata: dict[str, str] | None = None,
                  reshape: tuple[int, ...] | None = None) -> Path:
    """A 'detector' whose output is always `pred` [1, 4+nc, N] (plus 0 × the input's mean).

    `reshape`: the input is first reshaped to this shape, which fails in onnxruntime at run
    time for an input whose size it does not divide (a model exported for one size only)."""
    h, w = ("h", "w") if dynamic else hw
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape))
    inits = [numpy_helper.from_array(pred.astype(np.float32), "pred"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes, seen = [], "images"
    if reshape is not None:
        inits.append(numpy_helper.from_array(np.array(reshape, np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["images", "shape"], ["reshaped"]))
        seen = "reshaped"
    nodes += [
        helper.make_node("ReduceMean", [seen], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["pred", "z"], ["output0"]),
    ]
    return save_model(helper.make_graph(nodes, "const", [x], [y], inits), path, metadata)


def _square_operand(size: int, hw: tuple[int, int]) -> tuple[onnx.ValueInfoProto, list, list]:
    """The `images` input, and nodes that make a [size, size] operand `t0` of it (plus a scalar
    `zero`), so that MatMul chains depend on the input and cannot be folded away."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *hw])
    inits = [numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([size], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([size, 1], np.int64), "tiles"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes = [helper.make_node("Reshape", ["images", "flat"], ["v"]),
             helper.make_node("Slice", ["v", "start", "end", "axis1"], ["h0"]),
             helper.make_node("Tile", ["h0", "tiles"], ["t0"])]
    return x, inits, nodes


def _chain(nodes: list, inits: list, size: int, depth: int) -> str:
    """`depth` MatMuls by random [size×size] weights after `t0`; returns the last tensor's name."""
    rng = np.random.default_rng(0)
    prev = "t0"
    for i in range(depth):
        w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"t{i + 1}"]))
        prev = f"t{i + 1}"
    return prev


def matmul_chain(path: Path, size: int = 512, depth: int = 8, hw: tuple[int, int] = (64, 64),
                 classes: int = 2, anchors: int = 64, pred: np.ndarray | None = None,
                 metadata: dict[str, str] | None = None) -> Path:
    """A detector-shaped graph whose cost is `depth` [size×size] MatMuls: cost you can dial.
    Its output is `pred` ([1, 4+nc, N]: see one_box_pred), or carries no detections."""
    if pred is None:
        pred = np.zeros((1, 4 + classes, anchors), np.float32)
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape))
    x, inits, nodes = _square_operand(size, hw)
    prev = _chain(nodes, inits, size, depth)
    # The MatMuls' result is multiplied by zero: the output is `pred` alone.
    inits.append(numpy_helper.from_array(pred.astype(np.float32), "base"))
    nodes += [helper.make_node("ReduceMean", [prev], ["m"], keepdims=0),
              helper.make_node("Mul", ["m", "zero"], ["z"]),
              helper.make_node("Add", ["base", "z"], ["output0"])]
    return save_model(helper.make_graph(nodes, "chain", [x], [y], inits), path, metadata)


def spiky_chain(path: Path, size: int = 512, light: int = 2, heavy: int = 24,
                hw: tuple[int, int] = (64, 64), pred: np.ndarray | None = None) -> Path:
    """Like `matmul_chain`, but `heavy` MatMuls when the input's mean is above 128 (raw pixel
    values, `scale = 1`) and `light` otherwise: a bright frame makes the model spike, on
    exactly the frames a test chooses.
    The output is `pred` (default: one confident box, see `one_box_pred`) whatever the branch."""
    pred = one_box_pred(hw=hw, anchors=64) if pred is None else pred
    classes, anchors = pred.shape[1] - 4, pred.shape[2]
    rng = np.random.default_rng(0)
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, anchors])
    x, inits, head = _square_operand(size, hw)
    inits += [numpy_helper.from_array(np.float32(128.0), "half"),
              numpy_helper.from_array(pred.astype(np.float32), "base")]
    for i in range(heavy):
        w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))

    def branch(name: str, depth: int) -> onnx.GraphProto:
        nodes, prev = [], "t0"
        for i in range(depth):
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"{name}{i + 1}"]))
            prev = f"{name}{i + 1}"
        nodes.append(helper.make_node("ReduceMean", [prev], [f"{name}_m"], keepdims=0))
        out = helper.make_tensor_value_info(f"{name}_m", TensorProto.FLOAT, [])
        return helper.make_graph(nodes, name, [], [out])

    nodes = head + [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Greater", ["mean", "half"], ["bright"]),
        helper.make_node("If", ["bright"], ["m"], then_branch=branch("heavy", heavy),
                         else_branch=branch("light", light)),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["base", "z"], ["output0"])]
    return save_model(helper.make_graph(nodes, "spiky", [x], [y], inits), path)


def one_box_pred(classes: int = 2, anchors: int = 32, hw: tuple[int, int] = (64, 64),
                 box: tuple[float, float, float, float] = (32, 32, 16, 16), cls: int = 1,
                 score: float = 0.9) -> np.ndarray:
    """[1, 4+nc, N] with one confident box (cx, cy, w, h in input pixels) and noise below 0.1."""
    pred = np.zeros((1, 4 + classes, anchors), np.float32)
    pred[0, :4, :] = np.array([hw[1] / 2, hw[0] / 2, 4, 4], np.float32)[:, None]
    pred[0, 4:, :] = 0.05
    pred[0, :4, 0] = box
    pred[0, 4 + cls, 0] = score
    return pred


def rows_per_pixel(path: Path, per_row: int, rows_per_h: int) -> Path:
    """A model with a dynamic input whose output is [h × rows_per_h, per_row] zeros: the file
    declares the first dim dynamic, as a batch would be, but a run gives many rows."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["n", per_row])
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["h"]),
        helper.make_node("Mul", ["h", "per_h"], ["n"]),
        helper.make_node("Concat", ["n", "cols"], ["target"], axis=0),
        helper.make_node("ConstantOfShape", ["target"], ["output0"]),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([rows_per_h], np.int64), "per_h"),
             numpy_helper.from_array(np.array([per_row], np.int64), "cols")]
    return save_model(helper.make_graph(nodes, "rows", [x], [y], inits), path)


def heavy_classifier(path: Path, size: int = 256, depth: int = 8, hw: tuple[int, int] = (32, 32),
                     classes: int = 2) -> Path:
    """A classifier with a dynamic batch whose cost is `depth` [size×size] MatMuls per image:
    a secondary model whose per-crop cost you can dial (its scores are uniform)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *hw])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])
    inits = [numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([size], np.int64), "end"),
             numpy_helper.from_array(np.array([classes], np.int64), "classes"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([1, size], np.int64), "tiles"),
             numpy_helper.from_array(np.array([-1, size], np.int64), "rows"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes = [helper.make_node("Reshape", ["input", "flat"], ["v"]),
             helper.make_node("Slice", ["v", "start", "end", "axis1"], ["h0"]),
             helper.make_node("Tile", ["h0", "tiles"], ["tiled"]),
             helper.make_node("Reshape", ["tiled", "rows"], ["t0"])]   # [N·size, size]
    prev = _chain(nodes, inits, size, depth)
    nodes += [helper.make_node("ReduceMean", [prev], ["m"], axes=[1], keepdims=0),
              helper.make_node("Reshape", ["m", "rows"], ["per"]),        # [N, size]
              helper.make_node("Mul", ["per", "zero"], ["z"]),
              helper.make_node("Slice", ["z", "start", "classes", "axis1"], ["output"])]
    return save_model(helper.make_graph(nodes, "heavy", [x], [y], inits), path)


def channels_last(src: Path, dst: Path) -> Path:
    """`src` re-exported channels-last: its NCHW input becomes an [N, H, W, C] input that a
    Transpose turns back into the original, as TensorFlow and TFLite conversions do."""
    model = onnx.load(str(src))
    weights = {i.name for i in model.graph.initializer}
    old = next(i for i in model.graph.input if i.name not in weights)
    n, c, h, w = (d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim)
    new = helper.make_tensor_value_info(f"{old.name}_nhwc", old.type.tensor_type.elem_type,
                                        [n, h, w, c])
    model.graph.node.insert(0, helper.make_node("Transpose", [new.name], [old.name],
                                                perm=[0, 3, 1, 2]))
    at = list(model.graph.input).index(old)
    model.graph.input.remove(old)
    model.graph.input.insert(at, new)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def pooled_classifier(path: Path, shape: tuple[int, int, int, int] = (10, 3, 32, 32),
                      classes: int = 4) -> Path:
    """A classifier that averages each channel and mixes the three means into `classes`
    logits: it runs at any input size, but its file fixes `shape`, a placeholder (batch 10,
    32x32) of the kind some projects export and rewrite at load."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], classes])
    mix = np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 100
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["means"]),
             helper.make_node("MatMul", ["means", "mix"], ["logits"])]
    return save_model(helper.make_graph(nodes, "pooled", [x], [y],
                                        [numpy_helper.from_array(mix, "mix")]), path)


def batched_chain(path: Path, size: int = 256, shared: int = 8, each: int = 2,
                  hw: tuple[int, int] = (64, 64), pred: np.ndarray | None = None) -> Path:
    """A detector with a dynamic batch whose run costs `shared` [size×size] MatMuls whatever
    the batch, plus `each` per frame in it: a + b·k, the shape of a real model's batch cost
    (weights and launch paid once a run), with a dial for each part. Every frame's output is
    `pred` (default: one confident box)."""
    pred = one_box_pred(hw=hw, anchors=64) if pred is None else pred
    classes, anchors = pred.shape[1] - 4, pred.shape[2]
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, *hw])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + classes, anchors])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([0, 1, -1], np.int64), "per_frame"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([size], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([size, 1], np.int64), "tiles"),
             numpy_helper.from_array(np.array([1, size, 1], np.int64), "tiles3"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "column"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero"),
             numpy_helper.from_array(pred.astype(np.float32), "base")]
    for i in range(max(shared, each)):
        w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
    nodes = [   # the batch's shared part: the first frame's pixels, once a run
        helper.make_node("Reshape", ["images", "flat"], ["v"]),
        helper.make_node("Slice", ["v", "start", "end", "axis1"], ["h0"]),
        helper.make_node("Tile", ["h0", "tiles"], ["s0"]),
        # each frame's part: [N, size, size], batched MatMuls
        helper.make_node("Reshape", ["images", "per_frame"], ["pv"]),
        helper.make_node("Slice", ["pv", "start", "end", "axis2"], ["ph"]),
        helper.make_node("Tile", ["ph", "tiles3"], ["p0"])]
    for name, depth in (("s", shared), ("p", each)):
        for i in range(depth):
            nodes.append(helper.make_node("MatMul", [f"{name}{i}", f"w{i}"], [f"{name}{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"s{shared}"], ["sm"], keepdims=0),
              helper.make_node("ReduceMean", [f"p{each}"], ["pm"], axes=[1, 2], keepdims=0),
              helper.make_node("Reshape", ["pm", "column"], ["pc"]),
              helper.make_node("Add", ["pc", "sm"], ["m"]),
              helper.make_node("Mul", ["m", "zero"], ["z"]),
              helper.make_node("Add", ["base", "z"], ["output0"])]
    return save_model(helper.make_graph(nodes, "batched", [x], [y], inits), path)
