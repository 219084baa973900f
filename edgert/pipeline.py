"""One frame through the stages under its deadline: preprocess → infer → postprocess → decide. No I/O."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgert.costs import StageCosts
from edgert.clock import Clock
from edgert.decide import Outcome, RuleEngine
from edgert.frame import Detections, Frame
from edgert.guard import Ticket
from edgert.infer import InferenceRunner
from edgert.infer.escalate import Escalation
from edgert.infer.secondary import SecondaryStage, run_all
from edgert.infer.stage import UserStage
from edgert.publish.herald import SEND_MARGIN_S
from edgert.postprocess import Decoder
from edgert.preprocess.motion import MotionGate
from edgert.preprocess import Transform

Preprocess = Callable[[Frame], "tuple[np.ndarray, Transform]"]

# What must still run after each stage before the record can go out.
# The secondary stage is not among them: it shrinks to what is left, down to nothing.
_AFTER = {"preprocess": ("infer", "postprocess", "decide", "publish"),
          "infer": ("postprocess", "decide", "publish"),
          "postprocess": ("decide", "publish"),
          "decide": ("publish",)}
_AFTER_SECONDARY = ("decide", "publish")


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What became of one frame.

    For an overrun, `cause` says why — `stale` (too old before any work), `predicted` (the
    stage was not started: its learned cost no longer fit), `deadline` (it passed during or
    right after `stage`), `error` — and `stage` says where.
    """

    status: str                       # ok | overrun
    latency_ms: dict[str, float]
    detections: Detections | None = None
    outcome: Outcome | None = None
    cause: str | None = None
    stage: str | None = None
    error: str | None = None
    reused: bool = False              # motion gating: the last inferred frame's detections
    escalated: bool = False           # the heavier model decided (the primary was unsure)


def finite(det: Detections) -> Detections:
    """Drop detections with NaN/inf (an overflowing fp16/int8 model): records must stay JSON."""
    # One sum is finite when every value is (barring overflow, which takes the slow path).
    if math.isfinite(float(det.scores.sum()) + float(det.boxes.sum())):
        return det
    ok = np.isfinite(det.scores)
    if det.has_boxes:
        ok &= np.isfinite(det.boxes).all(axis=1)
    if ok.all():
        return det
    return Detections(det.boxes[ok], det.scores[ok], det.class_ids[ok], det.labels)


