"""Time as a value: the one object per run that says what time it is, so replay and tests can say otherwise.

Budgets and latencies read a `Clock` (monotonic seconds, plus the wall-clock label records
carry). Nothing that *decides* reads it: debounce windows, `hold_last` ages and (later)
dwell and track lifetimes read a frame's media time, which a recording fixes and no load on
the machine can stretch. Only this module reads the system clocks for those purposes.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds: budgets, deadlines, latencies."""

    def wall_at(self, mono: float) -> float:
        """The Unix time of the monotonic instant `mono`, for records."""

    def cpu(self) -> float:
        """This thread's CPU seconds: costs a preemption must not inflate."""


WALL_READ_S = 20e-6   # a pair of clock readings this close was not preempted


class LiveClock:
    """The machine's clocks. Wall time is derived from the monotonic instant at each call, so
    a record's `captured_at` and `decided_at` keep their distance even when NTP steps."""

    now = staticmethod(time.monotonic)
    cpu = staticmethod(time.thread_time)

    @staticmethod
    def wall_at(mono: float) -> float:
        # The two clocks are read between two monotonic readings, again if a preemption fell
        # between them: read once, a thread preempted after `time()` stamped records early by
        # the preemption, and an observer saw an `ok` sent in time as late (one in 18,000
        # frames beside two busy processes).
        best_gap, offset = float("inf"), 0.0
        for _ in range(4):
            m1 = time.monotonic()
            w = time.time()
            m2 = time.monotonic()
            if m2 - m1 < best_gap:
                best_gap, offset = m2 - m1, w - (m1 + m2) / 2
            if best_gap < WALL_READ_S:
                break
        return offset + mono

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0.0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told: tests decide what a slow or fast machine looks like."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1.7e9) -> None:
        self.t, self.wall_offset = start, wall_offset
        self.cpu_t = 0.0

    def now(self) -> float:
        return self.t

    def wall_at(self, mono: float) -> float:
        return self.wall_offset + mono

    def cpu(self) -> float:
        return self.cpu_t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        self.cpu_t += max(0.0, seconds)


LIVE = LiveClock()

# The machine's clocks for I/O timing that no recording could drive (heartbeats, reconnect
# backoff, timeouts on sockets and ports). Never for deciding or for a frame's budget.
monotonic = time.monotonic
wall = time.time
