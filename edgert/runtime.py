"""The loop: frames of every source through the stages, earliest deadline first, each frame's record owed to the herald.

The same loop runs `edgert run`, `replay` and `bench`; the command chooses the parts — the
sources, the clock, whether deadlines are enforced, and where the herald runs (the sender
process for a live run, in-process where deadlines are only measured). `Runtime.build` makes
them from config; the constructor only takes them, so a test can hand in its own.

A frame is armed with the herald when it arrives — by its grabber, as it is handed over — so
its record is owed from then, whatever the loop is busy with; a source read on demand is
armed as the loop takes it. With several sources, frames of different sources run as one
batch when the model takes one and the batch's learned cost still meets every deadline in it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, Sequence

import numpy as np

from edgert.clock import LIVE, Clock
from edgert.codec import encode
from edgert.config.types import Config
from edgert.deadline import Deadline
from edgert.errors import SourceUnavailable
from edgert.frame import Frame
from edgert.guard import Guard, Ticket
from edgert.infer import ModelInfo
from edgert.ladder import Ladder
from edgert.pipeline import FrameResult, Pipeline
from edgert.publish.herald import SEND_MARGIN_S, Armed, Offer
from edgert.publish.sender import HeraldPort, LocalHerald, SenderProcess
from edgert.decide import EventDraft
from edgert.decide.zones import check_frame
from edgert.records import STAGES, Decision, Event, Metrics, Status, Timing, Verdict
from edgert.service.notify import Notifier
from edgert.scene import Scene
from edgert.source import FrameSource, open_source
from edgert.source.mux import Mux
from edgert.summary import RunSummary
from edgert.watch import Watch
from edgert.wiring import build_rungs, warm_up

log = logging.getLogger("edgert")

LOOP_RT_PRIORITY = 3    # runtime.loop_priority = "realtime": below the guard (5) and sender (8, 10)
FREE_AFTER_S = 2.0      # after a model reload: long enough for a few frames to pass
GIL_SWITCH_S = 0.0005   # how long a thread may hold the GIL while the guard waits for it


class Runtime:
    """Owns the parts of one run; only this class and `build` know the concrete ones."""

    def __init__(self, cfg: Config, source: FrameSource | Sequence[FrameSource],
                 rungs: list[Pipeline], info: ModelInfo, herald: HeraldPort, *,
                 clock: Clock = LIVE, enforce_budget: bool = True, run_id: str | None = None,
                 watch: Watch | None = None) -> None:
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        self.cfg, self.sources, self.rungs, self.info = cfg, sources, rungs, info
        self.source = sources[0]
        ids = [s.id for s in cfg.sources]
        self.mux = Mux(sources, ids, clock)
        self.scenes = {i: Scene.build(cfg, i) for i in ids}
        # Frames a grabber hands over are armed then: their deadlines run from arrival.
        self.arm_on_arrival = enforce_budget and all(
            hasattr(s, "watch") and not getattr(s, "on_demand", False) for s in sources)
        self._uid = itertools.count(1)
        self.herald, self.clock, self.enforce_budget = herald, clock, enforce_budget
        self.watch = watch
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.summary = RunSummary()
        self.budget_s = cfg.runtime.budget_ms / 1e3
        self.notifier = Notifier.from_env()
        self.stepped = 0   # frames the loop took and decided (or gave up on)
        self.last_latency: dict[str, float] = {}   # the last frame's, for bench
        self._errors: dict[str, int] = {}
        self._guard: Guard | None = None
        self._ready_at = -float("inf")
        self._warm_hw: tuple[int, ...] = ()
        self.loop_priority = "normal"
        self.workers: set[int] = set()   # onnxruntime's pool threads, when build() saw them made
        self._stand_in = False   # warmed up on a made-up frame: the first real one may differ
        self._herald_stats: dict[str, Any] = {}
        self.ladder: Ladder | None = None   # made at warm-up, from the rungs' measured costs
        self.batches = 0   # model runs that took frames of more than one source
        self.batched = 0   # frames they took

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of the rung in force."""
        return self.rungs[self.ladder.rung if self.ladder else 0]

    @classmethod
    def build(cls, cfg: Config, *, clock: Clock = LIVE, watch: Watch | None = None) -> Runtime:
        """A live run: frames from the configured source, records from the sender process."""
        run_id = uuid.uuid4().hex[:12]
        # The sender opens the outputs while the model loads; its mistakes come back at ready.
        herald = SenderProcess.spawn(cfg, run_id, realtime=cfg.runtime.guard_priority == "realtime")
        try:
            before = thread_ids()
            rungs, info = build_rungs(cfg, clock)
            workers = thread_ids() - before   # onnxruntime's thread pools, made with the sessions
            several = len(cfg.sources) > 1
            source = [open_source(s, clock, s.id, threaded=several) for s in cfg.sources]
            herald.wait_ready()
        except BaseException:
            herald.close()
            raise
        rt = cls(cfg, source, rungs, info, herald, clock=clock, run_id=run_id, watch=watch)
        rt.workers = workers
        return rt

    @classmethod
    def local(cls, cfg: Config, outputs: list, *, source: FrameSource | None = None,
              clock: Clock = LIVE, watch: Watch | None = None) -> Runtime:
        """Deadlines measured, not enforced, the herald on the loop's thread: bench, replay."""
        rungs, info = build_rungs(cfg, clock)
        several = len(cfg.sources) > 1
        source = source or [open_source(s, clock, s.id, threaded=several) for s in cfg.sources]
        run_id = uuid.uuid4().hex[:12]
        return cls(cfg, source, rungs, info, LocalHerald(cfg, run_id, outputs, clock),
                   clock=clock, enforce_budget=False, run_id=run_id, watch=watch)

    @property
    def guard(self) -> Guard:
        """Started on first use, so `edgert check` and warm-up never start a real-time thread."""
        if self._guard is None:
            # The guard needs the GIL at the deadline to stop a run; the default 5 ms switch
            # interval would let a loop busy in Python hold it that long.
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
            self._guard = Guard(self.clock, realtime=self.cfg.runtime.guard_priority == "realtime")
        return self._guard

    def warm_up(self, image: np.ndarray, runs: int = 3) -> None:
        baseline = warm_up(self.cfg, self.rungs, self.info, image, self.clock, runs)
        self._warm_hw = image.shape[:2]
        if self.ladder is None:
            self.ladder = Ladder(self.cfg.runtime.ladder, self.budget_s, baseline)

    def warm_source(self, source_id: str, image: np.ndarray) -> None:
        """A source's own parts at its frame size: each rung's preprocessor for it, and its
        motion gate. Never on a frame's time."""
        check_frame(self.cfg, image.shape[:2], source_id)   # pixel zones and lines
        frame = Frame(-1, image, 0.0, self.clock.now(), source_id=source_id)
        for pipeline in self.rungs:
            pipeline.pre(source_id)(frame)
            esc = pipeline.escalation
            if esc is not None:
                esc.heavy.pre(source_id)(frame)
        self.scenes[source_id].motion(image.shape[:2])

    def reconfigure(self, cfg: Config, rules: dict[str, Any], built: tuple | None = None) -> None:
        """A reload, between two frames: `cfg` in force, `rules` (each source's RuleEngine,
        which took over the old one's state), and with `built` (rungs, info, baseline, pool
        threads: a new model, warmed up) the new rungs and a new ladder."""
        if built is not None:
            old = self.rungs
            self.rungs, self.info, baseline, workers = built
            self.ladder = Ladder(cfg.runtime.ladder, cfg.runtime.budget_ms / 1e3, baseline)
            if self.loop_priority == "realtime" and not cfg.runtime.spin_wait:
                _raise(workers)
            self.workers = workers
            for scene in self.scenes.values():   # the new rungs' preprocessors, at each size
                if scene.last_frame is not None:
                    self.warm_source(scene.id, scene.last_frame.image)
            # Freeing sessions joins their pool threads: not on the loop's time.
            threading.Thread(target=_free, args=(old,), name="edgert-free", daemon=True).start()
            del old
            self._report_state()   # the new model's providers may bind differently
        elif self.ladder is not None:
            self.ladder.budget_s = cfg.runtime.budget_ms / 1e3
        motion = cfg.motion != self.cfg.motion
        for sid, scene in self.scenes.items():
            scene.cfg, scene.rules = cfg.for_source(sid), rules[sid]
            if motion and scene.hw is not None:
                scene.motion(scene.hw)
        self.cfg = cfg
        self.budget_s = cfg.runtime.budget_ms / 1e3

    # Frames arrive.

    def _armed(self, frame: Frame) -> Armed:
        deadline = frame.arrival_s + self.budget_s if self.enforce_budget else float("inf")
        pipeline = self.pipeline
        return Armed(frame.uid, frame.index, frame.arrival_s, frame.media_s, deadline,
                     self.cfg.runtime.budget_ms, self.clock.wall_at(frame.arrival_s),
                     round(frame.capture_s * 1e3, 3), self._rung_name(pipeline),
                     self.scenes[frame.source_id].record_id, frame.source_id)

    def _dropped(self, frame: Frame) -> None:
        if frame.uid:
            self.herald.drop(frame.uid)

    def _taken(self, frame: Frame) -> Frame:
        """A frame arrives: armed now, and owed a record from here. A grabber calls this as it
        hands the frame over (its mailbox's lock held); a frame read on demand arrives as the
        loop takes it."""
        if frame.uid:
            return frame
        frame = dataclasses.replace(frame, uid=next(self._uid))
        self.herald.arm(self._armed(frame))
        return frame

    # Frames are decided.

    def step(self, frame: Frame) -> str:
        """One frame, end to end: processed, its record owed to the herald. Returns what the
        loop made of it: "ok" (offered in time) or the overrun's cause."""
        frame = self._taken(frame)
        pipeline = self.pipeline
        t = self._ticket(frame, pipeline)
        if t.deadline.enforced:
            self.guard.arm(t)
        result = pipeline.process(t)
        t.finished = True   # the guard leaves it alone from here
        return self._decided(t, pipeline, result)

    def step_batch(self, frames: list[Frame]) -> list[str]:
        """Frames of different sources, already armed, deadline order: one model run."""
        pipeline = self.pipeline
        tickets = [self._ticket(f, pipeline) for f in frames]
        if tickets[0].deadline.enforced:
            self.guard.arm(*tickets)
        results = pipeline.process_batch(tickets)
        self.batches += 1
        self.batched += len(frames)
        made = []
        for t, result in zip(tickets, results):
            t.finished = True
            if result.again:   # the run stopped at an earlier frame's deadline: alone now
                made.append(self.step(t.frame))
            else:
                made.append(self._decided(t, pipeline, result))
        return made

    def _ticket(self, frame: Frame, pipeline: Pipeline) -> Ticket:
        self.stepped += 1
        deadline = (Deadline.after(frame.arrival_s, self.budget_s) if self.enforce_budget
                    else Deadline.never(self.budget_s))
        return Ticket(frame, deadline, pipeline.runner, self.scenes[frame.source_id],
                      self.herald.board, self.clock.now())

    def _decided(self, t: Ticket, pipeline: Pipeline, result: FrameResult) -> str:
        if result.error:
            self._report_error(result)
        frame, scene = t.frame, t.scene
        if self.watch is not None:
            self.watch.on_frame(frame, result, frame.uid)
        made = self._hand_over(t, pipeline, result)
        if made == "ok":
            self.mux.served(frame.source_id)
        if result.reused:
            scene.reused += 1
        if result.outcome is not None and result.outcome.events:
            # Decided is decided: a frame whose record missed its deadline still moved the
            # rules and the tracker, so its events go out too, after its record.
            self._events(result.outcome.events, frame, scene)
        scene.last_frame = frame
        self._climb_or_descend(pipeline, made == "ok", t)
        self._account()
        return made

    def _events(self, drafts: tuple[EventDraft, ...], frame: Frame, scene: Scene) -> None:
        """Rule events numbered in their source's own sequence, stamped with the frame's wall
        time."""
        at = self.clock.wall_at(frame.arrival_s)
        for d in drafts:
            scene.event_seq += 1
            self.herald.event(Event(self.cfg.device_id, self.run_id, scene.event_seq, d.rule,
                                    d.kind, f"{self.run_id}-{d.number}", frame.index, at,
                                    d.track_id, d.counts, scene.record_id))

    def _rung_name(self, pipeline: Pipeline) -> str | None:
        return pipeline.name if pipeline is not self.rungs[0] else None

    def _hand_over(self, t: Ticket, pipeline: Pipeline, result: FrameResult) -> str:
        """The `ok` decision encoded and offered, or why there is none."""
        herald, clock = self.herald, self.clock
        if result.status != "ok":
            herald.overrun(t.uid, result.cause or "error", result.stage or "?",
                           result.latency_ms, result.error)
            self._latency(t, clock.now())
            return result.cause or "error"
        costs = pipeline.costs
        t0, cpu0 = clock.now(), clock.cpu()
        if t.deadline.remaining(t0) <= costs.expected("publish") + SEND_MARGIN_S:
            herald.overrun(t.uid, "predicted", "publish", result.latency_ms)
            self._latency(t, t0)
            return "predicted"
        frame, outcome = t.frame, result.outcome
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(result.latency_ms)
        lat = {k: round(v, 3) for k, v in lat.items()}
        lat["total"] = round((t0 - frame.arrival_s) * 1e3, 3)
        captured = clock.wall_at(frame.arrival_s)
        decision = Decision(   # seq 0: the herald numbers records as they go out
            self.cfg.device_id, self.run_id, 0,
            Verdict(frame.index, "ok", outcome.action, outcome.rule,
                    result.detections.to_dets() if result.detections else (),
                    rung=self._rung_name(pipeline), reused=result.reused,
                    escalated=result.escalated, source_id=t.scene.record_id),
            Timing(captured, captured + (t0 - frame.arrival_s), self.cfg.runtime.budget_ms, lat))
        herald.offer(Offer(t.uid, encode(decision), outcome.action, outcome.rule))
        # CPU time, not wall time: a preemption between two frames must not inflate the
        # margin for good (a loaded spell would otherwise lock every ok out).
        costs.observe("publish", clock.cpu() - cpu0)
        self.summary.latency.add(lat)
        self.last_latency = lat
        return "ok"

    def _latency(self, t: Ticket, now: float) -> None:
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(t.latency_ms)
        lat["total"] = (now - t.frame.arrival_s) * 1e3
        self.summary.latency.add(lat)
        self.last_latency = lat

    def _climb_or_descend(self, pipeline: Pipeline, ok: bool, t: Ticket) -> None:
        ladder = self.ladder
        if ladder is None or not ladder.top:
            return
        # The rung's typical inference now (its learned median), not this frame's: one
        # frame's jitter must not decide a climb.
        infer_s = (pipeline.costs.expected("infer") or t.latency_ms.get("infer", 0.0) / 1e3) \
            + pipeline.costs.expected("secondary")
        total_s = (self.clock.now() - t.frame.arrival_s) if ok else 0.0
        switch = ladder.record(not ok, infer_s, total_s)
        if switch is None:
            return
        name = self.rungs[switch.rung].name
        self._report_state()
        if switch.down:
            log.warning("degraded: stepping down to rung %r (%s)", name, switch.reason)
        else:
            log.info("stepping up to rung %r (%s)", name, switch.reason)

    def _account(self) -> None:
        for o in self.herald.take_outcomes():
            self.summary.count(o)
            if self.watch is not None:
                self.watch.on_outcome(o)

    def _report_state(self) -> None:
        """Online or degraded (a lighter rung, a fallback provider), to outputs that report it."""
        detail: dict[str, Any] = {}
        if self.ladder is not None and self.ladder.rung:
            detail["rung"] = self.rungs[self.ladder.rung].name
        if self.info.degraded:
            detail["providers_not_bound"] = list(self.info.not_bound)
        self.herald.set_state(Status("degraded" if detail else "online", self.cfg.device_id,
                                     self.clock.wall_at(self.clock.now()), detail))

    def _metrics(self, interval_s: float) -> None:
        """The periodic metrics record (the contract's `metrics` topic): counts since start and
        latency percentiles over the last 1,024 frames (cheap enough to run between frames)."""
        s = self.summary
        m = Metrics(self.cfg.device_id, self.run_id, self.clock.wall_at(self.clock.now()),
                    interval_s, s.counts(), s.misses, s.latency.percentiles(last=1024),
                    self.pipeline.name, self._source_stats(), {})
        if self.watch is not None:
            self.watch.on_metrics(m)
        self.herald.metrics(m)   # the herald's side adds the outputs' counters

    def _report_error(self, result: FrameResult) -> None:
        """A failing model or decoder is logged on its first frame and every 1000th after."""
        key = f"{result.stage}_error"
        n = self._errors.get(key, 0) + 1
        self._errors[key] = n
        if n == 1 or n % 1000 == 0:
            log.warning("%s on %d frame(s) so far: %s", key, n, result.error)

    def _source_stats(self) -> dict[str, Any]:
        """The source's counters; with several, each source's under its id."""
        if len(self.sources) == 1:
            return _stats_dict(self.source.stats())
        return {i: _stats_dict(s.stats()) for i, s in zip(self.mux.ids, self.sources)}

    # The run.

    def _first_frames(self, stop: threading.Event) -> dict[str, Frame]:
        """Each source's first frame, to warm up on at its real size before saying ready;
        without the sources that fail or stay silent for `stall_timeout_s` (the loop says so
        with safe states, and warms a source up when its frames come)."""
        firsts: dict[str, Frame] = {}
        end = self.clock.now() + max(s.stall_timeout_s for s in self.cfg.sources)
        while not stop.is_set() and self.clock.now() < end and len(firsts) < len(self.sources):
            for sid, source in zip(self.mux.ids, self.sources):
                if sid in firsts or source.ended or source.stats().state == "reopening":
                    continue
                frame = source.read(0.1 if len(self.sources) == 1 else 0.0)
                if frame is not None:
                    firsts[sid] = frame
            if len(self.sources) > 1 and len(firsts) < len(self.sources):
                self.clock.sleep(0.01)
            if all(sid in firsts or s.ended or s.stats().state == "reopening"
                   for sid, s in zip(self.mux.ids, self.sources)):
                break
        return firsts

    def start(self, stop: threading.Event) -> list[Frame]:
        """Open the sources and warm up on their first frames; returns those still worth
        deciding (read on demand: as fresh as any), in source order. A grabbed frame is stale
        by now: frames from before ready are not decided."""
        for i, source in enumerate(self.sources):
            try:
                source.start()
            except SourceUnavailable as e:
                key = "source.url" if not self.cfg.named_sources else f"sources[{i}].url"
                raise SourceUnavailable(f"{self.cfg.file}: {key}: {e}") from None
        firsts = self._first_frames(stop)
        first = firsts.get(self.mux.ids[0])
        image = first.image if first is not None else next(
            (f.image for f in firsts.values()), None)
        if image is None:
            from edgert.wiring import expected_frame_hw
            image = np.full((*expected_frame_hw(self.cfg), 3), 114, np.uint8)
            self._stand_in = True
        self.warm_up(image)
        for sid, frame in firsts.items():
            self.warm_source(sid, frame.image)
        self._ready_at = self.clock.now()
        if self.arm_on_arrival:   # from here every frame handed over is owed a record
            for source in self.sources:
                source.watch(self._taken, self._dropped)   # type: ignore[attr-defined]
        return [dataclasses.replace(firsts[sid], arrival_s=self._ready_at)
                for sid, source in zip(self.mux.ids, self.sources)
                if sid in firsts and getattr(source, "on_demand", False)]

    def _rewarm(self, frame: Frame) -> bool:
        """The first frame of a source that gave none before ready (the camera came late): its
        parts are made at its size now, and if that size is not the one warmed up at, the frame
        is not decided, so no decision pays for building buffers. Once per source: an image
        folder's sizes may differ from frame to frame, and its frames decide at any size."""
        scene = self.scenes[frame.source_id]
        if scene.hw is not None:
            return False
        hw = frame.image.shape[:2]
        if self._stand_in and hw != self._warm_hw:
            log.info("warming up again at the source's frame size %dx%d", frame.width,
                     frame.height)
            self.warm_up(frame.image, runs=1)
            self._warm_hw = hw
        self._stand_in = False
        self.warm_source(frame.source_id, frame.image)
        if hw == self._warm_hw:
            return False
        if frame.uid:   # armed on arrival: its record is owed all the same
            self.herald.overrun(frame.uid, "stale", "preprocess", {},
                                "warming up at the source's frame size")
        return True

    def _watch_sources(self, idle: bool) -> None:
        """A source that is reopening gets no records, so its actuator must not keep acting on
        its last one: a safe state, repeated only after an ok decision came between. `idle`:
        no frame came, which the service's watchdog counts as progress while a source waits."""
        states = []
        for sid, source in zip(self.mux.ids, self.sources):
            state = source.stats().state
            states.append(state)
            if state == "reopening":
                self.herald.safe_state("source_lost", self.scenes[sid].record_id)
        if idle and self.watch is not None:
            self.watch.on_idle("reopening" if "reopening" in states else states[0])

    def _next(self, frame: Frame) -> None:
        """Decide `frame`, alone or with frames of other sources in one run."""
        pipeline, rt = self.pipeline, self.cfg.runtime
        if pipeline.max_batch < 2:
            self.step(frame)
            return
        frame = self._taken(frame)
        if rt.batching == "fixed":   # the stream muxers' way: a full batch, or the timeout
            full = min(pipeline.max_batch, len(self.sources))   # their batch: one per camera
            self.mux.wait(full - 1, frame.arrival_s + rt.batch_timeout_ms / 1e3)
            heads = self.mux.heads(exclude=frame.source_id)[:full - 1]
        else:
            heads = self.mux.heads(exclude=frame.source_id)[:pipeline.max_batch - 1]
            now = self.clock.now()
            budget = self.budget_s if self.enforce_budget else float("inf")
            deadlines = [f.arrival_s + budget for f in (frame, *heads)]
            k = max((n for n in range(2, len(deadlines) + 1)
                     if pipeline.batch_fits(deadlines[:n], now)), default=1)
            heads = heads[:k - 1]
        frames = [frame]
        for head in heads:
            taken = self.mux.take(head.source_id)
            if taken is not None and (taken.uid or not self.arm_on_arrival):
                frames.append(self._taken(taken))
        if len(frames) == 1:
            self.step(frame)
        else:
            self.step_batch(frames)

    def run(self, stop: threading.Event, max_records: int | None = None,
            duration_s: float | None = None) -> RunSummary:
        """Until stopped, the sources end, `max_records` are out or `duration_s` has passed."""
        clock = self.clock
        # Before the source starts, so its grabber thread inherits it. Only where deadlines are
        # enforced: a replay or bench gains nothing by pushing other work aside.
        self.loop_priority = ("realtime" if self.enforce_budget and
                              self.cfg.runtime.loop_priority == "realtime" and
                              _loop_realtime(set() if self.cfg.runtime.spin_wait else self.workers)
                              else "normal")
        try:
            pending = self.start(stop)
        except BaseException:
            self.close()
            raise
        started = clock.now()
        end = started + duration_s if duration_s is not None else float("inf")
        self.notifier.send("READY=1")
        main = self.rungs[0]
        if main.input_note:
            log.info("model input: %s", main.input_note)
        if len(self.sources) > 1:
            log.info("%d sources (%s); batching %s: %s", len(self.sources),
                     ", ".join(self.mux.ids), self.cfg.runtime.batching,
                     main.batch_note or "frames run singly")
        log.info("ready: device %s, model %s (%s), providers %s%s, budget %g ms, sender %s, "
                 "loop %s, run %s", self.cfg.device_id, self.info.path.name,
                 self.cfg.model.family, ",".join(self.info.providers),
                 " (degraded)" if self.info.degraded else "", self.cfg.runtime.budget_ms,
                 self.herald.priority, self.loop_priority, self.run_id)
        if self.info.degraded:
            self._report_state()
        if self.watch is not None:
            self.watch.on_ready(self)
        every = self.cfg.runtime.metrics_interval_s
        next_metrics = started + every if every > 0 else float("inf")
        next_look = started
        first = None
        try:
            while not stop.is_set() and clock.now() < end:
                now = clock.now()
                if now >= next_metrics:
                    self._metrics(every)
                    next_metrics = clock.now() + every
                if max_records is not None and self.stepped >= max_records:
                    break
                if self.herald.dead:
                    log.warning("every output has lost its reader; stopping")
                    break
                if len(self.sources) > 1 and now >= next_look:
                    self._watch_sources(idle=False)   # one may stall while the others run
                    next_look = now + 0.1
                    costs = self.pipeline.costs
                    self.mux.tie_s = min(self.budget_s / 4, sum(
                        costs.expected(st) for st in ("preprocess", "infer", "postprocess")))
                frame = first = pending.pop(0) if pending else None
                if frame is None:
                    frame = self.mux.next(min(0.1, max(0.0, end - clock.now())))
                if frame is None:
                    if self.mux.ended:
                        break
                    self._watch_sources(idle=True)
                    continue
                if (frame.arrival_s < self._ready_at and not frame.uid) or self._rewarm(frame):
                    continue   # grabbed while warming up: older than the promise
                if self.arm_on_arrival and not frame.uid:
                    continue   # handed over before the run was armed: never owed a record
                if frame is first:
                    # Warm-up's frames, each still in its source's buffer: taking another
                    # frame of that source into a batch would recycle it.
                    self.step(frame)
                else:
                    self._next(frame)
        finally:
            self.notifier.send("STOPPING=1")
            self.summary.seconds = clock.now() - started
            self.summary.source = _stats_dict(self.source.stats())
            self.close()
            self._finish_summary()
        return self.summary

    def _finish_summary(self) -> None:
        s, h = self.summary, self._herald_stats
        s.late_ok = h.get("late_ok", 0)
        s.extra["events"] = sum(sc.event_seq for sc in self.scenes.values())
        if self.cfg.motion.enabled:
            s.extra["motion"] = {"reused": sum(sc.reused for sc in self.scenes.values())}
        if len(self.sources) > 1:
            s.extra["sources"] = self._source_stats()
            s.extra["batching"] = {"mode": self.cfg.runtime.batching,
                                   "max_batch": self.rungs[0].max_batch,
                                   "batches": self.batches, "frames_batched": self.batched}
        esc = self.rungs[0].escalation
        if esc is not None:
            s.extra["escalate"] = {"unsure_frames": esc.unsure_frames, "runs": esc.runs,
                                   "no_time": esc.no_time, "errors": esc.errors}
        s.extra["outputs"] = h.get("outputs", {})
        s.extra["sender"] = {"priority": h.get("priority", self.herald.priority),
                             "fired": h.get("fired", 0)}
        s.extra["loop"] = {"priority": self.loop_priority}
        guard = self._guard
        s.extra["guard"] = {"priority": guard.priority if guard else "off",
                            "fired": guard.fired if guard else 0,
                            "runs_stopped": sum(p.runner.terminated for p in self.rungs)
                            + sum(r.terminated for r in self._secondary_runners())}
        if self.pipeline.secondaries:
            s.extra["secondary"] = {sec.name: {"runs": sec.runs, "crops": sec.crops_run,
                                               "frames_cut_short": sec.cut_short,
                                               "errors": sec.errors}
                                    for sec in self.pipeline.secondaries}
        s.extra["expected_ms"] = {p.name: p.costs.snapshot() for p in self.rungs}
        if self.ladder is not None and self.ladder.top:
            s.extra["ladder"] = {"switches": self.ladder.switches, "rung": self.pipeline.name,
                                 "frames": {p.name: n for p, n in
                                            zip(self.rungs, self.ladder.frames)}}

    @property
    def event_seq(self) -> int:
        """Events sent, every source's."""
        return sum(sc.event_seq for sc in self.scenes.values())

    @property
    def _last_frame(self) -> Frame | None:
        """The last frame decided, of any source (a reload warms a new model on it)."""
        frames = [sc.last_frame for sc in self.scenes.values() if sc.last_frame is not None]
        return max(frames, key=lambda f: f.arrival_s, default=None)

    def _secondary_runners(self) -> list:
        p = self.pipeline
        return [sec.runner for sec in p.secondaries] + \
            ([s.runner for s in p.user_stage.sessions.values()] if p.user_stage else [])

    def close(self) -> None:
        if self._guard is not None:
            self._guard.close()
        if not self._herald_stats:
            for scene in self.scenes.values():
                if scene.last_frame is not None:
                    ends = scene.rules.close(scene.last_frame.media_s)   # open events end
                    if ends:
                        self._events(ends, scene.last_frame, scene)
        for source in self.sources:   # frames handed over and never taken are dropped
            source.close()
        if not self._herald_stats:
            self._herald_stats = self.herald.close() or {"closed": True}
            self._account()
        self.notifier.close()


