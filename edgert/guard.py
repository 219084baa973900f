"""The deadline guard: a thread that stops the loop's work on a frame once its deadline has passed.

It does not publish: the herald (edgert/publish/herald.py) sends the overrun record at the
deadline from the sender process, whatever this process is doing. The guard only saves the
work: it sets `RunOptions.terminate` on the frame's running `session.run` and marks the
ticket lost, so the loop stops at the next stage boundary and the next frame starts sooner.
Being late here costs CPU, never a record, so it runs below the sender's priority.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from edgert.clock import Clock
from edgert.deadline import Deadline
from edgert.frame import Frame
from edgert.infer import InferenceRunner
from edgert.publish.herald import WORK

if TYPE_CHECKING:
    from edgert.scene import Scene

log = logging.getLogger("edgert.guard")

INF = float("inf")
RT_PRIORITY = 5   # above ordinary threads, below the sender's


class Ticket:
    """One frame on its way through the stages: the single mutable object two threads share.

    `lost` is set by the guard alone, `finished` by the loop alone. `stage`, `stage_t0` and `latency_ms` are written by the
    loop between stages; each change is mirrored on the herald's board, so a record sent at
    the deadline can say where the time went.
    """

    __slots__ = ("frame", "deadline", "runner", "scene", "lost", "finished", "stage",
                 "stage_t0", "latency_ms", "board")

    def __init__(self, frame: Frame, deadline: Deadline, runner: InferenceRunner,
                 scene: Scene, board: np.ndarray, now: float) -> None:
        self.frame, self.deadline, self.runner, self.scene = frame, deadline, runner, scene
        self.lost = False
        self.finished = False   # the loop is done with it: nothing left to stop
        self.board = board
        self.latency_ms: dict[str, float] = {"capture": frame.capture_s * 1e3}
        self.enter("preprocess", now)

    @property
    def uid(self) -> int:
        return self.frame.uid

    def enter(self, stage: str, now: float) -> None:
        """The loop starts `stage` at `now` (the board follows the frame the loop is on)."""
        self.stage, self.stage_t0 = stage, now
        b = self.board
        if b[0] != self.frame.uid:
            b[3:] = 0.0
            for s, ms in self.latency_ms.items():
                if s in WORK:
                    b[3 + WORK.index(s)] = ms
            b[0] = self.frame.uid
        b[2] = now
        b[1] = WORK.index(stage)

    def done(self, stage: str, ms: float) -> None:
        self.latency_ms[stage] = ms
        if self.board[0] == self.frame.uid:
            self.board[3 + WORK.index(stage)] = ms


class Guard:
    """Sleeps until the earliest deadline of the tickets in flight (one frame, or a batch);
    then marks that ticket lost and stops its run. A batch's frames share one run, so a stop
    for the first frame's deadline stops the others' too: the loop runs again those whose
    deadlines have not passed."""

    def __init__(self, clock: Clock, realtime: bool = True) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: tuple[Ticket, ...] = ()
        self._closing = False
        self._want_realtime = realtime
        self.priority = "normal"
        self.fired = 0
        self._until = INF   # when the guard's current wait ends
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgert-guard", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def arm(self, *tickets: Ticket) -> None:
        """Watch `tickets` from now on (the previous ones are done with)."""
        with self._cond:
            for t in tickets:
                t.runner.reset()
            self._armed = tickets
            # A guard asleep until an earlier deadline wakes in time for these; waking it for
            # every frame would take the GIL from the loop.
            if self._until > min(t.deadline.at for t in tickets):
                self._cond.notify()

    def _set_priority(self) -> None:
        if not self._want_realtime or not hasattr(os, "sched_setscheduler"):
            return
        try:   # pid 0: this thread, on Linux
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            self.priority = "realtime"
        except (PermissionError, OSError) as e:
            log.debug("the guard runs at normal priority (SCHED_FIFO refused: %s)", e)

    def _run(self) -> None:
        self._set_priority()
        self._ready.set()
        with self._cond:
            while not self._closing:
                t = min((t for t in self._armed if not (t.lost or t.finished)
                         and t.deadline.enforced), key=lambda t: t.deadline.at, default=None)
                if t is None:
                    self._until = INF
                    self._cond.wait()
                    continue
                left = t.deadline.remaining(self._clock.now())
                if left > 0:
                    self._until = t.deadline.at
                    self._cond.wait(left)
                    continue
                t.lost = True
                t.runner.terminate()
                self.fired += 1

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(5.0)
