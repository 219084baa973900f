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

import numpy as np

from edgert.clock import Clock
from edgert.deadline import Deadline
from edgert.frame import Frame
from edgert.infer import InferenceRunner
from edgert.publish.herald import WORK

log = logging.getLogger("edgert.guard")

INF = float("inf")
RT_PRIORITY = 5   # above ordinary threads, below the sender's


class Ticket:
    """One frame on its way through the stages: the single mutable object two threads share.

    `lost` is set by the guard alone, `finished` by the loop alone. `stage`, `stage_t0` and `latency_ms` are written by the
    loop between stages; each change is mirrored on the herald's board, so a record sent at
    the deadline can say where the time went.
    """

    __slots__ = ("frame", "deadline", "runner", "seq", "lost", "finished", "stage", "stage_t0",
                 "latency_ms", "board")

    def __init__(self, frame: Frame, deadline: Deadline, runner: InferenceRunner, seq: int,
                 board: np.ndarray, now: float) -> None:
        self.frame, self.deadline, self.runner, self.seq = frame, deadline, runner, seq
        self.lost = False
        self.finished = False   # the loop is done with it: nothing left to stop
        self.board = board
        self.latency_ms: dict[str, float] = {"capture": frame.capture_s * 1e3}
        board[3:] = 0.0
        board[0] = seq
        self.enter("preprocess", now)

    def enter(self, stage: str, now: float) -> None:
        """The loop starts `stage` at `now`."""
        self.stage, self.stage_t0 = stage, now
        self.board[2] = now
        self.board[1] = WORK.index(stage)

    def done(self, stage: str, ms: float) -> None:
        self.latency_ms[stage] = ms
        self.board[3 + WORK.index(stage)] = ms


class Guard:
    """Sleeps until the armed ticket's deadline; then stops its run."""

    def __init__(self, clock: Clock, realtime: bool = True) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: Ticket | None = None
        self._closing = False
        self._want_realtime = realtime
        self.priority = "normal"
        self.fired = 0
        self._until = INF   # when the guard's current wait ends
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgert-guard", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def arm(self, ticket: Ticket) -> None:
        """Watch `ticket` from now on (the previous one is done with)."""
        with self._cond:
            ticket.runner.reset()
            self._armed = ticket
            # Deadlines only move later, so a guard asleep until the last one wakes in time
            # for this one; waking it for every frame would take the GIL from the loop.
            if self._until > ticket.deadline.at:
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
                t = self._armed
                if t is None or t.lost or t.finished or not t.deadline.enforced:
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
