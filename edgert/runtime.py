"""The loop: wires the stages from config, warms up, and turns each frame into one published record."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edgert.config.types import Config
from edgert.deadline import Deadline, monotonic, wall
from edgert.decide import RuleEngine
from edgert.errors import ConfigError, ModelError, SourceUnavailable
from edgert.frame import STAGES, Decision, Frame
from edgert.infer import InferenceRunner, ModelInfo, load_model
from edgert.pipeline import FrameResult, Pipeline, Preprocess
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor
from edgert.publish import JsonlOutput, Output, Publisher, StdoutOutput
from edgert.service.notify import Notifier
from edgert.source import FrameSource, open_source
from edgert.stats import LatencyLog

log = logging.getLogger("edgert")


@dataclass
class RunSummary:
    """Counts for the end-of-run report; mutable because the loop owns it alone."""

    records: int = 0
    ok: int = 0
    fail_safe: int = 0
    skipped: int = 0
    causes: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    latency: LatencyLog = field(default_factory=LatencyLog)
    seconds: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "ok": self.ok, "fail_safe": self.fail_safe,
                "skipped": self.skipped, "overrun_causes": dict(self.causes),
                "actions": dict(self.actions), "seconds": round(self.seconds, 3),
                "latency_ms": self.latency.percentiles(), "source": self.source}


def input_hw(cfg: Config, info: ModelInfo) -> tuple[int, int]:
    """The model's input size: the file's static shape, else the config; never both disagreeing."""
    static, wanted = info.static_hw, cfg.model.input.size
    if static and wanted and tuple(wanted) != static:
        raise ModelError(f"{cfg.file}: model.input.size is {list(wanted)} but {info.path} has a "
                         f"fixed input of {list(static)}; remove model.input.size or fix it")
    if static:
        return static
    if wanted:
        return wanted
    raise ModelError(f"{cfg.file}: model.input.size is missing and {info.path} has a dynamic "
                     "input shape; set model.input.size = [height, width]")


def make_output(cfg: Config, index: int) -> Output:
    out = cfg.outputs[index]
    if out.type == "jsonl" and out.path is not None:
        try:
            return JsonlOutput.open(out.path, out.flush_every)
        except OSError as e:
            raise ConfigError(str(cfg.file), f"outputs[{index}].path", f"cannot be opened for "
                              f"appending ({e.strerror})", "point it at a writable file") from None
    return StdoutOutput()   # validation admits only stdout and jsonl


def expected_frame_hw(cfg: Config) -> tuple[int, int]:
    """The frame size to warm up at, so the first real frame finds its buffers and resize
    tables ready instead of building them inside its deadline. Live sources say their size
    only once they deliver; 640x480 is the common camera default."""
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


def check_rule_labels(cfg: Config, labels: tuple[str, ...]) -> None:
    """A rule naming a label the model does not have would silently never fire."""
    if not labels:   # a user decoder that names no labels: nothing to check against
        return
    for i, rule in enumerate(cfg.rules):
        for lab in rule.labels:
            if lab not in labels:
                shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
                raise ConfigError(str(cfg.file), f"rules[{i}].labels", f"names {lab!r}, which the "
                                  f"model does not have", f"use one of its labels: {shown}")


class Runtime:
    """Owns the parts for one run; only this class knows which concrete stage classes exist."""

    def __init__(self, cfg: Config, source: FrameSource, pipeline: Pipeline, info: ModelInfo,
                 publisher: Publisher, enforce_budget: bool = True) -> None:
        self.cfg, self.source, self.pipeline, self.info = cfg, source, pipeline, info
        self.publisher, self.enforce_budget = publisher, enforce_budget
        self.run_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.summary = RunSummary()
        self.budget_s = cfg.runtime.budget_ms / 1e3
        self.notifier = Notifier.from_env()
        self._errors: dict[str, int] = {}

    @classmethod
    def build(cls, cfg: Config, *, enforce_budget: bool = True,
              outputs: list[Output] | None = None, source: FrameSource | None = None) -> Runtime:
        session, info = load_model(cfg.model.path, cfg.runtime, str(cfg.file))
        hw = input_hw(cfg, info)
        decoder = make_decoder(cfg.model, info, hw, cfg.runtime.kernels)
        check_rule_labels(cfg, decoder.labels)
        dtype = info.input_dtype if info.input_dtype != np.int8 else np.uint8
        pre: Preprocess
        if cfg.runtime.kernels == "numba" and dtype in (np.float32, np.float16, np.uint8):
            from edgert.preprocess.fused import FusedPreprocessor
            pre = FusedPreprocessor(cfg.model.input, hw, dtype)
        else:
            pre = ReferencePreprocessor(cfg.model.input, hw, dtype)
        runner = InferenceRunner(session, info.input_name)
        pipeline = Pipeline(pre, runner, decoder, RuleEngine(cfg.rules, cfg.zones))
        if outputs is None:
            outputs = [make_output(cfg, i) for i in range(len(cfg.outputs))]
        return cls(cfg, source or open_source(cfg.source), pipeline, info, Publisher(outputs),
                   enforce_budget)

    def warm_up(self, runs: int = 3) -> None:
        """Pay session initialisation and first-run costs before saying ready (no record is made)."""
        h, w = expected_frame_hw(self.cfg)
        image = np.full((h, w, 3), 114, np.uint8)
        frame = Frame(-1, image, wall(), monotonic())
        state = self.pipeline.rules
        self.pipeline.rules = RuleEngine((), ())   # warm-up frames must not touch debounce
        try:
            for _ in range(runs):
                result = self.pipeline.process(frame, Deadline.never())
                if result.cause == "postprocess_error":
                    raise ModelError(f"{self.cfg.file}: model.family {self.cfg.model.family!r} "
                                     f"failed on the first inference ({result.error}); fix the "
                                     "decoder or the family")
                if result.error:
                    raise ModelError(f"{self.info.path}: the first inference failed "
                                     f"({result.error}); check the model and model.input")
        finally:
            self.pipeline.rules = state

    def _deadline(self, frame: Frame) -> Deadline:
        if self.enforce_budget:
            return Deadline.after(frame.captured_mono, self.budget_s)
        return Deadline(at=float("inf"), budget_s=self.budget_s)

    def _record(self, frame: Frame, result: FrameResult, seq: int) -> Decision:
        s = self.summary
        extra: dict[str, Any] = {}
        if result.status == "ok" and result.outcome is not None:
            status, action, rule = "ok", result.outcome.action, result.outcome.rule
        else:
            policy = self.cfg.runtime.on_overrun
            status = "skipped" if policy == "skip" else "fail_safe"
            action = "none" if policy == "skip" else self.cfg.fail_safe.action
            rule = None
            extra["cause"] = result.cause
            s.causes[result.cause or "?"] = s.causes.get(result.cause or "?", 0) + 1
        decided = monotonic()
        # Every record carries every stage, 0 for those a late frame never reached.
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(result.latency_ms)
        # The budget runs from the capture timestamp; `capture` (grab + decode) came before it.
        lat["total"] = (decided - frame.captured_mono) * 1e3
        lat = {k: round(v, 3) for k, v in lat.items()}
        dets = tuple(result.detections.to_records()) if status == "ok" and result.detections else ()
        return Decision(device_id=self.cfg.device_id, run_id=self.run_id, seq=seq,
                        frame_id=frame.index, captured_at=frame.captured_wall,
                        decided_at=frame.captured_wall + (decided - frame.captured_mono),
                        deadline_ms=self.cfg.runtime.budget_ms, status=status, action=action,
                        latency_ms=lat, detections=dets, rule=rule, extra=extra)

    def step(self, frame: Frame) -> Decision:
        """One frame, end to end, including publishing."""
        deadline = self._deadline(frame)
        result = self.pipeline.process(frame, deadline)
        if result.error:
            self._report_error(result)
        seq = self.seq + 1
        decision = self._record(frame, result, seq)
        record = decision.to_record()
        line = self.publisher.serialize(record)
        if decision.status == "ok" and deadline.expired():
            # Decided, but too late to be acted on as if on time: checked after serialising,
            # the last work before the bytes go out.
            self.pipeline.rules.retract()
            result = FrameResult("overrun", result.latency_ms, cause="publish")
            decision = self._record(frame, result, seq)
            record = decision.to_record()
            line = self.publisher.serialize(record)
        self.publisher.publish(record, line)
        self.seq = seq
        s = self.summary
        s.records += 1
        setattr(s, decision.status, getattr(s, decision.status) + 1)
        s.actions[decision.action] = s.actions.get(decision.action, 0) + 1
        s.latency.add(decision.latency_ms)
        return decision

    def _report_error(self, result: FrameResult) -> None:
        """A failing model or decoder is logged on its first frame and every 1000th after."""
        key = result.cause or "error"
        n = self._errors.get(key, 0) + 1
        self._errors[key] = n
        if n == 1 or n % 1000 == 0:
            log.warning("%s on %d frame(s) so far: %s", key, n, result.error)

    def run(self, stop: threading.Event, max_records: int | None = None,
            duration_s: float | None = None) -> RunSummary:
        """Until stopped, the source ends, `max_records` are out or `duration_s` has passed."""
        try:
            # Warm up before the source starts: frames queued meanwhile would only be stale.
            self.warm_up()
            try:
                self.source.start()
            except SourceUnavailable as e:
                raise SourceUnavailable(f"{self.cfg.file}: source.url: {e}") from None
        except BaseException:
            self.close()
            raise
        started = monotonic()
        end = started + duration_s if duration_s is not None else float("inf")
        self.notifier.send("READY=1")
        log.info("ready: device %s, model %s (%s), providers %s%s, budget %g ms, run %s",
                 self.cfg.device_id, self.info.path.name, self.cfg.model.family,
                 ",".join(self.info.providers), " (degraded)" if self.info.degraded else "",
                 self.cfg.runtime.budget_ms, self.run_id)
        try:
            while not stop.is_set() and monotonic() < end:
                if max_records is not None and self.summary.records >= max_records:
                    break
                frame = self.source.read(min(0.1, max(0.0, end - monotonic())))
                if frame is None:
                    if self.source.ended:
                        break
                    continue
                self.step(frame)
        finally:
            self.notifier.send("STOPPING=1")
            self.summary.seconds = monotonic() - started
            self.summary.source = _stats_dict(self.source.stats())
            self.close()
        return self.summary

    def close(self) -> None:
        self.publisher.close()
        self.source.close()
        self.pipeline.runner.close()
        self.notifier.close()


def _stats_dict(stats: object) -> dict[str, Any]:
    names = getattr(stats, "__dataclass_fields__", None) or getattr(stats, "__slots__", ())
    return {n: getattr(stats, n) for n in names}

