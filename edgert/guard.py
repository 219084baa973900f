"""The deadline guard: a thread that publishes the overrun record at the deadline while the loop is busy.

Each frame gets a `Ticket`, its one claim on one record. The loop claims it when its decision
is ready and there is still time to send it; the guard claims it at the deadline if the loop
has not. Claims and sends happen under one lock, so exactly one record goes out per frame,
in `seq` order, and an `ok` record can only be sent by a claim made before the deadline.

The guard must run at the deadline even while onnxruntime's threads fill both cores and the
loop holds the GIL, so it asks for SCHED_FIFO (where the process may: root or CAP_SYS_NICE)
and the runtime shortens the interpreter's GIL switch interval. Without real-time priority it
still works, only later under load; `priority` says which one it got.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable, Iterator

from edgert.deadline import Deadline, monotonic
from edgert.frame import Frame
from edgert.infer import InferenceRunner

log = logging.getLogger("edgert.guard")

PENDING, LOOP, GUARD = "pending", "loop", "guard"
INF = float("inf")
RT_PRIORITY = 10   # above normal threads; below the kernel's own real-time helpers (50+)
URGENT_WITHIN_S = 0.02   # the loop's send borrows real-time priority this close to the deadline


class Ticket:
    """One frame on its way through the stages: the single mutable object two threads share.

    `state` changes only under the guard's lock. `stage` and `latency_ms` are written by the
    loop alone, between stages, and read by the guard to say where the time went.
    """

    __slots__ = ("frame", "deadline", "runner", "state", "stage", "stage_t0", "latency_ms")

    def __init__(self, frame: Frame, deadline: Deadline, runner: InferenceRunner) -> None:
        self.frame, self.deadline, self.runner = frame, deadline, runner
        self.state = PENDING
        self.stage = "preprocess"   # the stage running now, and when it started
        self.stage_t0 = monotonic()
        self.latency_ms: dict[str, float] = {"capture": frame.capture_s * 1e3}

    @property
    def lost(self) -> bool:
        """The guard has published this frame's record; the loop's work on it is void."""
        return self.state == GUARD


class Guard:
    """Owns the publish lock and the thread that claims expired tickets.

    `on_deadline(ticket, late_s)` builds and sends the overrun record; it is called with the
    lock held, right after the claim and after the ticket's run was told to stop.
    """

    def __init__(self, on_deadline: Callable[[Ticket, float], None], realtime: bool = True) -> None:
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        self._on_deadline = on_deadline
        self._armed: Ticket | None = None
        self._wake_at = -INF   # when the guard's current sleep ends (-inf: it is awake)
        self._closing = False
        self._want_realtime = realtime
        self._loop_policy: tuple[int, os.sched_param] | None = None
        self.priority = "normal"
        self.fired = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgert-guard", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def arm(self, ticket: Ticket) -> None:
        """Watch `ticket` from now on; the previous ticket must have been claimed.

        The guard is woken only if it would otherwise sleep past this deadline: a wake-up at
        every frame would make it take the GIL just as the loop starts preprocessing.
        """
        with self._cond:
            self._armed = ticket
            ticket.runner.reset()
            if ticket.deadline.at < self._wake_at:
                self._cond.notify()

    def claim(self, ticket: Ticket, latest: float = -INF) -> bool:
        """For the loop, with `lock` held: take the ticket if the guard has not and `latest`
        (when an `ok` send would end) is before the deadline. Without `latest`: take it to
        publish an overrun record, whatever the time."""
        if ticket.state != PENDING or latest >= ticket.deadline.at:
            return False
        ticket.state = LOOP
        return True

    @contextlib.contextmanager
    def urgent(self, ticket: Ticket) -> Iterator[None]:
        """Run the caller (the loop, claiming and sending a record) at real-time priority, just
        below the guard's, when the guard got it and the deadline is near: no ordinary process
        can then preempt it between the last deadline check and the end of the send.

        Only near the deadline, because dropping back to normal priority lets the scheduler
        put the loop behind every other runnable process (measured under load: the next frame
        started ~4 ms later); with more than `URGENT_WITHIN_S` left, only a host stall, not a
        preemption, could make the send late."""
        if self.priority != "realtime" or ticket.deadline.remaining() > URGENT_WITHIN_S:
            yield
            return
        if self._loop_policy is None:   # what to go back to: edgert may run under chrt
            self._loop_policy = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY - 1))
        try:
            yield
        finally:
            os.sched_setscheduler(0, *self._loop_policy)

    def _set_priority(self) -> None:
        if not self._want_realtime or not hasattr(os, "sched_setscheduler"):
            return
        try:   # pid 0: this thread, on Linux
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            self.priority = "realtime"
        except (PermissionError, OSError) as e:
            log.warning("deadline guard runs at normal priority (SCHED_FIFO refused: %s); "
                        "fail-safe records may be a few ms late under load. See "
                        "docs/deadlines.md for how to allow it.", e.strerror or e)

    def _run(self) -> None:
        self._set_priority()
        self._ready.set()
        with self._cond:
            while not self._closing:
                t = self._armed
                now = monotonic()
                if t is None or t.state != PENDING or t.deadline.at == INF:
                    # Nothing to watch. The next frame is captured from now on, so its deadline
                    # is at least one budget away: sleep that long unless `arm` says otherwise.
                    budget = t.deadline.budget_s if t is not None else INF
                    self._sleep(now + budget if budget < threading.TIMEOUT_MAX else INF, now)
                    continue
                if t.deadline.at > now:
                    self._sleep(t.deadline.at, now)
                    continue
                t.state = GUARD
                t.runner.terminate()
                self.fired += 1
                try:
                    self._on_deadline(t, monotonic() - t.deadline.at)
                except Exception:  # the guard must outlive any one record
                    log.exception("publishing the overrun record failed")

    def _sleep(self, until: float, now: float) -> None:
        self._wake_at = until
        self._cond.wait(None if until == INF else until - now)
        self._wake_at = -INF   # awake: `arm` need not notify

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(5.0)
