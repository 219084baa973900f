"""The herald: the one place a frame's record is claimed, numbered and sent — exactly one per frame, `ok` only in time.

Each frame is armed when it arrives (a grabber arms it as it hands the frame over; a source
read on demand is armed by the loop as it takes it), with its deadline, under a `uid` unique
in the process. From then on the herald holds it, with every other frame armed and not yet
spoken for — of every source — and publishes the first that comes for each: an offered `ok` if
sending it can end before the deadline (its learned dispatch cost plus a margin), else the
overrun policy's record; and if nothing has come by the deadline, the policy's record *at*
the deadline, whatever the loop is doing — so a frame waiting behind another camera's still
gets its record on time. A frame a newer one of the same source replaced before the loop took
it (`latest` mode) is dropped without a record, as before it was ever armed.

The herald numbers records: `seq` counts one source's records as they go out, so a
subscriber sees 1, 2, 3 … with no gap whatever was dropped. The loop encodes its `ok` with
`"seq":0` and the herald writes the number in. Everything here runs on one thread, so a claim
needs no lock: the herald itself is the claim.

It runs beside the loop (bench, fast replay: deadlines not enforced) or in the sender process
(`edgert.publish.sender`) at real-time priority, where no thread of the loop's interpreter can
make it wait (docs/deadlines.md).
"""

from __future__ import annotations

import heapq
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
# the frame's uid, the stage running, when it started, one latency per stage.
WORK = ("preprocess", "infer", "postprocess", "secondary", "decide", "publish")
BOARD_SLOTS = 3 + len(WORK)


@dataclass(frozen=True, slots=True)
class Armed:
    """A frame that has arrived: what the herald needs to speak for it alone."""

    uid: int                  # unique in the process: how the loop and the herald name it
    frame_id: int
    arrival_s: float          # monotonic, on the shared clock
    media_s: float
    deadline_at: float        # monotonic; inf when the budget is measured, not enforced
    budget_ms: float
    captured_at: float        # Unix seconds
    capture_ms: float
    rung: str | None = None
    source_id: str | None = None   # in records: set where [[sources]] names the sources
    source: str = "main"           # whose seq, held decision and fail-safe action apply


@dataclass(frozen=True, slots=True)
class Offer:
    """The loop's `ok` decision for an armed frame, encoded with `"seq":0` (see SEQ_AT)."""

    uid: int
    line: bytes
    action: str
    rule: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What went out for one frame, for the loop's counts, ladder and metrics."""

    uid: int
    seq: int
    source: str
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


# How the loop's encoder writes the seq it does not know (the codec puts it right after
# `run_id`; `"held_seq"` cannot match, its quote comes before `held`).
SEQ_AT = b'"seq":0,'


