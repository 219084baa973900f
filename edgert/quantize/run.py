"""`edgert quantize`: calibrate on real frames, search the float set, time side by side, decide."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from edgert.errors import UsageError
from edgert.frame import Detections, Frame
from edgert.infer.inputs import plan_input
from edgert.infer.model import load_model
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor
from edgert.quantize.describe import describe
from edgert.quantize.frames import collect, spread
from edgert.preprocess.transform import plan_transform
from edgert.quantize.measure import NEAR, agreement, chance_agreement, interleaved_ms
from edgert.quantize.qdq import (METHODS, Quantizer, TensorReader, finish, load_float,
                                  output_tail, prepare, quantizable)
from edgert.quantize.report import Candidate, QuantizeReport, decide, degenerate
from edgert.quantize.search import Trial, search
from edgert.quantize.sensitivity import rank

log = logging.getLogger("edgert.quantize")

MIN_JUDGE_FRAMES = 8   # below twice this, the same frames choose the float set and judge it
CHANCE_FRAMES = 32     # frames (spread over the judging ones) for chance_agreement: 992 pairs
# Default float-node budget: this share of the nodes INT8 would quantize (the output tail not
# counted), at least MIN_BUDGET. Beyond it a "mixed" model is mostly float and INT8 buys little.
FLOAT_SHARE = 0.15
MIN_BUDGET = 8


def _check(model: Path, calib: Path, out: Path, frames: int, threshold: float,
           max_float_nodes: int | None, method: str, runs: int) -> None:
    if not model.is_file():
        raise UsageError(f"{model}: no such model file; give the path of a float32 .onnx model")
    if not calib.exists():
        raise UsageError(f"{calib}: no such file or folder; give --calib a folder of images or a video")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: the folder {out.parent} does not exist; create it or write "
                         "--out somewhere else")
    if out.resolve() == model.resolve():
        raise UsageError(f"{out}: --out names the input model; write the INT8 model to a new file")
    if frames < 1:
        raise UsageError(f"--frames is {frames}; calibrate on at least 1 frame (64 is typical)")
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--agreement is {threshold}; give a fraction in (0, 1], e.g. 0.95")
    if max_float_nodes is not None and max_float_nodes < 0:
        raise UsageError(f"max_float_nodes is {max_float_nodes}; give 0 or more")
    if method not in METHODS:
        raise UsageError(f"calibration method {method!r} is unknown; use one of "
                         + ", ".join(METHODS))
    if runs < 30:
        raise UsageError(f"runs is {runs}; medians need at least 30 timed runs per model")


def run_quantize(model: Path, calib: Path, out: Path, *, config: Path | None = None,
                 family: str | None = None, frames: int = 64, threshold: float = 0.95,
                 max_float_nodes: int | None = None, eval_sources: Sequence[Path] = (),
                 eval_frames: int = 256, method: str = "minmax", runs: int = 40,
                 sensitivity_frames: int = 4, float_tail: bool = True) -> QuantizeReport:
    """Quantize MODEL to OUT (QDQ, static, calibrated on CALIB) and say whether to use it.

    The written model is the best candidate found, recommended or not: the report says which.
    `float_tail=False` quantizes the output tail too (see `qdq.output_tail`): for comparison.
    `max_float_nodes=None` allows FLOAT_SHARE of the quantizable nodes (at least MIN_BUDGET).
    """
    model, calib, out = Path(model), Path(calib), Path(out)
    _check(model, calib, out, frames, threshold, max_float_nodes, method, runs)
    metadata = {p.key: p.value for p in load_float(model).metadata_props}
    model_cfg, runtime, origin = describe(model, config, family, metadata)
    session, info = load_model(model, runtime)
    if info.input_dtype != np.float32:
        raise UsageError(f"{model}: the input is {info.input_dtype}, not float32; quantize the "
                         "float32 export of this model")
    # The metadata is layered in already (describe). Quantizing rewrites no input shape.
    plan = plan_input(model_cfg.input, model, info.input_shape, {}, str(config or model))
    if plan.rewrite_key is not None:
        raise UsageError(f"{config or model}: {plan.rewrite_key} asks for an input of "
                         f"{list(plan.dims)}, but {model} fixes {list(info.input_shape)}; "
                         "quantize the model at the shape its file declares")
    input_hw, model_cfg = plan.hw, dataclasses.replace(model_cfg, input=plan.input)
    classify = model_cfg.family == "classify"
    if classify:   # top-1 agreement: the best class, whatever its score
        model_cfg = dataclasses.replace(model_cfg, conf=0.0, top_k=1)
    decoder = make_decoder(model_cfg, info, input_hw)
    sets = collect(calib, frames, eval_sources, eval_frames)
    pre = ReferencePreprocessor(model_cfg.input, input_hw, info.input_dtype)

    def tensor(image: np.ndarray) -> tuple[np.ndarray, object]:
        x, t = pre(Frame(0, image, 0.0, 0.0))
        return x.copy(), t

    calib_x = [tensor(im)[0] for im in sets.calib]
    evals = [tensor(im) for im in sets.evaluate]
    # Choosing the float set on the frames it is then judged on would flatter it: with
    # enough frames, every other one chooses and the rest judge.
    split = len(evals) >= 2 * MIN_JUDGE_FRAMES
    choose, judge = (evals[0::2], evals[1::2]) if split else (evals, evals)
    name = info.input_name

    def detect(sess, frames) -> list[Detections]:
        return [decoder(sess.run(None, {name: x}), t) for x, t in frames]

    kind = "top1" if classify else "detections"
    near = model_cfg.conf + NEAR
    reference = detect(session, choose)
    judged_reference = detect(session, judge) if split else reference
    # In model-input pixels (an identity transform), so frames of other sizes compare.
    identity = plan_transform(input_hw, input_hw, "stretch")
    chance = chance_agreement([decoder(session.run(None, {name: judge[i][0]}), identity)
                               for i in spread(len(judge), CHANCE_FRAMES)], kind)
    judgeable = not degenerate(chance, threshold)
    with tempfile.TemporaryDirectory(prefix="edgert-quantize-") as tmp:
        work = Path(tmp)
        prepared = prepare(model, work)
        prepared_proto = onnx.load(str(prepared.path))
        ops = {n.name: n.op_type for n in prepared_proto.graph.node}
        tail = output_tail(prepared_proto) if float_tail else ()
        quantizer = Quantizer(prepared, TensorReader(name, calib_x), work, method, tail)
        budget = (max_float_nodes if max_float_nodes is not None else
                  max(MIN_BUDGET, round(FLOAT_SHARE * quantizable(prepared_proto, tail))))
        del prepared_proto

        def try_nodes(nodes: Sequence[str]):
            path = quantizer(nodes)
            sess, _ = load_model(path, runtime)
            return agreement(reference, detect(sess, choose), kind, near), path

        a, path = try_nodes(())
        plain = Trial(0, (), a, path)
        ranked = []
        if a.measurable and judgeable and not a.clears(threshold) and budget > 0:
            picks = [calib_x[i] for i in spread(len(calib_x), sensitivity_frames)]
            ranked = rank(prepared.path, path, name, picks, wanted=2 * budget)
            # Tail nodes are float in every candidate: they cost nothing from the budget.
            in_tail = set(tail)
            ranked = [dataclasses.replace(s, nodes=tuple(n for n in s.nodes if n not in in_tail))
                      for s in ranked]
            ranked = [s for s in ranked if s.nodes]
        chosen, trials = search(try_nodes, ranked, threshold, budget, start=plain)
        # Speed: FP32, plain INT8 and the chosen model taking turns on the same tensors.
        sessions = [session, load_model(plain.path, runtime)[0]]
        if chosen is not plain:
            sessions.append(load_model(chosen.path, runtime)[0])
        feeds = [{name: x} for x, _ in evals[:8]] or [{name: calib_x[0]}]
        times = interleaved_ms(sessions, feeds, runs=runs)
        medians = [float(np.median(t)) for t in times]

        def candidate(trial: Trial, i: int) -> Candidate:
            judged = (agreement(judged_reference, detect(sessions[i], judge), kind, near) if split
                      else trial.agreement)
            return Candidate("INT8" if not trial.nodes else "mixed", trial.nodes,
                             tuple(ops.get(n, "?") for n in trial.nodes), judged, medians[i])

        plain_c = candidate(plain, 1)
        chosen_c = plain_c if chosen is plain else candidate(chosen, 2)
        recommended, verdict = decide(chosen_c, medians[0], threshold, budget, chance)
        stamp = {"recommended": recommended, "verdict": verdict, "judged": judgeable,
                 "float_nodes": len(chosen.nodes),
                 "speedup": round(medians[0] / chosen_c.median_ms, 3),
                 "kept": round(chosen_c.agreement.kept, 4),
                 "confirmed": round(chosen_c.agreement.confirmed, 4)}
        finish(chosen.path, out, prepared.metadata, {"edgert_quantize": json.dumps(stamp)})
    return QuantizeReport(
        model=model, out=out, calib=calib, described_by=origin, family=model_cfg.family,
        method=method, preparation=prepared.note, calib_frames=len(calib_x),
        eval_frames=len(judge), search_frames=len(choose), judged_apart=split,
        eval_note=sets.eval_note,
        held_out=sets.held_out,
        tail=tuple((n, ops.get(n, "?")) for n in tail), max_float_nodes=budget,
        threshold=threshold, runs=runs, threads=runtime.intra_op_threads, fp32_ms=medians[0],
        plain=plain_c, chosen=chosen_c,
        trials=tuple((t.sites, len(t.nodes), t.agreement.kept, t.agreement.confirmed)
                     for t in trials),
        sensitive=tuple((s.tensor, s.op_type, s.error) for s in ranked[:8]),
        recommended=recommended, verdict=verdict, chance=chance)
