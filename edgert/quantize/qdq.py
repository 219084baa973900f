"""Static QDQ quantization with onnxruntime's tools, tuned for its CPU kernels, calibrated once."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

from edgert.errors import ModelError, UsageError
from edgert.quantize.quiet import quiet_onnxruntime

log = logging.getLogger("edgert.quantize")

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                       "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})
# Per-channel weights need the `axis` attribute of QuantizeLinear: opset 13.
MIN_OPSET = 13
# What onnxruntime's quant_pre_process imports beyond onnx (declared in the quantize extra).
PRE_PROCESS_NEEDS = ("sympy",)
# Where int8 kernels earn their keep; the output tail (below) stops at the last of them.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN"})


class TensorReader(CalibrationDataReader):
    """Preprocessed tensors, fed one at a time to onnxruntime's calibrator."""

    def __init__(self, input_name: str, tensors: Sequence[np.ndarray]) -> None:
        self.input_name, self.tensors = input_name, list(tensors)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.tensors):
            return None
        self._next += 1
        return {self.input_name: self.tensors[self._next - 1]}

    def __len__(self) -> int:
        return len(self.tensors)

    def rewind(self) -> None:
        self._next = 0


@dataclass(frozen=True, slots=True)
class Prepared:
    """The float model quantization starts from (node names in `nodes_to_exclude` refer to it)."""

    path: Path
    metadata: tuple[tuple[str, str], ...]   # the original file's metadata_props, in order
    note: str                               # what preparation did, for the report


def load_float(model: Path) -> onnx.ModelProto:
    """The model as ONNX, refusing one that is already quantized (quantizing twice only loses)."""
    try:
        proto = onnx.load(str(model))
    except Exception as e:  # DecodeError and friends: not a protobuf at all
        raise ModelError(f"{model}: not a readable ONNX file ({type(e).__name__}); "
                         "check the path points at a complete .onnx model") from None
    done = [n.op_type for n in proto.graph.node if n.op_type in QUANT_OPS]
    if done:
        raise UsageError(f"{model}: the model is already quantized (it has {done[0]} nodes); "
                         "give the float32 model to quantize")
    return proto


def _name_nodes(proto: onnx.ModelProto) -> int:
    """Give unnamed nodes a unique name: keeping a node float (nodes_to_exclude) needs one."""
    taken = {n.name for n in proto.graph.node if n.name}
    named = 0
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


def prepare(model: Path, workdir: Path) -> Prepared:
    """Opset ≥ 13, then quant_pre_process (shape inference + fusions) when it works."""
    proto = load_float(model)
    metadata = tuple((p.key, p.value) for p in proto.metadata_props)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    notes = []
    if opset < MIN_OPSET:
        try:
            proto = version_converter.convert_version(proto, MIN_OPSET)
            notes.append(f"opset {opset}→{MIN_OPSET}")
        except Exception as e:
            raise ModelError(f"{model}: opset {opset} could not be converted to {MIN_OPSET} for "
                             f"per-channel quantization ({str(e).splitlines()[0][:120]}); "
                             "re-export the model at opset 13 or later") from None
    if _name_nodes(proto):
        notes.append("unnamed nodes named")
    base = workdir / "float.onnx"
    onnx.save(proto, str(base))
    prepped = workdir / "prep.onnx"
    missing = missing_modules(PRE_PROCESS_NEEDS)
    if missing:
        # Without symbolic shape inference the fusions still run: as fast here (YOLOv8n 1.71×
        # either way, 1.38× with no pre-processing at all), but say what is missing.
        log.warning("%s is not installed, so onnxruntime cannot run symbolic shape inference "
                    "before quantizing (INT8 may gain less speed); install it with pip install "
                    "'edgert[quantize]' (or pip install %s)", " and ".join(missing),
                    " ".join(missing))
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        with quiet_onnxruntime():
            quant_pre_process(str(base), str(prepped), skip_symbolic_shape=bool(missing))
        onnx.checker.check_model(str(prepped))
        notes.append("pre-processed" + (f" without symbolic shapes (no {', '.join(missing)})"
                                         if missing else ""))
        return Prepared(prepped, metadata, ", ".join(notes))
    except Exception as e:  # pre-processing fails on some exports: go on without it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        log.warning("onnxruntime could not pre-process %s (%s: %s), so it is quantized as it is "
                    "and INT8 may gain little speed (YOLOv8n: 1.38× instead of 1.71×); run with "
                    "-v for onnxruntime's own messages", model, type(e).__name__, first)
        notes.append(f"NOT pre-processed ({type(e).__name__}): INT8 may gain little speed")
        return Prepared(base, metadata, ", ".join(notes))


