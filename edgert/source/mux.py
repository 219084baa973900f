"""Several sources read as one: the waiting frame whose deadline comes first, and the others beside it for a batch."""

from __future__ import annotations

import threading
from typing import Sequence

from edgert.clock import Clock
from edgert.frame import Frame
from edgert.source.base import FrameSource


class Mux:
    """The loop's view of its sources. One source is read as it is (a source read on demand
    decodes on the loop's thread). Several are grabbed on threads of their own, each into its
    mailbox; they ring one bell, so the loop sleeps until any has a frame, and a source that
    stalls or reopens holds up no other.

    Every source has the same budget, so deadline order is arrival order — with one change:
    a source whose waiting frame was replaced by a newer one (`latest` mode) keeps the place
    of the first. Ordered by its newest frame alone, a camera whose frames come just after
    the others' would be passed over again and again on a loop that cannot keep up with all
    of them (measured: four cameras, one lost 192 of 243 frames, another 1).

    And cameras whose frames come together (the same rate, started together) would take the
    same places in every round: on a loop that can decide only some of each round, the last
    ones would never get a decision (measured: twelve cameras, the last two 0.05 and 0.2 ok
    decisions a second, the first six all thirty). So frames whose waits began within `tie_s`
    of the earliest (the loop sets it to about one frame's cost) are as good as simultaneous:
    among them, the source whose last decision in time is oldest goes first."""

    def __init__(self, sources: Sequence[FrameSource], ids: Sequence[str], clock: Clock) -> None:
        self.sources, self.ids, self._clock = list(sources), list(ids), clock
        self._by_id = dict(zip(self.ids, self.sources))
        self._bell = threading.Condition()
        self.tie_s = 0.0
        self._served: dict[str, int] = {}   # source → when it last had an ok decision (a count)
        self._oks = 0
        if len(self.sources) > 1:
            for s in self.sources:
                s.ring(self._bell)   # type: ignore[attr-defined]  (a GrabberSource)

    @property
    def ended(self) -> bool:
        return all(s.ended for s in self.sources)

    def next(self, timeout: float) -> Frame | None:
        """The waiting frame with the earliest deadline, or None after `timeout` seconds."""
        if len(self.sources) == 1:
            return self.sources[0].read(timeout)
        end = self._clock.now() + timeout
        with self._bell:
            while True:
                heads = self.heads()
                if heads:
                    break
                left = end - self._clock.now()
                if left <= 0.0 or self.ended:
                    return None
                self._bell.wait(left)
        return self.take(heads[0].source_id)

    def heads(self, exclude: str | None = None) -> list[Frame]:
        """The frame each source would give now (but `exclude`'s), earliest deadline first."""
        waiting = [p for s, i in zip(self.sources, self.ids)
                   if i != exclude and (p := s.peek()) is not None]   # type: ignore[attr-defined]
        waiting.sort(key=lambda p: p[1])
        if self.tie_s > 0.0 and len(waiting) > 1:
            cut = waiting[0][1] + self.tie_s
            n = sum(1 for p in waiting if p[1] <= cut)
            served = self._served
            waiting[:n] = sorted(waiting[:n], key=lambda p: served.get(p[0].source_id, -1))
        return [frame for frame, _ in waiting]

    def take(self, source_id: str) -> Frame | None:
        """The frame `source_id` has waiting (a newer one, if it replaced the one peeked)."""
        return self._by_id[source_id].read(0.0)

    def served(self, source_id: str) -> None:
        """`source_id` had a frame decided in time: it yields to those waiting longer for one."""
        self._oks += 1
        self._served[source_id] = self._oks

    def wait(self, count: int, until: float) -> None:
        """Until `count` sources have a frame waiting or `until` (a fixed-size batch's wait)."""
        with self._bell:
            while len(self.heads()) < count and not self.ended:
                left = until - self._clock.now()
                if left <= 0.0:
                    return
                self._bell.wait(left)