def _free(rungs: list) -> None:
    """Drop a replaced model's rungs, then hand the freed memory back: the loading thread's
    malloc arena would otherwise keep it, and each model reload would leave the process
    bigger (measured: +17 MiB over five reloads of the demo model). It waits a moment first,
    so that the last frame's ticket (the guard's, with the old session's runner) is gone and
    the last reference, whose release joins the session's pool threads, is this thread's."""
    time.sleep(FREE_AFTER_S)
    rungs.clear()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to trim
        pass


def thread_ids() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _loop_realtime(workers: set[int]) -> bool:
    """The loop's thread, the grabber threads it starts and onnxruntime's pool threads at
    SCHED_FIFO (below the guard and the sender): an ordinary process can then no longer keep
    the loop from a frame, hold the GIL the loop needs by preempting a thread of ours that
    holds it, or stall an operator (and so a stop at the deadline, checked between operators)
    by preempting the worker that has the other half of it. Pool threads that spin-wait
    (`runtime.spin_wait`) are left alone: spinning at real-time priority would take a core."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LOOP_RT_PRIORITY))
    except (AttributeError, PermissionError, OSError):   # said once, in the ready line
        return False
    _raise(workers)
    return True


def _raise(threads: set[int]) -> None:
    for tid in threads:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(LOOP_RT_PRIORITY))
        except OSError:   # gone already
            pass


def _stats_dict(stats: object) -> dict[str, Any]:
    names = getattr(stats, "__dataclass_fields__", None) or getattr(stats, "__slots__", ())
    return {n: getattr(stats, n) for n in names}
