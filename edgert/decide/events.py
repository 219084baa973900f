"""Rule events: `new` when a rule (or a tracked object under it) starts to hold, `update` at
most once per `update_s` of media time while it holds, `end` when it stops; a crossing is one
`new`. The runtime numbers them and stamps device, run and wall time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgert.config.types import Rule


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event as the decide stage knows it: `number` is unique per engine, stable across
    the event's new / update / end."""

    rule: str
    kind: str                          # new | update | end
    number: int
    media_s: float
    track_id: int | None = None
    counts: Mapping[str, int] | None = None


class _Open:
    __slots__ = ("number", "last_update")

    def __init__(self, number: int, t: float) -> None:
        self.number, self.last_update = number, t


class Events:
    """Open events by (rule, track) and the drafts made since the last `take`."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int | None], _Open] = {}
        self._drafts: list[EventDraft] = []
        self._next = 1

    def _new(self, rule: Rule, t: float, track: int | None, counts) -> _Open:
        ev = _Open(self._next, t)
        self._next += 1
        self._drafts.append(EventDraft(rule.name, "new", ev.number, t, track, counts))
        return ev

    def state(self, rule: Rule, track: int | None, on: bool, t: float, counts=None) -> None:
        """The condition for (rule, track) is `on` at `t`: open, update or end its event."""
        key = (rule.name, track)
        ev = self._open.get(key)
        if on and ev is None:
            self._open[key] = self._new(rule, t, track, counts)
        elif on and ev is not None and t - ev.last_update >= rule.update_s:
            ev.last_update = t
            self._drafts.append(EventDraft(rule.name, "update", ev.number, t, track, counts))
        elif not on and ev is not None:
            del self._open[key]
            self._drafts.append(EventDraft(rule.name, "end", ev.number, t, track, counts))

    def rule_state(self, rule: Rule, on: bool, t: float, counts) -> None:
        self.state(rule, None, on, t, counts)

    def crossing(self, rule: Rule, t: float, track: int, counts: Mapping[str, int]) -> None:
        self._new(rule, t, track, counts)

    def take(self) -> tuple[EventDraft, ...]:
        out, self._drafts = tuple(self._drafts), []
        return out


class PerTrack:
    """Dwell: each tracked object's time inside the rule's zone; an event per object that stays
    `dwell_s`. An object the detector misses for a frame or two keeps its time while its track
    lives; it leaves when it is seen outside or its track ends."""

    def __init__(self, rule: Rule, events: Events) -> None:
        self.rule, self.events = rule, events
        self.since: dict[int, float] = {}
        self.dwelling: set[int] = set()

    def step(self, t: float, ids: np.ndarray | None, m: np.ndarray, v, tracker) -> bool:
        if ids is None:
            return False
        inside = {int(i) for i in ids[m] if i >= 0}
        seen = {int(i) for i in ids if i >= 0}
        alive = tracker.alive()
        for tid in list(self.since):
            if tid not in inside and (tid in seen or tid not in alive):
                del self.since[tid]
                self._leave(tid, t)
        for tid in inside:
            self.since.setdefault(tid, t)
        for tid, since in self.since.items():
            if t - since >= self.rule.dwell_s:
                self.dwelling.add(tid)
                self.events.state(self.rule, tid, True, t)
        return bool(self.dwelling)

    def _leave(self, tid: int, t: float) -> None:
        if tid in self.dwelling:
            self.dwelling.discard(tid)
            self.events.state(self.rule, tid, False, t)

    def close(self, t: float) -> None:
        for tid in list(self.dwelling):
            self._leave(tid, t)
        self.since.clear()
