"""The clock and the per-frame budget: the only place that reads time for deadlines."""

from __future__ import annotations

import time
from dataclasses import dataclass

# One monotonic clock for every deadline; wall time is only ever a label in records.
monotonic = time.monotonic
wall = time.time


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute instant on the monotonic clock by which a frame's decision must be out.

    A deadline is not a timeout: it is fixed when the frame is captured and every stage
    asks it how much is left, so time spent anywhere upstream is charged to the frame.
    """

    at: float          # monotonic seconds
    budget_s: float    # the budget in force, for the record

    @classmethod
    def after(cls, captured_mono: float, budget_s: float) -> Deadline:
        return cls(at=captured_mono + budget_s, budget_s=budget_s)

    @classmethod
    def never(cls) -> Deadline:
        return cls(at=float("inf"), budget_s=float("inf"))

    def remaining(self, now: float | None = None) -> float:
        """Seconds left (negative once passed)."""
        return self.at - (monotonic() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        return self.remaining(now) <= 0.0
