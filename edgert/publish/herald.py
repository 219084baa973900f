"""The herald: the one place a frame's record is claimed and sent — exactly one per frame, `ok` only in time.

The loop arms the herald with each frame (its `seq`, its deadline) before any work on it, then
offers the `ok` decision or reports why there is none. The herald publishes the first that
comes: an offered `ok` if sending it can end before the deadline (its learned dispatch cost
plus a margin), else the overrun policy's record; and if nothing has come by the deadline, the
policy's record *at* the deadline, whatever the loop is doing. Everything here runs on one
thread, so a claim needs no lock: the herald itself is the claim.

It runs beside the loop (bench, fast replay: deadlines not enforced) or in the sender process
(`edgert.publish.sender`) at real-time priority, where no thread of the loop's interpreter can
make it wait (docs/deadlines.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgert.clock import Clock
from edgert.codec import encode
from edgert.config.types import Config
from edgert.publish.base import Post, Publisher
from edgert.records import NO_ACTION, STAGES, Decision, Timing, Verdict

INF = float("inf")
# An `ok` is sent only if its dispatch is expected to end this long before the deadline: the
# reader on the other end of a pipe or socket needs a moment to be woken, and the promise is
# judged where it reads.
SEND_MARGIN_S = 0.0005
# The stages a Ticket reports progress for (capture is done by then), and the board's size:
# seq, the stage running, when it started, one latency per stage.
WORK = ("preprocess", "infer", "postprocess", "secondary", "decide", "publish")
BOARD_SLOTS = 3 + len(WORK)


@dataclass(frozen=True, slots=True)
class Armed:
    """A frame the loop has started on: what the herald needs to speak for it alone."""

    seq: int
    frame_id: int
    arrival_s: float          # monotonic, on the shared clock
    media_s: float
    deadline_at: float        # monotonic; inf when the budget is measured, not enforced
    budget_ms: float
    captured_at: float        # Unix seconds
    capture_ms: float
    rung: str | None = None
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """The loop's `ok` decision for the armed frame, already encoded."""

    seq: int
    line: bytes
    action: str
    rule: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What went out for one frame, for the loop's counts, ladder and metrics."""

    seq: int
    status: str
    action: str
    cause: str | None = None
    stage: str | None = None
    late_ms: float | None = None


def new_board() -> np.ndarray:
    """Where the loop writes which stage its frame is in, and what each stage took, so the
    record sent at the deadline can say where the time went (read without a lock: a torn read
    only blurs that diagnostic, never what is sent)."""
    board = np.zeros(BOARD_SLOTS, np.float64)
    board[0] = -1
    return board