class Herald:
    """Claims, numbers and sends each armed frame's record; see the module docstring."""

    def __init__(self, cfg: Config, run_id: str, publisher: Publisher, clock: Clock,
                 board: np.ndarray, margin_s: float = SEND_MARGIN_S) -> None:
        self.run_id, self.publisher, self.clock = run_id, publisher, clock
        self.board, self.margin_s = board, margin_s
        self.configure(cfg)
        self._armed: dict[int, Armed] = {}       # uid → frame still owed a record
        self._due: list[tuple[float, int]] = []  # (deadline, uid), a heap; stale entries skipped
        self._seq: dict[str, int] = {}           # source → the last seq sent
        self._held: dict[str, tuple[int, str, str | None, float]] = {}  # seq, action, rule, media
        self._costs = [0.0] * 64    # recent dispatch costs (CPU seconds)
        self._n = 0
        self.expected_send_s = 0.0   # the 99th percentile of those
        self.outcomes: list[Outcome] = []
        self.fired = 0
        self.late_ok = 0             # ok records whose dispatch ended past the deadline: must be 0

    def configure(self, cfg: Config) -> None:
        """`cfg` in force from the next record on (a reload's commit)."""
        self.cfg = cfg
        self._fail_safe = {s.id: s.fail_safe or cfg.fail_safe.action for s in cfg.sources}

    def arm(self, armed: Armed) -> None:
        self._armed[armed.uid] = armed
        if armed.deadline_at != INF:
            heapq.heappush(self._due, (armed.deadline_at, armed.uid))
        # Armed after its deadline (a message that waited, a loop that took it late): its
        # record goes out now, as stale.
        now = self.clock.now()
        if now >= armed.deadline_at:
            self._policy(armed, "stale", "preprocess", {}, now, late_s=now - armed.deadline_at)

    def drop(self, uid: int) -> None:
        """A newer frame of the same source replaced this one before the loop took it: it is
        owed nothing (if its deadline came first, its record has gone already)."""
        self._armed.pop(uid, None)

    def due(self) -> float:
        """When `fire` must run next: the earliest deadline of a frame still owed a record."""
        due, armed = self._due, self._armed
        while due and due[0][1] not in armed:
            heapq.heappop(due)
        return due[0][0] if due else INF

    @property
    def owed(self) -> int:
        return len(self._armed)

    def offer(self, offer: Offer) -> str:
        """The loop's `ok`: sent if it can be out before the deadline, else the policy's record.
        Returns the status that went out, or "" if the frame's record had gone already."""
        a = self._armed.get(offer.uid)
        if a is None:
            return ""
        clock = self.clock
        now, cpu0 = clock.now(), clock.cpu()
        if now + self.expected_send_s + self.margin_s >= a.deadline_at:
            return self._policy(a, "predicted", "publish", self._progress(a, None), now)
        seq = self._next_seq(a)
        # What an output writes instead if the ok waited in its queue past the deadline: the
        # policy's record, as the herald would have sent it at the deadline (no gap in seq).
        fallback = (self._policy_post(a, seq, "deadline", "publish", self._progress(a, None),
                                      a.deadline_at) if a.deadline_at != INF else None)
        # An output writes the ok only with the same margin left that the claim needed: the
        # reader must still be woken before the deadline.
        post = Post("decision", offer.line.replace(SEQ_AT, b'"seq":%d,' % seq, 1), seq,
                    a.frame_id, "ok", offer.action, a.captured_at, a.deadline_at - self.margin_s,
                    a.source_id, fallback)
        self.publisher.publish(post)
        del self._armed[a.uid]
        self._held[a.source] = (seq, offer.action, offer.rule, a.media_s)
        self.outcomes.append(Outcome(a.uid, seq, a.source, "ok", offer.action))
        if clock.now() >= a.deadline_at:
            self.late_ok += 1
        self._learn(clock.cpu() - cpu0)
        return "ok"

    def overrun(self, uid: int, cause: str, stage: str, latency_ms: Mapping[str, float],
                error: str | None = None) -> str:
        """The loop has no `ok` for frame `uid` (stale, predicted, an error): the policy's record."""
        a = self._armed.get(uid)
        if a is None:
            return ""
        return self._policy(a, cause, stage, dict(latency_ms), self.clock.now(), error=error)

    def fire(self) -> str:
        """At a deadline: the policy's record for each frame nobody has spoken for by then.
        Returns the status of the last one sent ("" if none was due)."""
        status = ""
        now = self.clock.now()
        while self.due() <= now:
            _, uid = heapq.heappop(self._due)
            a = self._armed[uid]
            self.fired += 1
            latency = self._progress(a, now)
            stage = next((s for s in WORK[:-1] if s not in latency and s != "secondary"),
                         "publish")
            status = self._policy(a, "deadline", self._stage(a) or stage, latency, now,
                                  late_s=now - a.deadline_at)
        return status

    def abandon(self, cause: str, error: str) -> None:
        """The loop will never speak again (it stopped, it died): every frame still owed gets
        the policy's record now, oldest first."""
        for a in sorted(self._armed.values(), key=lambda a: a.deadline_at):
            self._policy(a, cause, "publish", {}, self.clock.now(), error=error)

    def _next_seq(self, a: Armed) -> int:
        seq = self._seq.get(a.source, 0) + 1
        self._seq[a.source] = seq
        return seq

    def _stage(self, a: Armed) -> str | None:
        b = self.board
        if int(b[0]) != a.uid or not 0 <= int(b[1]) < len(WORK):
            return None
        return WORK[int(b[1])]

    def _progress(self, a: Armed, now: float | None) -> dict[str, float]:
        """What the board says each finished stage took (and, with `now`, the running one)."""
        b = self.board
        if int(b[0]) != a.uid:
            return {}
        lat = {s: float(b[3 + i]) for i, s in enumerate(WORK[:-1]) if b[3 + i] > 0.0}
        running = self._stage(a)
        if now is not None and running is not None and running not in lat:
            lat[running] = max(0.0, (now - float(b[2])) * 1e3)
        return lat

    def _policy(self, a: Armed, cause: str, stage: str, latency_ms: dict[str, float],
                now: float, late_s: float | None = None, error: str | None = None) -> str:
        post = self._policy_post(a, self._next_seq(a), cause, stage, latency_ms, now, late_s,
                                 error)
        self.publisher.publish(post)
        del self._armed[a.uid]
        self.outcomes.append(Outcome(a.uid, post.seq, a.source, post.status, post.action, cause,
                                     stage, round(late_s * 1e3, 3) if late_s is not None
                                     else None))
        return post.status

    def _policy_post(self, a: Armed, seq: int, cause: str, stage: str,
                     latency_ms: dict[str, float], now: float, late_s: float | None = None,
                     error: str | None = None) -> Post:
        """The overrun policy's record for `a` as decided at `now` (nothing is sent here)."""
        rt = self.cfg.runtime
        rule: str | None = None
        held_seq: int | None = None
        held_age: float | None = None
        expired = False
        fail_safe = self._fail_safe.get(a.source, self.cfg.fail_safe.action)
        if rt.on_overrun == "hold_last":
            held = self._held.get(a.source)
            # The age is in media time: how far the scene has moved on, which a loaded
            # machine cannot stretch.
            age_ms = (a.media_s - held[3]) * 1e3 if held is not None else INF
            if held is not None and age_ms <= rt.hold_last_max_age_ms:
                status, action, rule = "hold_last", held[1], held[2]
                held_seq, held_age = held[0], round(age_ms, 3)
            else:
                status, action, expired = "fail_safe", fail_safe, True
        elif rt.on_overrun == "skip":
            status, action = "skipped", NO_ACTION
        else:
            status, action = "fail_safe", fail_safe
        lat = dict.fromkeys(STAGES, 0.0)
        lat.update(latency_ms)
        lat["capture"] = a.capture_ms
        lat = {k: round(v, 3) for k, v in lat.items()}
        lat["total"] = round((now - a.arrival_s) * 1e3, 3)
        late_ms = round(late_s * 1e3, 3) if late_s is not None else None
        decision = Decision(
            self.cfg.device_id, self.run_id, seq,
            Verdict(a.frame_id, status, action, rule, (), cause, stage, error, a.rung, held_seq,
                    held_age, expired, a.source_id),
            Timing(a.captured_at, a.captured_at + (now - a.arrival_s), self.cfg.runtime.budget_ms,
                   lat, late_ms))
        return Post("decision", encode(decision), seq, a.frame_id, status, action,
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
