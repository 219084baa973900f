"""What goes out for each frame: the `ok` record or the overrun policy's, numbered and counted.

Both the loop and the deadline guard make records, always with the guard's lock held, so `seq`
has no gaps and the counts need no lock of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgert.config.types import Config
from edgert.deadline import monotonic
from edgert.decide.rules import NO_ACTION
from edgert.frame import STAGES, Decision
from edgert.guard import Ticket
from edgert.publish import Publisher
from edgert.stats import LatencyLog

@dataclass
class RunSummary:
    """Counts for the end-of-run report."""

    records: int = 0
    ok: int = 0
    fail_safe: int = 0
    hold_last: int = 0
    skipped: int = 0
    late_ok: int = 0     # ok records whose send ended past the deadline (a host stall): must be 0
    misses: dict[str, dict[str, int]] = field(default_factory=dict)   # stage → cause → count
    actions: dict[str, int] = field(default_factory=dict)
    latency: LatencyLog = field(default_factory=LatencyLog)
    guard_late: LatencyLog = field(default_factory=LatencyLog)   # guard records past deadline
    seconds: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str, action: str, latency_ms: dict[str, float]) -> None:
        self.records += 1
        setattr(self, status, getattr(self, status) + 1)
        self.actions[action] = self.actions.get(action, 0) + 1
        self.latency.add(latency_ms)

    def miss(self, stage: str, cause: str) -> None:
        by_cause = self.misses.setdefault(stage, {})
        by_cause[cause] = by_cause.get(cause, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "ok": self.ok, "fail_safe": self.fail_safe,
                "hold_last": self.hold_last, "skipped": self.skipped, "late_ok": self.late_ok,
                "misses": {k: dict(v) for k, v in self.misses.items()},
                "actions": dict(self.actions), "seconds": round(self.seconds, 3),
                "latency_ms": self.latency.percentiles(),
                "fail_safe_late_ms": self.guard_late.percentiles().get("late", {}),
                "source": self.source, **self.extra}


@dataclass(frozen=True, slots=True)
class _Held:
    """The last `ok` decision, for `hold_last`."""

    seq: int
    action: str
    rule: str | None
    decided_mono: float


class Recorder:
    """Builds each frame's record, sends it through the publisher and counts it."""

    def __init__(self, cfg: Config, run_id: str, publisher: Publisher) -> None:
        self.cfg, self.run_id, self.publisher = cfg, run_id, publisher
        self.seq = 0
        self.summary = RunSummary()
        self.rung: str | None = None    # the ladder rung deciding now, when not the main model
        self._held: _Held | None = None

    def decision(self, t: Ticket, status: str, action: str, latency_ms: dict[str, float],
                 decided: float, rule: str | None = None, detections: tuple[dict, ...] = (),
                 extra: dict[str, Any] | None = None) -> Decision:
        """A record for `t` carrying the next `seq` (taken when it is sent)."""
        frame = t.frame
        if self.rung is not None:
            extra = dict(extra or {}, rung=self.rung)
        # Every record carries every stage, 0 for those a late frame never reached.
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(latency_ms)
        # The budget runs from the capture timestamp; `capture` (grab + decode) came before it.
        lat["total"] = (decided - frame.captured_mono) * 1e3
        return Decision(device_id=self.cfg.device_id, run_id=self.run_id, seq=self.seq + 1,
                        frame_id=frame.index, captured_at=frame.captured_wall,
                        decided_at=frame.captured_wall + (decided - frame.captured_mono),
                        deadline_ms=self.cfg.runtime.budget_ms, status=status, action=action,
                        latency_ms={k: round(v, 3) for k, v in lat.items()},
                        detections=detections, rule=rule, extra=extra or {})

    def send(self, decision: Decision, record: dict | None = None, line: str | None = None) -> None:
        self.publisher.publish(record or decision.to_record(), line)
        self.seq = decision.seq
        self.summary.count(decision.status, decision.action, decision.latency_ms)
        if decision.status == "ok":   # hold_last ages it from when it went out
            self._held = _Held(decision.seq, decision.action, decision.rule, monotonic())

    def overrun(self, t: Ticket, cause: str, stage: str, latency_ms: dict[str, float],
                error: str | None = None, late_s: float | None = None) -> Decision:
        """The record the overrun policy gives `t`, sent."""
        now = monotonic()
        extra: dict[str, Any] = {"cause": cause, "stage": stage}
        if error:
            extra["error"] = error
        if late_s is not None:
            extra["late_ms"] = round(late_s * 1e3, 3)
        rt = self.cfg.runtime
        policy, rule = rt.on_overrun, None
        if policy == "hold_last":
            held = self._held
            if held is not None and (now - held.decided_mono) * 1e3 <= rt.hold_last_max_age_ms:
                status, action, rule = "hold_last", held.action, held.rule
                extra["held_seq"] = held.seq
                extra["held_age_ms"] = round((now - held.decided_mono) * 1e3, 3)
            else:   # nothing recent enough to repeat: the safe action
                status, action = "fail_safe", self.cfg.fail_safe.action
                extra["hold_expired"] = True
        elif policy == "skip":
            status, action = "skipped", NO_ACTION
        else:
            status, action = "fail_safe", self.cfg.fail_safe.action
        self.summary.miss(stage, cause)
        decision = self.decision(t, status, action, latency_ms, now, rule, extra=extra)
        self.send(decision)
        return decision
