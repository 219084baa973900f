"""From config to ready stages: sessions, decoders, preprocessing, rungs — and their warm-up."""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

from edgert.clock import Clock
from edgert.config.types import Config, ModelConfig
from edgert.costs import StageCosts
from edgert.deadline import Deadline
from edgert.decide import kernels as decide_kernels
from edgert.decide.zones import check_frame
from edgert.errors import ConfigError, ModelError
from edgert.frame import Detections, Frame
from edgert.guard import Ticket
from edgert.infer import InferenceRunner, ModelInfo, load_model
from edgert.infer.inputs import InputPlan, plan_input
from edgert.pipeline import MakePreprocess, Pipeline
from edgert.scene import Scene
from edgert.infer.escalate import Escalation
from edgert.infer.secondary import SecondaryStage, classify_reader, user_reader
from edgert.infer.stage import UserSession, UserStage
from edgert.postprocess import make_decoder
from edgert.postprocess.base import resolve_labels
from edgert.preprocess.crops import CropPreprocessor
from edgert.preprocess import ReferencePreprocessor
from edgert.publish.herald import new_board

log = logging.getLogger("edgert")


def input_plan(cfg: Config, info: ModelInfo, model: ModelConfig | None = None,
               key: str = "model") -> InputPlan:
    """The model's input as it will be fed, from the file, its metadata and the config."""
    model = model or cfg.model
    return plan_input(model.input, info.path, info.input_shape, info.metadata, str(cfg.file),
                      key)


def check_rule_labels(cfg: Config, labels: tuple[str, ...]) -> None:
    """What rules ask of the model (labels, and boxes for zones and lines), checked once its
    outputs are known to fit `model.family`, so a detector mistaken for a classifier is told
    about its family, not a rule's zone: a rule on a label the model does not have, or on
    boxes a classifier has none of, would silently never fire."""
    for i, rule in enumerate(cfg.rules):
        for key, ref in (("zone", rule.zone), ("crosses", rule.crosses)):
            if ref is not None and cfg.model.family == "classify":
                raise ConfigError(str(cfg.file), f"rules[{i}].{key}", f"of rule {rule.name!r} "
                                  "needs boxes, but a classify model has none",
                                  f"remove {key} from this rule")
        for lab in rule.labels:
            if not labels:   # a decoder of one's own, and nothing names its classes
                raise ConfigError(str(cfg.file), f"rules[{i}].labels", f"names {lab!r}, but "
                                  "the model has no labels (model.labels is not set and its "
                                  "metadata has no 'names')", "set model.labels to a text file "
                                  "with one label per line, in class id order")
            if lab not in labels:
                shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
                raise ConfigError(str(cfg.file), f"rules[{i}].labels", f"names {lab!r}, which the "
                                  f"model does not have", f"use one of its labels: {shown}")


def _pipeline(cfg: Config, model: ModelConfig, clock: Clock, name: str, key: str,
              batch: int = 1) -> tuple[Pipeline, ModelInfo, InputPlan]:
    """One model's stages: session, decoder, preprocessing (fused numba where it can write).
    With `batch` above 1, the session takes up to that many frames a run where it can."""
    session, info = load_model(model.path, cfg.runtime, str(cfg.file), f"{key}.path")
    plan = input_plan(cfg, info, model, key)
    if plan.rewrite_key is not None:
        # A fixed shape that is a placeholder (many exports): run the model as asked, and say
        # so once it runs (if it cannot, the error alone says it all).
        declared = list(info.input_shape)
        session, info = load_model(model.path, cfg.runtime, str(cfg.file), plan.rewrite_key,
                                   plan.dims)
        log.warning("%s: %s declares a fixed input %s; running it at %s, %s", cfg.file,
                    info.path, declared, list(plan.dims),
                    f"as {plan.rewrite_key} says" if plan.rewrite_key.endswith(".size")
                    else "one frame at a time")
    decoder = make_decoder(model, info, plan.hw, cfg.runtime.kernels)
    dtype = info.input_dtype if info.input_dtype != np.int8 else np.uint8
    make: MakePreprocess
    if cfg.runtime.kernels == "numba" and dtype in (np.float32, np.float16, np.uint8):
        from edgert.preprocess.fused import FusedPreprocessor
        make = lambda: FusedPreprocessor(plan.input, plan.hw, dtype)  # noqa: E731
    else:
        make = lambda: ReferencePreprocessor(plan.input, plan.hw, dtype)  # noqa: E731
    pipeline = Pipeline(make, InferenceRunner(session, info.input_name), decoder, clock, name,
                        cfg.runtime.cost_quantile)
    if batch > 1:
        _batched(cfg, model, pipeline, info, plan, batch, key)
    return pipeline, info, plan