class Herald:
    """Claims and sends each armed frame's record; see the module docstring."""

    def __init__(self, cfg: Config, run_id: str, publisher: Publisher, clock: Clock,
                 board: np.ndarray, margin_s: float = SEND_MARGIN_S) -> None:
        self.cfg, self.run_id, self.publisher, self.clock = cfg, run_id, publisher, clock
        self.board, self.margin_s = board, margin_s
        self._armed: Armed | None = None
        self._open = False
        self._held: tuple[int, str, str | None, float] | None = None   # seq, action, rule, media
        self._costs = [0.0] * 64    # recent dispatch costs (CPU seconds)
        self._n = 0
        self.expected_send_s = 0.0   # the 99th percentile of those
        self.outcomes: list[Outcome] = []
        self.fired = 0
        self.late_ok = 0             # ok records whose dispatch ended past the deadline: must be 0

    def arm(self, armed: Armed) -> None:
        if self._open and self._armed is not None:   # the loop moved on without a word
            self.overrun(self._armed.seq, "error", "publish", {}, "no record was offered")
        self._armed, self._open = armed, True
        # A frame the loop took after its deadline (it was busy with the one before): its
        # record goes out now, as stale — the herald cannot speak for a frame it never heard of.
        if self.clock.now() >= armed.deadline_at:
            self._policy(armed, "stale", "preprocess", {}, self.clock.now(),
                         late_s=self.clock.now() - armed.deadline_at)

    def due(self) -> float:
        """When `fire` must run: the armed frame's deadline while its record is still owed."""
        return self._armed.deadline_at if self._open and self._armed is not None else INF

    def offer(self, offer: Offer) -> str:
        """The loop's `ok`: sent if it can be out before the deadline, else the policy's record.
        Returns the status that went out, or "" if the frame's record had gone already."""
        a = self._armed
        if not self._open or a is None or a.seq != offer.seq:
            return ""
        clock = self.clock
        now, cpu0 = clock.now(), clock.cpu()
        if now + self.expected_send_s + self.margin_s >= a.deadline_at:
            return self._policy(a, "predicted", "publish", self._progress(a, None), now)
        # What an output writes instead if the ok waited in its queue past the deadline: the
        # policy's record, as the herald would have sent it at the deadline (no gap in seq).
        fallback = (self._policy_post(a, "deadline", "publish", self._progress(a, None),
                                      a.deadline_at) if a.deadline_at != INF else None)
        # An output writes the ok only with the same margin left that the claim needed: the
        # reader must still be woken before the deadline.
        post = Post("decision", offer.line, a.seq, a.frame_id, "ok", offer.action, a.captured_at,
                    a.deadline_at - self.margin_s, a.source_id, fallback)
        self.publisher.publish(post)
        self._open = False
        self._held = (a.seq, offer.action, offer.rule, a.media_s)
        self.outcomes.append(Outcome(a.seq, "ok", offer.action))
        if clock.now() >= a.deadline_at:
            self.late_ok += 1
        self._learn(clock.cpu() - cpu0)
        return "ok"

    def overrun(self, seq: int, cause: str, stage: str, latency_ms: Mapping[str, float],
                error: str | None = None) -> str:
        """The loop has no `ok` for frame `seq` (stale, predicted, an error): the policy's record."""
        a = self._armed
        if not self._open or a is None or a.seq != seq:
            return ""
        return self._policy(a, cause, stage, dict(latency_ms), self.clock.now(), error=error)

    def fire(self) -> str:
        """At the deadline: the policy's record for a frame nobody has spoken for."""
        a = self._armed
        now = self.clock.now()
        if not self._open or a is None or now < a.deadline_at:
            return ""
        self.fired += 1
        latency = self._progress(a, now)
        stage = next((s for s in WORK[:-1] if s not in latency and s != "secondary"), "publish")
        return self._policy(a, "deadline", self._stage(a) or stage, latency, now,
                            late_s=now - a.deadline_at)

    def _stage(self, a: Armed) -> str | None:
        b = self.board
        if int(b[0]) != a.seq or not 0 <= int(b[1]) < len(WORK):
            return None
        return WORK[int(b[1])]

    def _progress(self, a: Armed, now: float | None) -> dict[str, float]:
        """What the board says each finished stage took (and, with `now`, the running one)."""
        b = self.board
        if int(b[0]) != a.seq:
            return {}
        lat = {s: float(b[3 + i]) for i, s in enumerate(WORK[:-1]) if b[3 + i] > 0.0}
        running = self._stage(a)
        if now is not None and running is not None and running not in lat:
            lat[running] = max(0.0, (now - float(b[2])) * 1e3)
        return lat

    def _policy(self, a: Armed, cause: str, stage: str, latency_ms: dict[str, float],
                now: float, late_s: float | None = None, error: str | None = None) -> str:
        post = self._policy_post(a, cause, stage, latency_ms, now, late_s, error)
        self.publisher.publish(post)
        self._open = False
        self.outcomes.append(Outcome(a.seq, post.status, post.action, cause, stage,
                                     round(late_s * 1e3, 3) if late_s is not None else None))
        return post.status

    def _policy_post(self, a: Armed, cause: str, stage: str, latency_ms: dict[str, float],
                     now: float, late_s: float | None = None,
                     error: str | None = None) -> Post:
        """The overrun policy's record for `a` as decided at `now` (nothing is sent here)."""
        rt = self.cfg.runtime
        rule: str | None = None
        held_seq: int | None = None
        held_age: float | None = None
        expired = False
        if rt.on_overrun == "hold_last":
            held = self._held
            # The age is in media time: how far the scene has moved on, which a loaded
            # machine cannot stretch.
            age_ms = (a.media_s - held[3]) * 1e3 if held is not None else INF
            if held is not None and age_ms <= rt.hold_last_max_age_ms:
                status, action, rule = "hold_last", held[1], held[2]
                held_seq, held_age = held[0], round(age_ms, 3)
            else:
                status, action, expired = "fail_safe", self.cfg.fail_safe.action, True
        elif rt.on_overrun == "skip":
            status, action = "skipped", NO_ACTION
        else:
            status, action = "fail_safe", self.cfg.fail_safe.action
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(latency_ms)
        lat["capture"] = a.capture_ms
        lat = {k: round(v, 3) for k, v in lat.items()}
        lat["total"] = round((now - a.arrival_s) * 1e3, 3)
        late_ms = round(late_s * 1e3, 3) if late_s is not None else None
        decision = Decision(
            self.cfg.device_id, self.run_id, a.seq,
            Verdict(a.frame_id, status, action, rule, (), cause, stage, error, a.rung, held_seq,
                    held_age, expired, a.source_id),
            Timing(a.captured_at, a.captured_at + (now - a.arrival_s), self.cfg.runtime.budget_ms,
                   lat, late_ms))
        return Post("decision", encode(decision), a.seq, a.frame_id, status, action,
                    a.captured_at, INF, a.source_id)

    def _learn(self, seconds: float) -> None:
        self._costs[self._n % len(self._costs)] = seconds
        self._n += 1
        if self._n % 8 == 0 or self._n == 1:
            done = sorted(self._costs[:min(self._n, len(self._costs))])
            self.expected_send_s = done[min(len(done) - 1, int(0.99 * len(done)))]

    def take_outcomes(self) -> list[Outcome]:
        out, self.outcomes = self.outcomes, []
        return out
