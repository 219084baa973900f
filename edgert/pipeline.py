"""Frames through the stages under their deadlines: preprocess → infer → postprocess → decide. No I/O.

One frame at a time (`process`), or several frames of different sources through one model run
(`process_batch`), each frame then decoded and decided on its own, against its own source's
state (`Ticket.scene`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgert.costs import StageCosts
from edgert.clock import Clock
from edgert.decide import Outcome
from edgert.frame import Detections, Frame
from edgert.guard import Ticket
from edgert.infer import InferenceRunner
from edgert.infer.escalate import Escalation
from edgert.infer.secondary import SecondaryStage, run_all
from edgert.infer.stage import UserStage
from edgert.publish.herald import SEND_MARGIN_S
from edgert.postprocess import Decoder
from edgert.preprocess import Transform

Preprocess = Callable[[Frame], "tuple[np.ndarray, Transform]"]
# A source's frames keep one preprocessor: it plans its resize tables once per frame size, so
# cameras of different sizes taking turns must not share one.
MakePreprocess = Callable[[], Preprocess]

# What must still run after each stage before the record can go out.
# The secondary stage is not among them: it shrinks to what is left, down to nothing.
_AFTER = {"preprocess": ("infer", "postprocess", "decide", "publish"),
          "infer": ("postprocess", "decide", "publish"),
          "postprocess": ("decide", "publish"),
          "decide": ("publish",)}
_AFTER_SECONDARY = ("decide", "publish")
INF = float("inf")
BATCH_SAFETY = 1.25   # a batch's learned cost is a percentile of the past, not a promise


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

    @property
    def again(self) -> bool:
        """A batch was stopped at another frame's deadline before this one's: run it again."""
        return self.cause == "again"


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

    def __init__(self, make_preprocess: MakePreprocess, runner: InferenceRunner, decoder: Decoder,
                 clock: Clock, name: str = "main", cost_quantile: float = 0.5) -> None:
        self.make_preprocess, self.runner, self.decoder = make_preprocess, runner, decoder
        self.preprocess = make_preprocess()   # the first source's (and warm-up's)
        self._pre: dict[str, Preprocess] = {}
        self.clock = clock
        self.name, self.cost_quantile = name, cost_quantile
        # The numba decoder drops non-finite values itself; any other is checked here.
        self._decoder_finite = getattr(decoder, "outputs_finite", False)
        self.costs = StageCosts(quantile=cost_quantile)   # per pipeline: rungs' costs differ
        self.secondaries: tuple[SecondaryStage, ...] = ()   # models on crops, shared by rungs
        self.user_stage: UserStage | None = None             # the user's cascade, after them
        self.escalation: Escalation | None = None   # [model.escalate]: the main rung only
        self.input_note = ""   # the main model's input and where its description came from
        # Batching (several sources): the largest batch the session takes, the tensor a batch
        # is gathered in (made at warm-up), and each size's cost measured there, which stands
        # in until real batches have taught `costs` ("infer@k").
        self.max_batch = 1
        self.batch_tensor: np.ndarray | None = None
        self.batch_seed: dict[int, float] = {}
        self.batch_note = ""   # how frames of several sources run: said at ready

    def pre(self, source_id: str) -> Preprocess:
        """The preprocessor of `source_id`'s frames (made at warm-up for every source)."""
        pre = self._pre.get(source_id)
        if pre is None:
            pre = self._pre[source_id] = self.preprocess if not self._pre else \
                self.make_preprocess()
        return pre

    def _overrun(self, t: Ticket, cause: str, stage: str, error: str | None = None) -> FrameResult:
        t.scene.rules.missed(t.frame.media_s)   # the tracker coasts; no rule state moves
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
        det = t.scene.last
        outcome = t.scene.rules.decide(det, (t.frame.height, t.frame.width), t.frame.media_s,
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
        if self._unchanged(t):
            return self._reuse(t, t0)
        tensor, transform = self.pre(t.frame.source_id)(t.frame)
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
        return self._finish(t, run.outputs, transform, t2, probe)

    def _unchanged(self, t: Ticket) -> bool:
        """Motion gating: the frame is too like its source's last inferred one to run the model."""
        scene = t.scene
        gate = scene.gate
        return gate is not None and scene.last is not None and not gate.due(t.frame.media_s) \
            and not gate.changed(t.frame.image)

    def _finish(self, t: Ticket, outputs: list[np.ndarray], transform: Transform, t2: float,
                probe: bool) -> FrameResult:
        """From the model's outputs for `t`'s frame to its outcome: decode, the optional
        work, the rules."""
        costs, now = self.costs, self.clock.now
        stop = self._start(t, "postprocess", t2, probe)
        if stop:
            return stop
        try:
            detections = self.decoder(outputs, transform)
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
        scene = t.scene
        if scene.gate is not None:   # the reference the source's next frames are compared with
            scene.gate.inferred(t.frame.image, t.frame.media_s)
            scene.last = detections
        t3 = now()
        stop = self._start(t, "decide", t3, probe)
        if stop:
            return stop
        outcome = scene.rules.decide(detections, (t.frame.height, t.frame.width),
                                     t.frame.media_s)
        if outcome.track_ids is not None:
            detections = dataclasses.replace(detections, track_ids=outcome.track_ids)
        t4 = now()
        t.done("decide", (t4 - t3) * 1e3)
        costs.observe("decide", t4 - t3)
        costs.passed()
        t.enter("publish", t4)
        return FrameResult("ok", t.latency_ms, detections, outcome, escalated=escalated)

    # Batches: frames of several sources through one run.

    def batch_cost(self, k: int) -> float:
        """The expected cost of one run of a batch of `k`: learned (its 90th percentile), else
        what warm-up measured, in proportion to what a single run costs now (warm-up ran on an
        idle model; the board may be busier now)."""
        costs = self.costs
        learned = costs.expected(f"infer@{k}")
        if learned:
            return learned
        seed, one = self.batch_seed.get(k, INF), self.batch_seed.get(1, 0.0)
        now = costs.expected("infer")
        return seed * max(1.0, now / one) if now and one else seed

    def batch_fits(self, deadlines: list[float], now: float) -> bool:
        """Whether one run for frames with these `deadlines` (in order) is expected to leave
        each its own decode, rules and record before its own deadline — so the batch costs no
        frame the single path would have kept: the first frame is the one that waits longest
        for the others, the last waits for everyone's decode."""
        costs = self.costs
        k = len(deadlines)
        # The rules' cost reserved twice, as for the optional stages: only their median is known.
        each = sum(costs.expected(s) for s in ("postprocess", "decide", "decide", "publish")) \
            + SEND_MARGIN_S
        done = now + k * costs.expected("preprocess") + BATCH_SAFETY * self.batch_cost(k)
        for at in deadlines:
            done += each
            if done > at:
                return False
        return True

    def process_batch(self, tickets: list[Ticket]) -> list[FrameResult]:
        """One model run for `tickets`' frames (different sources, deadline order), then each
        decoded and decided on its own. A frame the motion gate lets reuse its source's last
        detections leaves the batch. If the guard stops the run at one frame's deadline, the
        frames whose deadlines have not passed come back as `again` (the loop runs them
        singly); the others are overruns."""
        costs, now = self.costs, self.clock.now
        results: list[FrameResult | None] = [None] * len(tickets)
        batch: list[tuple[int, Transform]] = []
        t0 = now()
        tensor = self.batch_tensor
        for i, t in enumerate(tickets):
            t.enter("preprocess", t0)
            if t.deadline.expired(t0):
                results[i] = self._overrun(t, "stale", "preprocess")
                continue
            if self._unchanged(t):
                results[i] = self._reuse(t, t0)
                t0 = now()
                continue
            image, transform = self.pre(t.frame.source_id)(t.frame)
            tensor[len(batch)] = image[0]
            batch.append((i, transform))
            t1 = now()
            t.done("preprocess", (t1 - t0) * 1e3)
            costs.observe("preprocess", t1 - t0)
            t0 = t1
        k = len(batch)
        if k:
            t1 = now()
            for i, _ in batch:
                tickets[i].enter("infer", t1)
            run = self.runner.run(tensor[:k])
            t2 = now()
            costs.observe("infer" if k == 1 else f"infer@{k}", t2 - t1, stopped=run.stopped)
            for j, (i, transform) in enumerate(batch):
                t = tickets[i]
                t.done("infer", (t2 - t1) * 1e3)
                if run.outputs is not None:
                    outputs = [o[j:j + 1] for o in run.outputs]
                    results[i] = self._finish(t, outputs, transform, now(), False)
                elif not run.stopped:
                    results[i] = self._overrun(t, "error", "infer", run.error)
                elif t.lost or t.deadline.expired(now()):
                    results[i] = self._overrun(t, "deadline", "infer")
                else:
                    results[i] = FrameResult("overrun", t.latency_ms, cause="again",
                                             stage="infer")
        return results  # type: ignore[return-value]