def _batched(cfg: Config, model: ModelConfig, pipeline: Pipeline, info: ModelInfo,
             plan: InputPlan, batch: int, key: str) -> None:
    """Let `pipeline` run up to `batch` frames at once: as its file says where the batch is
    dynamic, else (a file that fixes it at 1, as most exports do) rewritten with a dynamic
    batch, which onnxruntime must then run at 2 — some graphs reshape with the 1 built in."""
    n = info.input_shape[0]
    if isinstance(n, int) and n > 1:
        pipeline.batch_note = f"the model's batch is fixed at {n}: frames run singly"
        return
    if isinstance(n, int):
        try:
            session, info = load_model(model.path, cfg.runtime, str(cfg.file), f"{key}.path",
                                       ("batch", *plan.dims[1:]) if plan.dims else
                                       ("batch", *info.input_shape[1:]))
        except (ModelError, ConfigError) as e:
            pipeline.batch_note = f"the model cannot run a batch ({e}): frames run singly"
            return
        pipeline.runner = InferenceRunner(session, info.input_name)
    tensor = np.zeros((batch, *pipeline.preprocess.tensor.shape[1:]),
                      pipeline.preprocess.tensor.dtype)
    result = pipeline.runner.run(tensor[:2])
    if result.outputs is None or any(o.shape[:1] != (2,) for o in result.outputs):
        pipeline.batch_note = "the model does not give one output per frame of a batch: " \
            "frames run singly"
        return
    pipeline.max_batch, pipeline.batch_tensor = batch, tensor
    pipeline.batch_note = f"up to {batch} frames a run"


# A secondary run is optional: one predicted to fit should nearly always fit, since one that
# overruns loses the whole frame where skipping it would have lost only an attribute.
SECONDARY_QUANTILE = 0.9


def _secondary(cfg: Config, i: int, primary: tuple[str, ...]) -> SecondaryStage:
    """One [[model.secondary]]: its session, crop buffers (a batch where the model takes one)
    and how its outputs become an attribute."""
    sec, key = cfg.model.secondary[i], f"model.secondary[{i}]"
    for lab in sec.on:
        if primary and lab not in primary:
            raise ConfigError(str(cfg.file), f"{key}.on", f"names {lab!r}, which the primary "
                              "model does not have", "use labels of the primary model")
    session, info = load_model(sec.model.path, cfg.runtime, str(cfg.file), f"{key}.path")
    plan = input_plan(cfg, info, sec.model, key)
    if plan.rewrite_key is not None and plan.rewrite_key.endswith(".size"):
        raise ConfigError(str(cfg.file), f"{key}.input.size", f"differs from the fixed input "
                          f"{list(info.input_shape)} of {info.path}", "remove it: a secondary "
                          "model runs at its file's size")
    hw = plan.hw
    dtype = info.input_dtype if info.input_dtype != np.int8 else np.uint8
    if dtype not in (np.float32, np.uint8):
        raise ModelError(f"{info.path}: a secondary model's input must be float32 or uint8, "
                         f"not {np.dtype(dtype).name}")
    n = info.input_shape[0]
    batch = sec.max_crops if not isinstance(n, int) else n
    if batch != 1 and batch != sec.max_crops:
        raise ModelError(f"{info.path}: the input's batch is fixed at {n}; {key}.max_crops must "
                         f"be {n}, or the model exported with a dynamic batch (or of 1)")
    if sec.model.family == "classify":
        shape = info.output_shapes[0]
        classes = shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None
        if classes is None:
            raise ModelError(f"{info.path}: {key}.family 'classify' needs an output shaped "
                             f"[N, classes], but it is {list(shape)}; use a decoder of your own")
        labels = resolve_labels(sec.model, info, classes)
        read = classify_reader(0)
    else:
        from edgert.postprocess.user import DecodeContext, load_callable
        labels = sec.model.labels or info.names or ()
        ctx = DecodeContext(hw, info.output_names, labels, sec.model.conf, info.metadata)
        read = user_reader(load_callable(sec.model.family), ctx, sec.model.family)
    crops = CropPreprocessor(plan.input, hw, dtype, batch, sec.padding,
                             channels_last=plan.input.layout == "nhwc")
    return SecondaryStage(sec, InferenceRunner(session, info.input_name), crops, read, labels,
                          batch, max(cfg.runtime.cost_quantile, SECONDARY_QUANTILE))


