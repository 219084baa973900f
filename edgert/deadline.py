"""The per-frame budget as an absolute instant: a deadline, not a timeout."""

from __future__ import annotations

from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant on the run's monotonic clock by which a frame's decision must be out.

    It is fixed when the frame is captured and every stage asks it how much is left at the
    time the caller read from its clock, so time spent anywhere upstream is charged to the
    frame and no stage reads the system clock behind the run's back.
    """

    at: float          # monotonic seconds
    budget_s: float    # the budget in force, for the record

    @classmethod
    def after(cls, captured_mono: float, budget_s: float) -> Deadline:
        return cls(at=captured_mono + budget_s, budget_s=budget_s)

    @classmethod
    def never(cls, budget_s: float = INF) -> Deadline:
        """Measured, not enforced (fast replay, bench): nothing is ever late."""
        return cls(at=INF, budget_s=budget_s)

    @property
    def enforced(self) -> bool:
        return self.at != INF

    def remaining(self, now: float) -> float:
        """Seconds left at `now` (negative once passed)."""
        return self.at - now

    def expired(self, now: float) -> bool:
        return self.at <= now
