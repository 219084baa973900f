"""Rank quantized tensors by how much quantizing each one alone moves the model's outputs.

Measured at the outputs, one tensor at a time, because error at the tensor itself misleads:
on YOLOX-nano the stem's activations carry < 1% relative error locally yet, alone, move the
scores by ~40%, while deep layers with large local error barely matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

_RENAMED = "_QuantizeLinear_Input"   # how the quantizer renames a quantized graph output
MASK = "edgert_quantize_mask"


@dataclass(frozen=True, slots=True)
class Site:
    """A tensor INT8 rounds, and the float nodes that keep it float when excluded."""

    tensor: str
    kind: str                  # "activation" | "weight"
    op_type: str               # the producer's (activation) or consumer's (weight) op type
    nodes: tuple[str, ...]     # producer and consumers: all must be excluded to keep it float
    error: float = 0.0         # output error with only this tensor quantized (see output_error)


def _array(init: dict[str, onnx.TensorProto], name: str) -> np.ndarray:
    return numpy_helper.to_array(init[name])


def find_sites(prep: onnx.ModelProto, qdq: onnx.ModelProto) -> tuple[list[Site], dict]:
    """Quantized activations and weights of the float model, with their INT8 rounding.

    Returns the sites and, per tensor, (scale, zero point) for activations or the
    dequantized array for weights.
    """
    qinit = {i.name: i for i in qdq.graph.initializer}
    pinit = {i.name for i in prep.graph.initializer}
    producer = {o: n for n in prep.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in prep.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qnodes = {n.name: n for n in qdq.graph.node}
    dq_out = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    sites, rounding = [], {}
    for q in qdq.graph.node:
        if q.op_type != "QuantizeLinear":
            continue
        t = q.input[0].removesuffix(_RENAMED)
        if t in pinit or t in rounding or (t not in producer and t not in
                                           {i.name for i in prep.graph.input}):
            continue
        users = consumers.get(t, [])
        nodes = ([producer[t].name] if t in producer else []) + [u.name for u in users]
        op = producer[t].op_type if t in producer else "input"
        zp = qinit[q.input[2]]
        rounding[t] = (float(_array(qinit, q.input[1])), int(_array(qinit, q.input[2])), zp.data_type)
        sites.append(Site(t, "activation", op, tuple(dict.fromkeys(nodes))))
    for node in prep.graph.node:
        qn = qnodes.get(node.name)
        if qn is None:
            continue
        for j, name in enumerate(node.input):
            if name not in pinit or j >= len(qn.input) or name in rounding:
                continue
            dq = dq_out.get(qn.input[j])
            if dq is None or dq.input[0] not in qinit or len(dq.input) < 2:
                continue
            w = _array(qinit, dq.input[0])
            if w.dtype == np.int32:   # biases: int32 rounding is far below anything else
                continue
            scale = _array(qinit, dq.input[1]).astype(np.float64)
            zp = _array(qinit, dq.input[2]).astype(np.float64) if len(dq.input) > 2 else 0.0
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and w.ndim > 1:
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), np.reshape(zp, shape)
            rounding[name] = ((w.astype(np.float64) - zp) * scale).astype(np.float32)
            users = [u.name for u in consumers.get(name, [])]
            sites.append(Site(name, "weight", node.op_type, tuple(dict.fromkeys(users))))
    order = {n.name: i for i, n in enumerate(prep.graph.node)}
    sites.sort(key=lambda st: min((order.get(n, len(order)) for n in st.nodes), default=0))
    return sites, rounding


def masked_model(prep: onnx.ModelProto, sites: Sequence[Site], rounding: dict) -> onnx.ModelProto:
    """The float model where site i is rounded as INT8 would when mask[i] is true.

    Each site sits in an `If`, so the sites that are off cost a branch, not a rounding pass:
    the whole ranking then runs at about the float model's speed.
    """
    m = onnx.ModelProto()
    m.CopyFrom(prep)
    g = m.graph
    inputs = {i.name for i in g.input}
    chains: dict[str, list[onnx.NodeProto]] = {}
    head: list[onnx.NodeProto] = []
    renames: dict[str, str] = {}
    for i, site in enumerate(sites):
        t = site.tensor
        flag = f"{MASK}_{i}"
        g.initializer.append(numpy_helper.from_array(np.array(i, np.int64), flag + "_i"))
        src, dst = (t, t + "__noisy") if t in inputs or site.kind == "weight" else (t + "__float", t)
        if site.kind == "weight":
            g.initializer.append(numpy_helper.from_array(rounding[t], t + "__rounded"))
            then = [helper.make_node("Identity", [t + "__rounded"], [flag + "_then"])]
        else:
            scale, zp, ztype = rounding[t]
            g.initializer.append(helper.make_tensor(t + "__s", TensorProto.FLOAT, [], [scale]))
            g.initializer.append(helper.make_tensor(t + "__z", ztype, [], [zp]))
            then = [helper.make_node("QuantizeLinear", [src, t + "__s", t + "__z"], [t + "__q"]),
                    helper.make_node("DequantizeLinear", [t + "__q", t + "__s", t + "__z"],
                                     [flag + "_then"])]
        out = [helper.make_tensor_value_info(flag + "_then", TensorProto.FLOAT, None)]
        branch_then = helper.make_graph(then, f"{flag}_on", [], out)
        branch_else = helper.make_graph(
            [helper.make_node("Identity", [src], [flag + "_else"])], f"{flag}_off", [],
            [helper.make_tensor_value_info(flag + "_else", TensorProto.FLOAT, None)])
        nodes = [helper.make_node("Gather", [MASK, flag + "_i"], [flag]),
                 helper.make_node("If", [flag], [dst], then_branch=branch_then,
                                  else_branch=branch_else)]
        if t in inputs or site.kind == "weight":
            renames[t] = dst
            head += nodes
        else:
            chains[t] = nodes
    ordered = list(head)
    for node in g.node:
        for j, name in enumerate(node.input):
            node.input[j] = renames.get(name, name)
        for j, name in enumerate(node.output):
            if name in chains:
                node.output[j] = f"{name}__float"
        ordered.append(node)
        for name in node.output:
            ordered += chains.get(name.removesuffix("__float"), [])
    del g.node[:]
    g.node.extend(ordered)
    g.input.append(helper.make_tensor_value_info(MASK, TensorProto.BOOL, [len(sites)]))
    return m


def output_error(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """Relative squared error per output attribute (box, score, class …), averaged.

    An output [1, A, N] or [1, N, A] is judged attribute by attribute (the shorter axis), so
    the score channels weigh as much as box coordinates with far larger values.
    """
    total, count = 0.0, 0
    for r, g in zip(ref, got):
        r64, d = r.astype(np.float64), r.astype(np.float64) - g
        if r.ndim == 3 and r.shape[0] == 1 and r.shape[1] != r.shape[2]:
            axis = 1 if r.shape[1] < r.shape[2] else 2
            other = 2 if axis == 1 else 1
            num = np.sum(d ** 2, axis=(0, other))
            den = np.sum(r64 ** 2, axis=(0, other))
            keep = den > 0
            total += float(np.sum(num[keep] / den[keep]))
            count += int(keep.sum())
        else:
            den = float(np.sum(r64 ** 2))
            total += float(np.sum(d ** 2)) / den if den > 0 else 0.0
            count += 1
    return total / max(count, 1)


def rank(prep_path: Path, qdq_path: Path, input_name: str, tensors: Sequence[np.ndarray],
         wanted: int = 80, block: int = 8) -> list[Site]:
    """Sites, most harmful first, by `output_error` with only that site quantized.

    Coarse to fine, to keep the cost near a hundred runs: blocks of `block` neighbouring
    sites are measured together, then the sites of the worst blocks one by one until
    `wanted` sites have their own figure. The rest keep their block's figure per site.
    """
    prep, qdq = onnx.load(str(prep_path)), onnx.load(str(qdq_path))
    sites, rounding = find_sites(prep, qdq)
    if not sites:
        return []
    model = masked_model(prep, sites, rounding)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Basic optimisations only: nothing may fuse the rounding away.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    mask = np.zeros(len(sites), bool)
    feeds = [{input_name: x, MASK: mask} for x in tensors]
    ref = [session.run(None, f) for f in feeds]

    def error(on: Sequence[int]) -> float:
        mask[:] = False
        mask[list(on)] = True
        err = float(np.mean([output_error(r, session.run(None, f)) for r, f in zip(ref, feeds)]))
        mask[:] = False
        return err

    blocks = [list(range(i, min(i + block, len(sites)))) for i in range(0, len(sites), block)]
    if len(sites) <= wanted:
        blocks = [[i] for i in range(len(sites))]
    coarse = sorted(((error(b), b) for b in blocks), key=lambda eb: -eb[0])
    errors: dict[int, float] = {}
    for err, b in coarse:
        if len(b) == 1 or len(errors) >= wanted:
            errors.update({i: err / len(b) for i in b if i not in errors})
        else:
            errors.update({i: error([i]) for i in b})
    ranked = [Site(s.tensor, s.kind, s.op_type, s.nodes, errors[i]) for i, s in enumerate(sites)]
    ranked.sort(key=lambda s: (-s.error, s.tensor))
    return ranked