def batch_size(cfg: Config) -> int:
    """The most frames one run may take: with several sources and batching on."""
    return cfg.runtime.max_batch if len(cfg.sources) > 1 and cfg.runtime.batching != "off" \
        else 1


def build_rungs(cfg: Config, clock: Clock) -> tuple[list[Pipeline], ModelInfo]:
    """The main model's pipeline and one per ladder rung, sharing the secondary models (each
    source's rules are its own: edgert.scene). The main pipeline's `input_note` says how its
    input is fed and where that came from (`run` logs it at ready, `check` prints it)."""
    batch = batch_size(cfg)
    main, info, plan = _pipeline(cfg, cfg.model, clock, "main", "model", batch)
    check_rule_labels(cfg, main.decoder.labels)
    rungs = [main]
    for i, rung in enumerate(cfg.runtime.ladder.rungs):
        key = f"runtime.ladder.rungs[{i}]"
        # A rung's own size is said; the main model's is only a fallback for a dynamic input.
        given = tuple(g for g in cfg.model.input.given if g[0] != "size")
        model = dataclasses.replace(cfg.model, path=rung.path, input=dataclasses.replace(
            cfg.model.input, size=rung.size or cfg.model.input.size,
            given=given + ((("size", "config"),) if rung.size else ())))
        pipeline, _, _ = _pipeline(cfg, model, clock, rung.name, key, batch)
        if pipeline.decoder.labels != main.decoder.labels:
            raise ConfigError(str(cfg.file), key, f"runs {rung.path.name}, whose labels differ "
                              "from the main model's", "give every rung a model with the same "
                              "labels (rules must mean the same on every rung)")
        rungs.append(pipeline)
    secondaries = tuple(_secondary(cfg, i, main.decoder.labels)
                        for i in range(len(cfg.model.secondary)))
    stage = _user_stage(cfg) if cfg.model.stage is not None else None
    if cfg.model.escalate is not None:
        heavy, _, _ = _pipeline(cfg, cfg.model.escalate.model, clock, "escalate",
                                "model.escalate")
        if heavy.decoder.labels != main.decoder.labels:
            raise ConfigError(str(cfg.file), "model.escalate", f"runs "
                              f"{cfg.model.escalate.model.path.name}, whose labels differ from "
                              "the main model's", "escalate to a model with the same labels "
                              "(its detections replace the main model's)")
        main.escalation = Escalation(cfg.model.escalate, heavy, cfg.rules)
    for pipeline in rungs:
        pipeline.secondaries, pipeline.user_stage = secondaries, stage
    main.input_note = f"{plan.describe()} ({plan.origin})"   # said at ready
    return rungs, info


def _user_stage(cfg: Config) -> UserStage:
    """[model.stage]: the function, and a session per model it names (opened once, here)."""
    from edgert.postprocess.user import load_callable

    spec = cfg.model.stage
    sessions = {}
    for name, path in spec.sessions.items():
        session, _ = load_model(path, cfg.runtime, str(cfg.file), f"model.stage.sessions.{name}")
        sessions[name] = UserSession(name, session)
    return UserStage(load_callable(spec.function), sessions, spec.function, spec.options)


def expected_frame_hw(cfg: Config) -> tuple[int, int]:
    """The frame size to warm up at when no frame is at hand (`edgert check`)."""
    src = cfg.source
    if src.kind == "pattern":
        return src.size
    if src.kind == "file":
        cap = cv2.VideoCapture(src.target, cv2.CAP_FFMPEG)
        try:
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        if w > 0 and h > 0:
            return h, w
    return 480, 640


