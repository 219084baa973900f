"""The loop: wires the stages from config, warms up, and turns each frame into one published record."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import uuid
from time import thread_time
from typing import Any

import cv2
import numpy as np

from edgert.config.types import Config, ModelConfig
from edgert.costs import StageCosts
from edgert.deadline import Deadline, monotonic, wall
from edgert.decide import RuleEngine
from edgert.errors import ConfigError, ModelError, SourceUnavailable
from edgert.frame import Decision, Frame
from edgert.guard import Guard, Ticket
from edgert.ladder import Ladder
from edgert.infer import InferenceRunner, ModelInfo, load_model
from edgert.pipeline import FrameResult, Pipeline, Preprocess
from edgert.postprocess import make_decoder
from edgert.preprocess import ReferencePreprocessor
from edgert.publish import JsonlOutput, Output, Publisher, StdoutOutput
from edgert.service.notify import Notifier
from edgert.source import FrameSource, open_source
from edgert.records import Recorder, RunSummary

log = logging.getLogger("edgert")

SCHEMA_METRICS = "edgert.metrics/1"
GIL_SWITCH_S = 0.0005   # how long the loop may hold the GIL while the guard waits for it
# An `ok` record is sent only if its send is expected to end this long before the deadline
# (beyond the learned cost of building and sending it): the reader on the other end of a
# pipe or socket needs a moment to be woken, and the promise is judged where it reads.
SEND_MARGIN_S = 0.0005


def input_hw(cfg: Config, info: ModelInfo, model: ModelConfig | None = None,
             key: str = "model") -> tuple[int, int]:
    """The model's input size: the file's static shape, else the config; never both disagreeing."""
    model = model or cfg.model
    static, wanted = info.static_hw, model.input.size
    where = "model.input.size" if key == "model" else f"{key}.size"
    if static and wanted and tuple(wanted) != static:
        raise ModelError(f"{cfg.file}: {where} is {list(wanted)} but {info.path} has a "
                         f"fixed input of {list(static)}; remove {where} or fix it")
    if static:
        return static
    if wanted:
        return wanted
    raise ModelError(f"{cfg.file}: {where} is missing and {info.path} has a dynamic "
                     f"input shape; set {where} = [height, width]")


def make_output(cfg: Config, index: int) -> Output:
    out = cfg.outputs[index]
    if out.type == "jsonl" and out.path is not None:
        try:
            return JsonlOutput.open(out.path, out.flush_every)
        except OSError as e:
            raise ConfigError(str(cfg.file), f"outputs[{index}].path", f"cannot be opened for "
                              f"appending ({e.strerror})", "point it at a writable file") from None
    if out.type == "serial" and out.serial is not None:
        from edgert.publish.serial import SerialOutput, open_failure   # loads pyserial
        try:
            return SerialOutput.open(out.serial, f"serial:{out.serial.port}", cfg.fail_safe.action)
        except (OSError, ValueError) as e:   # serial.SerialException is an OSError
            problem, fix = open_failure(out.serial, e)
            raise ConfigError(str(cfg.file), f"outputs[{index}].port", problem, fix) from None
    if out.type == "mqtt" and out.mqtt is not None:
        from edgert.publish.mqtt import MqttOutput, SetupError   # loads paho and sqlite3
        try:
            return MqttOutput.open(out.mqtt, f"mqtt:{out.mqtt.host}:{out.mqtt.port}", cfg.device_id)
        except SetupError as e:
            raise ConfigError(str(cfg.file), f"outputs[{index}].{e.key}", e.problem, e.fix) from None
    return StdoutOutput()   # validation admits only stdout, jsonl, serial and mqtt


def make_outputs(cfg: Config) -> list[Output]:
    """Every configured output, or none: if one cannot open, those already open are closed
    (a serial output sends its shutdown frame) before the error goes up."""
    made: list[Output] = []
    try:
        for i in range(len(cfg.outputs)):
            made.append(make_output(cfg, i))
    except BaseException:
        Publisher(made).close()
        raise
    return made


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


def _pipeline(cfg: Config, model: ModelConfig, rules: RuleEngine, name: str,
              key: str) -> tuple[Pipeline, ModelInfo]:
    """One model's stages: session, decoder, preprocessing (fused numba where it can write)."""
    session, info = load_model(model.path, cfg.runtime, str(cfg.file))
    hw = input_hw(cfg, info, model, key)
    decoder = make_decoder(model, info, hw, cfg.runtime.kernels)
    dtype = info.input_dtype if info.input_dtype != np.int8 else np.uint8
    pre: Preprocess
    if cfg.runtime.kernels == "numba" and dtype in (np.float32, np.float16, np.uint8):
        from edgert.preprocess.fused import FusedPreprocessor
        pre = FusedPreprocessor(model.input, hw, dtype)
    else:
        pre = ReferencePreprocessor(model.input, hw, dtype)
    return Pipeline(pre, InferenceRunner(session, info.input_name), decoder, rules, name,
                    cfg.runtime.cost_quantile), info