def missing_modules(names: Sequence[str]) -> list[str]:
    """Those of `names` that cannot be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def output_tail(proto: onnx.ModelProto) -> tuple[str, ...]:
    """Nodes after the last Conv/MatMul/Gemm on every path to the outputs: they stay float.

    Detector exports end in decode and layout ops (sigmoid, box arithmetic, reshape, concat)
    that join box offsets or pixel coordinates with 0..1 scores into one output tensor.
    Quantized, that tensor shares one 8-bit scale: YOLOv8-style outputs round every score
    to 0 or 1.28 (a 0..320 px range), YOLOX's to steps of 0.025. These ops cost next to
    nothing in float and gain nothing from int8, so they are never quantized. A node is in
    the tail when it is not a heavy op and everything it feeds is the tail or an output.
    """
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tail: set[str] = set()
    changed = True
    while changed:   # grow backwards from the outputs until nothing more qualifies
        changed = False
        for node in reversed(graph.node):
            if node.name in tail or node.op_type in HEAVY_OPS or not node.name:
                continue
            feeds = [(o, c) for o in node.output for c in consumers.get(o, [])]
            reaches = any(o in outputs for o in node.output) or bool(feeds)
            if reaches and all(c.name in tail for _, c in feeds):
                tail.add(node.name)
                changed = True
    return tuple(n.name for n in graph.node if n.name in tail)


def quantizable(proto: onnx.ModelProto, keep_float: Sequence[str] = ()) -> int:
    """How many nodes onnxruntime's static quantizer would quantize (op types it has an int8
    form for), not counting `keep_float`: what a float-node budget is a share of."""
    from onnxruntime.quantization.registry import QLinearOpsRegistry
    skip = set(keep_float)
    return sum(1 for n in proto.graph.node
               if n.op_type in QLinearOpsRegistry and n.name not in skip)


class Quantizer:
    """Quantize the prepared model with some nodes left in float; calibration runs only once."""

    def __init__(self, prepared: Prepared, reader: TensorReader, workdir: Path,
                 method: str = "minmax", keep_float: Sequence[str] = ()) -> None:
        if method not in METHODS:
            raise UsageError(f"calibration method {method!r} is unknown; use one of "
                             + ", ".join(METHODS))
        self.prepared, self.reader, self.workdir = prepared, reader, workdir
        self.method = method
        self.keep_float = tuple(keep_float)   # excluded from every candidate (the output tail)
        self.cache = workdir / f"calibration-{method}.json"
        self._count = 0

    def __call__(self, exclude: Iterable[str] = ()) -> Path:
        """Write a QDQ model with `exclude` (node names) kept in float; returns its path."""
        self._count += 1
        out = self.workdir / f"candidate-{self._count}.onnx"
        self.reader.rewind()
        # The calibrators print progress on stdout, which belongs to the report.
        with contextlib.redirect_stdout(io.StringIO()), quiet_onnxruntime():
            self._quantize(out, exclude)
        return out

    def _quantize(self, out: Path, exclude: Iterable[str]) -> None:
        # CPU EP: uint8 asymmetric activations, int8 symmetric per-channel weights (its u8s8
        # kernels). Full-range weights suit VNNI x86; pre-VNNI x86 would want reduce_range.
        quantize_static(
            str(self.prepared.path), str(out), self.reader, quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(exclude) | set(self.keep_float)),
            calibrate_method=METHODS[self.method], calibration_cache_path=str(self.cache),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def finish(candidate: Path, out: Path, metadata: Sequence[tuple[str, str]],
           extra: dict[str, str]) -> None:
    """Write the chosen candidate to OUT with the original metadata (Ultralytics names …) kept."""
    proto = onnx.load(str(candidate))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in dict(metadata)]
    del proto.metadata_props[:]
    for key, value in [*metadata, *keep, *extra.items()]:
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(proto, str(out))