def warm_up(cfg: Config, rungs: list[Pipeline], info: ModelInfo, image: np.ndarray,
            clock: Clock, runs: int = 3) -> list[float]:
    """Pay session initialisation, kernel compilation and first-run costs of every rung on
    `image` (the source's real first frame where there is one), touching no rule state and
    making no record. Returns each rung's unloaded median inference (s), for the ladder."""
    # Pixel zones and lines: the frame size is known now (each other source's at its own).
    check_frame(cfg, image.shape[:2], cfg.sources[0].id)
    if cfg.rules and cfg.runtime.kernels == "numba":
        decide_kernels.warm()
    frame = Frame(-1, image, 0.0, clock.now(), source_id=cfg.sources[0].id)
    board = new_board()
    baseline = []
    scene = Scene.scratch(cfg)   # warm-up frames must not touch any source's rules or tracks
    for n, pipeline in enumerate(rungs):
        key = "model.input" if n == 0 else f"runtime.ladder.rungs[{n - 1}]"
        path = info.path if n == 0 else cfg.runtime.ladder.rungs[n - 1].path
        infer_ms = []
        try:
            for i in range(runs):
                t = Ticket(frame, Deadline.never(), pipeline.runner, scene, board, clock.now())
                result = pipeline.process(t)
                if result.stage == "postprocess" and result.error:
                    raise ModelError(f"{cfg.file}: model.family {cfg.model.family!r} failed on "
                                     f"the first inference ({result.error}); fix the decoder "
                                     "or the family")
                if result.error:
                    fed = getattr(pipeline.preprocess, "tensor", None)   # both preprocessors
                    at = f" at {list(fed.shape)}" if fed is not None else ""
                    raise ModelError(f"{cfg.file}: {key}: the first inference of {path}{at} "
                                     f"failed ({result.error}); check the size and layout in "
                                     f"{key} against what the model was exported for")
                infer_ms.append(result.latency_ms["infer"])
            _warm_batches(pipeline, image, runs)
        finally:
            # First runs are slow outliers: learn stage costs from real frames only.
            pipeline.costs = StageCosts(quantile=pipeline.cost_quantile)
        later = infer_ms[1:] or infer_ms
        baseline.append(sorted(later)[len(later) // 2] / 1e3)
    for stage in rungs[0].secondaries if rungs else ():
        warm_secondary(stage, image)
    esc = rungs[0].escalation if rungs else None
    if esc is not None:   # pays its first runs now; its last run's cost stands in until learned
        for i in range(runs):
            t = Ticket(frame, Deadline.never(), esc.heavy.runner, scene, board, clock.now())
            if not isinstance(esc.run(t, clock.now), Detections):
                raise ModelError(f"{cfg.file}: model.escalate: {esc.cfg.model.path} failed on "
                                 "the first frame; check it and [model.escalate.input]")
        esc.heavy.costs = StageCosts(quantile=esc.heavy.cost_quantile)
        esc.runs = esc.unsure_frames = esc.no_time = esc.errors = 0   # real frames only
    return baseline


def _warm_batches(pipeline: Pipeline, image: np.ndarray, runs: int) -> None:
    """Run every batch size once or more, so none is first paid for on a frame's time, and
    keep each size's median as its cost until real batches have taught it."""
    if pipeline.batch_tensor is None:
        return
    one, _ = pipeline.preprocess(Frame(-1, image, 0.0, 0.0))
    tensor = pipeline.batch_tensor
    tensor[:] = one[0]
    for k in range(1, pipeline.max_batch + 1):   # 1 too: the others are scaled by it
        took = []
        for _ in range(runs + 1):
            result = pipeline.runner.run(tensor[:k])
            if result.outputs is None:
                raise ModelError(f"{pipeline.name}: a batch of {k} failed ({result.error})")
            took.append(result.seconds)
        later = sorted(took[1:])
        pipeline.batch_seed[k] = later[len(later) // 2]


def warm_secondary(stage: SecondaryStage, image: np.ndarray) -> None:
    """Compile the crop kernel and run the session at one crop and at a full batch, so no
    frame pays for either; the costs are then learned from real frames."""
    h, w = image.shape[:2]
    box = np.array([w * 0.25, h * 0.25, w * 0.75, h * 0.75], np.float32)
    for k in sorted({1, stage.batch}):
        for j in range(k):
            stage.crops.write(j, image, stage.crops.box(box, (h, w)))
        for _ in range(2):
            result = stage.runner.run(stage.crops.tensor[:k])
            if result.outputs is None:
                raise ModelError(f"{stage.cfg.model.path}: secondary model {stage.name!r} failed "
                                 f"on its first run ({result.error}); check it and its "
                                 "[model.secondary.input]")
            stage.read(result.outputs, 0)
    stage.costs = StageCosts(quantile=stage.costs.quantile, probe_after=stage.costs.probe_after)