class Pipeline:
    """Holds one model's stages, built by the runtime; `process` is the whole per-frame data path."""

    def __init__(self, preprocess: Preprocess, runner: InferenceRunner, decoder: Decoder,
                 rules: RuleEngine, clock: Clock, name: str = "main",
                 cost_quantile: float = 0.5) -> None:
        self.preprocess, self.runner, self.decoder, self.rules = preprocess, runner, decoder, rules
        self.clock = clock
        self.name, self.cost_quantile = name, cost_quantile
        # The numba decoder drops non-finite values itself; any other is checked here.
        self._decoder_finite = getattr(decoder, "outputs_finite", False)
        self.costs = StageCosts(quantile=cost_quantile)   # per pipeline: rungs' costs differ
        self.secondaries: tuple[SecondaryStage, ...] = ()   # models on crops, shared by rungs
        self.user_stage: UserStage | None = None             # the user's cascade, after them
        self.gate: MotionGate | None = None   # [motion]: made at warm-up, at the frame's size
        self.escalation: Escalation | None = None   # [model.escalate]: the main rung only
        self.input_note = ""   # the main model's input and where its description came from
        self._last: Detections | None = None  # what the gate lets an unchanged frame reuse

    def _overrun(self, t: Ticket, cause: str, stage: str, error: str | None = None) -> FrameResult:
        self.rules.missed(t.frame.media_s)   # the tracker coasts; no rule state moves
        return FrameResult("overrun", t.latency_ms, cause=cause, stage=stage, error=error)

    def _start(self, t: Ticket, stage: str, now: float, probe: bool) -> FrameResult | None:
        """Before a stage: an overrun result if it must not start, else None (and mark it)."""
        left = t.deadline.at - now
        if left <= 0.0 or t.lost:
            return self._overrun(t, "deadline", stage)
        if not probe and not self.costs.fits(stage, left, _AFTER[stage]):
            return self._overrun(t, "predicted", stage)
        t.enter(stage, now)
        return None

    def _reuse(self, t: Ticket, t0: float) -> FrameResult:
        """An unchanged frame: no model runs; the rules see the last inferred detections."""
        now = self.clock.now
        t1 = now()
        t.done("preprocess", (t1 - t0) * 1e3)   # the gate's own look at the frame
        stop = self._start(t, "decide", t1, False)
        if stop:
            return stop
        det = self._last
        outcome = self.rules.decide(det, (t.frame.height, t.frame.width), t.frame.media_s,
                                    reused=True)
        if outcome.track_ids is not None:
            det = dataclasses.replace(det, track_ids=outcome.track_ids)
        t2 = now()
        t.done("decide", (t2 - t1) * 1e3)
        t.enter("publish", t2)
        return FrameResult("ok", t.latency_ms, det, outcome, reused=True)

    def _after_decode(self, t: Ticket, det: Detections, t0: float, probe: bool
                      ) -> tuple[Detections, bool, FrameResult | None]:
        """The optional work between decode and rules, each part only while the deadline
        allows: the heavier model where the primary is unsure, then models on crops and the
        user's stage. The detections, whether the heavier model gave them, and an overrun
        result if the deadline (or the user's stage) stopped the frame."""
        costs, now = self.costs, self.clock.now
        # What must be left when the optional work ends: the rules and the record at their
        # expected costs, the send margin, and as much again for the rules, whose own median
        # is all the loop knows of them (optional work that ate their slack lost whole frames).
        reserve = sum(costs.expected(s) for s in _AFTER_SECONDARY) + costs.expected("decide") \
            + SEND_MARGIN_S
        escalated = False
        esc = self.escalation
        if esc is not None and esc.unsure(det):
            esc.unsure_frames += 1
            if esc.cost() <= t.deadline.at - t0 - reserve or probe:
                t.enter("secondary", t0)
                out = esc.run(t, now)
                t1 = now()
                t.done("secondary", (t1 - t0) * 1e3)   # where the board says the time went
                t.latency_ms["escalate"] = (t1 - t0) * 1e3
                if out == "deadline":
                    return det, False, self._overrun(t, "deadline", "secondary")
                if isinstance(out, Detections):
                    det, escalated = out, True
                else:   # the heavier model failed: the primary's detections stand
                    esc.errors += 1
                t0 = t1
            else:
                esc.no_time += 1
        if (self.secondaries and len(det)) or self.user_stage is not None:
            t.enter("secondary", t0)
            det, failed = self._secondary(t, det, reserve, probe)
            t1 = now()
            t.done("secondary", (t1 - t0) * 1e3)
            costs.observe("secondary", t1 - t0, stopped=failed == "deadline")
            if failed == "deadline":
                return det, escalated, self._overrun(t, "deadline", "secondary")
            if failed is not None:
                return det, escalated, self._overrun(t, "error", "secondary", failed)
        return det, escalated, None

    def _secondary(self, t: Ticket, det: Detections, reserve: float,
                   probe: bool) -> tuple[Detections, str | None]:
        """Models on crops, then the user's stage: the detections, and what stopped them."""
        if self.secondaries and len(det):
            det, in_time = run_all(self.secondaries, t, det, reserve, self.clock.now, probe)
            if not in_time:
                return det, "deadline"
        if self.user_stage is not None:
            return self.user_stage(t, det, reserve, self.clock.now)
        return det, None

    def process(self, t: Ticket) -> FrameResult:
        """Run the stages for `t` unless its deadline passes or a stage is expected not to fit.

        Each stage's time is learned into `self.costs`. The ticket's `latency_ms` fills as stages
        end, so the guard can report where the time went if it publishes first.
        """
        costs, now = self.costs, self.clock.now
        t0 = now()
        if t.deadline.expired(t0):
            return self._overrun(t, "stale", "preprocess")
        probe = costs.probe()
        stop = self._start(t, "preprocess", t0, probe)
        if stop:
            return stop
        gate = self.gate
        if gate is not None and self._last is not None and not gate.due(t.frame.media_s) \
                and not gate.changed(t.frame.image):
            return self._reuse(t, t0)
        tensor, transform = self.preprocess(t.frame)
        t1 = now()
        t.done("preprocess", (t1 - t0) * 1e3)
        costs.observe("preprocess", t1 - t0)
        stop = self._start(t, "infer", t1, probe)
        if stop:
            return stop
        run = self.runner.run(tensor)
        t2 = now()
        t.done("infer", (t2 - t1) * 1e3)
        costs.observe("infer", t2 - t1, stopped=run.stopped)
        if run.outputs is None:
            if run.stopped:
                return self._overrun(t, "deadline", "infer")
            return self._overrun(t, "error", "infer", run.error)
        stop = self._start(t, "postprocess", t2, probe)
        if stop:
            return stop
        try:
            detections = self.decoder(run.outputs, transform)
            if not self._decoder_finite:
                detections = finite(detections)
        except Exception as e:  # a user decoder, or a model emitting garbage: never fatal
            t.done("postprocess", (now() - t2) * 1e3)
            return self._overrun(t, "error", "postprocess", f"{type(e).__name__}: {e}"[:200])
        t3 = now()
        t.done("postprocess", (t3 - t2) * 1e3)
        costs.observe("postprocess", t3 - t2)
        detections, escalated, stop = self._after_decode(t, detections, t3, probe)
        if stop:
            return stop
        if gate is not None:   # the reference the next frames are compared with
            gate.inferred(t.frame.image, t.frame.media_s)
            self._last = detections
        t3 = now()
        stop = self._start(t, "decide", t3, probe)
        if stop:
            return stop
        outcome = self.rules.decide(detections, (t.frame.height, t.frame.width), t.frame.media_s)
        if outcome.track_ids is not None:
            detections = dataclasses.replace(detections, track_ids=outcome.track_ids)
        t4 = now()
        t.done("decide", (t4 - t3) * 1e3)
        costs.observe("decide", t4 - t3)
        costs.passed()
        t.enter("publish", t4)
        return FrameResult("ok", t.latency_ms, detections, outcome, escalated=escalated)