class Runtime:
    """Owns the parts for one run; only this class knows which concrete stage classes exist."""

    def __init__(self, cfg: Config, source: FrameSource, rungs: list[Pipeline], info: ModelInfo,
                 publisher: Publisher, enforce_budget: bool = True) -> None:
        self.cfg, self.source, self.rungs, self.info = cfg, source, rungs, info
        self.publisher, self.enforce_budget = publisher, enforce_budget
        self.run_id = uuid.uuid4().hex[:12]
        self.records = Recorder(cfg, self.run_id, publisher)
        self.summary = self.records.summary
        self.budget_s = cfg.runtime.budget_ms / 1e3
        self.notifier = Notifier.from_env()
        self._errors: dict[str, int] = {}
        self._guard: Guard | None = None
        self.ladder: Ladder | None = None   # made at warm-up, from the rungs' measured costs

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of the rung in force."""
        return self.rungs[self.ladder.rung if self.ladder else 0]

    @classmethod
    def build(cls, cfg: Config, *, enforce_budget: bool = True,
              outputs: list[Output] | None = None, source: FrameSource | None = None) -> Runtime:
        rules = RuleEngine(cfg.rules, cfg.zones)
        main, info = _pipeline(cfg, cfg.model, rules, "main", "model")
        check_rule_labels(cfg, main.decoder.labels)
        rungs = [main]
        for i, rung in enumerate(cfg.runtime.ladder.rungs):
            key = f"runtime.ladder.rungs[{i}]"
            size = rung.size or cfg.model.input.size
            model = dataclasses.replace(cfg.model, path=rung.path,
                                        input=dataclasses.replace(cfg.model.input, size=size))
            pipeline, _ = _pipeline(cfg, model, rules, rung.name, key)
            if pipeline.decoder.labels != main.decoder.labels:
                raise ConfigError(str(cfg.file), key, f"runs {rung.path.name}, whose labels differ "
                                  "from the main model's", "give every rung a model with the same "
                                  "labels (rules must mean the same on every rung)")
            rungs.append(pipeline)
        source = source or open_source(cfg.source)   # before outputs: nothing to close if it fails
        if outputs is None:
            outputs = make_outputs(cfg)
        return cls(cfg, source, rungs, info, Publisher(outputs), enforce_budget)

    @property
    def guard(self) -> Guard:
        """Started on first use, so `edgert check` and warm-up never start a real-time thread."""
        if self._guard is None:
            # The guard needs the GIL at the deadline; the default 5 ms switch interval would
            # let a loop busy in Python code hold it that long.
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
            self._guard = Guard(self._at_deadline,
                                realtime=self.cfg.runtime.guard_priority == "realtime")
        return self._guard

    def warm_up(self, runs: int = 3) -> None:
        """Pay session initialisation and first-run costs of every rung before saying ready
        (no record is made), and measure each rung's unloaded inference cost for the ladder."""
        h, w = expected_frame_hw(self.cfg)
        image = np.full((h, w, 3), 114, np.uint8)
        frame = Frame(-1, image, wall(), monotonic())
        baseline = []
        for pipeline in self.rungs:
            state = pipeline.rules
            pipeline.rules = RuleEngine((), ())   # warm-up frames must not touch debounce
            infer_ms = []
            try:
                for _ in range(runs):
                    result = pipeline.process(Ticket(frame, Deadline.never(), pipeline.runner))
                    if result.stage == "postprocess" and result.error:
                        raise ModelError(f"{self.cfg.file}: model.family {self.cfg.model.family!r} "
                                         f"failed on the first inference ({result.error}); fix "
                                         "the decoder or the family")
                    if result.error:
                        raise ModelError(f"{self.info.path}: the first inference failed "
                                         f"({result.error}); check the model and model.input")
                    infer_ms.append(result.latency_ms["infer"])
            finally:
                pipeline.rules = state
                # First runs are slow outliers: learn stage costs from real frames only.
                pipeline.costs = StageCosts(quantile=pipeline.cost_quantile)
            later = infer_ms[1:] or infer_ms
            baseline.append(sorted(later)[len(later) // 2] / 1e3)
        self.ladder = Ladder(self.cfg.runtime.ladder, self.budget_s, baseline)

    def _deadline(self, frame: Frame) -> Deadline:
        if self.enforce_budget:
            return Deadline.after(frame.captured_mono, self.budget_s)
        return Deadline(at=float("inf"), budget_s=self.budget_s)

    def _at_deadline(self, t: Ticket, late_s: float) -> None:
        """The guard's side: publish the overrun record while the loop is still busy."""
        lat = dict(t.latency_ms)
        lat[t.stage] = (monotonic() - t.stage_t0) * 1e3
        self.records.overrun(t, "deadline", t.stage, lat, late_s=late_s)
        self.summary.guard_late.add({"late": late_s * 1e3})

    def step(self, frame: Frame) -> Decision | None:
        """One frame, end to end, including publishing. None when the guard published it."""
        pipeline = self.pipeline
        t = Ticket(frame, self._deadline(frame), pipeline.runner)
        self.guard.arm(t)
        result = pipeline.process(t)
        if result.error:
            self._report_error(result)
        decision = self._publish(t, pipeline, result)
        if self.ladder is not None and self.ladder.top:
            ok = decision is not None and decision.status == "ok"
            # The rung's typical inference now (its learned median), not this frame's: one
            # frame's jitter must not decide a climb.
            infer_s = pipeline.costs.expected("infer") or result.latency_ms.get("infer", 0.0) / 1e3
            switch = self.ladder.record(
                not ok, infer_s,
                decision.latency_ms["total"] / 1e3 if ok else 0.0)   # type: ignore[union-attr]
            if switch is not None:
                name = self.rungs[switch.rung].name
                with self.guard.lock:
                    self.records.rung = name if switch.rung else None
                    self._report_state()
                if switch.down:
                    log.warning("degraded: stepping down to rung %r (%s)", name, switch.reason)
                else:
                    log.info("stepping up to rung %r (%s)", name, switch.reason)
        return decision

    def _publish(self, t: Ticket, pipeline: Pipeline, result: FrameResult) -> Decision | None:
        """Claim the frame's record and send it: `ok` only with time left to send it."""
        guard = self.guard
        if result.status != "ok":
            with guard.lock:
                if guard.claim(t):
                    return self.records.overrun(t, result.cause or "error", result.stage or "?",
                                                result.latency_ms, result.error)
            return None
        decided = monotonic()
        outcome = result.outcome
        dets = tuple(result.detections.to_records()) if result.detections else ()
        costs, records = pipeline.costs, self.records
        with guard.urgent(t), guard.lock:
            t0, cpu0 = monotonic(), thread_time()
            if guard.claim(t, t0 + costs.expected("publish") + SEND_MARGIN_S):
                decision = records.decision(t, "ok", outcome.action, result.latency_ms, decided,
                                            outcome.rule, dets)
                record = decision.to_record()
                line = self.publisher.serialize(record)
                if t.deadline.remaining() < SEND_MARGIN_S:
                    # Claimed in time, but building the record took longer than expected (a
                    # stall, the GIL held elsewhere): too close to the deadline to be sure the
                    # bytes are out before it, so it goes out as an overrun, never a late `ok`.
                    pipeline.rules.retract()
                    return records.overrun(t, "deadline", "publish", result.latency_ms)
                records.send(decision, record, line)
                if t.deadline.expired():
                    self.summary.late_ok += 1
                # CPU time, not wall time: near the deadline the send runs at real-time
                # priority and cannot be preempted, while far from it a preemption costs
                # nothing; wall time would let a loaded spell inflate the margin for good.
                costs.observe("publish", thread_time() - cpu0)
                return decision
            pipeline.rules.retract()
            if guard.claim(t):   # not enough time left to send it: the policy's record now
                return records.overrun(t, "predicted", "publish", result.latency_ms)
        return None   # the guard published at the deadline

    def _report_state(self) -> None:
        """Online or degraded (a lighter rung, a fallback provider), to outputs that report it."""
        detail: dict[str, Any] = {}
        if self.ladder is not None and self.ladder.rung:
            detail["rung"] = self.rungs[self.ladder.rung].name
        if self.info.degraded:
            detail["providers_not_bound"] = list(self.info.not_bound)
        self.publisher.set_state("degraded" if detail else "online", **detail)

    def _metrics(self, interval_s: float) -> None:
        """The periodic metrics record (the contract's `metrics` topic): counts since start and
        latency percentiles over the last 1,024 frames (cheap enough to run between frames)."""
        s = self.summary
        record = {"schema": SCHEMA_METRICS, "device_id": self.cfg.device_id, "run_id": self.run_id,
                  "at": round(wall(), 3), "interval_s": interval_s, "records": s.records,
                  "ok": s.ok, "fail_safe": s.fail_safe, "hold_last": s.hold_last,
                  "skipped": s.skipped, "late_ok": s.late_ok,
                  "misses": {k: dict(v) for k, v in s.misses.items()},
                  "latency_ms": s.latency.percentiles(last=1024),
                  "rung": self.pipeline.name, "source": _stats_dict(self.source.stats()),
                  "outputs": self.publisher.stats()}
        self.publisher.metrics(self.publisher.serialize(record))

    def _report_error(self, result: FrameResult) -> None:
        """A failing model or decoder is logged on its first frame and every 1000th after."""
        key = f"{result.stage}_error"
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
        guard = self.guard
        started = monotonic()
        end = started + duration_s if duration_s is not None else float("inf")
        self.notifier.send("READY=1")
        log.info("ready: device %s, model %s (%s), providers %s%s, budget %g ms, guard %s, run %s",
                 self.cfg.device_id, self.info.path.name, self.cfg.model.family,
                 ",".join(self.info.providers), " (degraded)" if self.info.degraded else "",
                 self.cfg.runtime.budget_ms, guard.priority, self.run_id)
        if self.info.degraded:
            self._report_state()
        every = self.cfg.runtime.metrics_interval_s
        next_metrics = started + every if every > 0 else float("inf")
        try:
            while not stop.is_set() and monotonic() < end:
                if monotonic() >= next_metrics:
                    self._metrics(every)
                    next_metrics = monotonic() + every
                if max_records is not None and self.summary.records >= max_records:
                    break
                frame = self.source.read(min(0.1, max(0.0, end - monotonic())))
                if frame is None:
                    if self.source.ended:
                        break
                    if self.source.stats().state == "reopening":
                        # No frames, so no records: an actuator must not keep acting on the
                        # last one. Repeats send nothing until an ok decision came between.
                        with guard.lock:
                            self.publisher.safe_state("source_lost")
                    continue
                self.step(frame)
        finally:
            self.notifier.send("STOPPING=1")
            s = self.summary
            s.seconds = monotonic() - started
            s.source = _stats_dict(self.source.stats())
            self.close()
            s.extra["outputs"] = self.publisher.stats()
            s.extra["guard"] = {"priority": guard.priority, "fired": guard.fired,
                                "runs_stopped": sum(p.runner.terminated for p in self.rungs)}
            s.extra["expected_ms"] = {p.name: p.costs.snapshot() for p in self.rungs}
            if self.ladder is not None and self.ladder.top:
                s.extra["ladder"] = {"switches": self.ladder.switches, "rung": self.pipeline.name,
                                     "frames": {p.name: n for p, n in
                                                zip(self.rungs, self.ladder.frames)}}
        return self.summary

    def close(self) -> None:
        if self._guard is not None:
            self._guard.close()
        self.publisher.close()
        self.source.close()
        self.notifier.close()


def _stats_dict(stats: object) -> dict[str, Any]:
    names = getattr(stats, "__dataclass_fields__", None) or getattr(stats, "__slots__", ())
    return {n: getattr(stats, n) for n in names}

