"""The run's counts, fed by what the herald says went out: the end-of-run report and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgert.publish.herald import Outcome
from edgert.stats import LatencyLog


@dataclass
class RunSummary:
    """Counts since start. Fed on the loop's thread only, so it needs no lock."""

    records: int = 0
    ok: int = 0
    fail_safe: int = 0
    hold_last: int = 0
    skipped: int = 0
    late_ok: int = 0     # ok records whose dispatch ended past the deadline: must be 0
    misses: dict[str, dict[str, int]] = field(default_factory=dict)   # stage → cause → count
    actions: dict[str, int] = field(default_factory=dict)
    latency: LatencyLog = field(default_factory=LatencyLog)
    guard_late: LatencyLog = field(default_factory=LatencyLog)   # records sent at the deadline
    seconds: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, o: Outcome) -> None:
        self.records += 1
        setattr(self, o.status, getattr(self, o.status) + 1)
        self.actions[o.action] = self.actions.get(o.action, 0) + 1
        if o.cause is not None:
            by_cause = self.misses.setdefault(o.stage or "?", {})
            by_cause[o.cause] = by_cause.get(o.cause, 0) + 1
        if o.late_ms is not None:
            self.guard_late.add({"late": o.late_ms})

    def counts(self) -> dict[str, int]:
        return {"records": self.records, "ok": self.ok, "fail_safe": self.fail_safe,
                "hold_last": self.hold_last, "skipped": self.skipped, "late_ok": self.late_ok}

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts(), "misses": {k: dict(v) for k, v in self.misses.items()},
                "actions": dict(self.actions), "seconds": round(self.seconds, 3),
                "latency_ms": self.latency.percentiles(),
                "fail_safe_late_ms": self.guard_late.percentiles().get("late", {}),
                "source": self.source, **self.extra}
