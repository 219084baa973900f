"""The hand-off from a grabber thread to the consumer: newest frame wins, or a short queue."""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

import numpy as np

from edgert.clock import Clock
from edgert.frame import Frame
from edgert.source.base import MediaTime, Shot, Tally, stamp
from edgert.source.ring import BufferRing

QUEUE = 4  # `every` mode on a live source: enough to ride out a slow frame, not to lag


class Mailbox:
    """Frames waiting for the consumer, decoded into a ring of buffers both sides share.

    `latest`: one slot; a newer frame replaces one the consumer never took (counted as
    dropped), so nothing queues behind a slow consumer. Otherwise: up to QUEUE frames, and
    the grabber waits for a free buffer, so order is kept and memory stays bounded.
    The consumer's current frame keeps its buffer until the consumer asks for the next one.

    `watch` hooks the run in: `arrive` sees each frame as it is handed over (and may return it
    changed: the herald arms it and it gets its uid), `drop` each frame replaced or cleared
    before the consumer took it. A `bell` shared by several mailboxes is rung after each
    hand-over, so one consumer can wait on all of them.
    """

    def __init__(self, *, latest: bool, tally: Tally, clock: Clock, media: MediaTime,
                 source_id: str) -> None:
        self._clock, self.media, self._source_id = clock, media, source_id
        self._latest = latest
        self._tally = tally
        # One buffer being filled, one held by the consumer, the rest waiting.
        self._ring = BufferRing(3 if latest else QUEUE + 2)
        self._queue: deque[tuple[int, Frame]] = deque()
        self._held: int | None = None
        self._cond = threading.Condition()
        self._index = 0
        self._exhausted = False
        self._closed = False
        self._since = float("inf")   # arrival of the oldest frame handed over since the last take
        self._arrive: Callable[[Frame], Frame] | None = None
        self._drop: Callable[[Frame], None] | None = None
        self.bell: threading.Condition | None = None

    def watch(self, arrive: Callable[[Frame], Frame] | None,
              drop: Callable[[Frame], None] | None) -> None:
        with self._cond:
            self._arrive, self._drop = arrive, drop

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._exhausted and not self._queue

    # The grabber's side.

    def acquire(self, stop: threading.Event) -> int | None:
        """A free buffer's slot, waiting while the queue is full; None once `stop` is set."""
        with self._cond:
            while not self._ring.has_free() and not stop.is_set():
                self._cond.wait(0.1)
            return None if stop.is_set() else self._ring.acquire()

    def buffer(self, slot: int) -> np.ndarray | None:
        with self._cond:
            return self._ring.buffer(slot)

    def discard(self, slot: int) -> None:
        with self._cond:
            self._ring.release(slot)
            self._cond.notify_all()

    def publish(self, slot: int, shot: Shot, started: float) -> None:
        image, grabbed, media = shot
        dropped = 0
        with self._cond:
            frame = stamp(self._index, self._ring.fill(slot, image), grabbed, started,
                          self.media.at(grabbed, media), self._clock, self._source_id)
            if self._arrive is not None:
                frame = self._arrive(frame)
            self._index += 1
            if self._latest and self._queue:
                old, replaced = self._queue.popleft()
                self._ring.release(old)
                dropped = 1
                if self._drop is not None:
                    self._drop(replaced)
            self._queue.append((slot, frame))
            self._since = min(self._since, frame.arrival_s)
            self._cond.notify_all()
        self._tally.count(frames=1, dropped=dropped)
        self._ring_bell()

    def _ring_bell(self) -> None:
        # Outside our lock: the consumer holds the bell while it looks into each mailbox.
        if self.bell is not None:
            with self.bell:
                self.bell.notify_all()

    def finish(self) -> None:
        """No more frames will come; the consumer still gets those already waiting."""
        with self._cond:
            self._exhausted = True
            self._cond.notify_all()
        self._ring_bell()

    # The consumer's side.

    def take(self, timeout: float) -> Frame | None:
        deadline = self._clock.now() + max(0.0, timeout)
        with self._cond:
            if self._held is not None:
                self._ring.release(self._held)
                self._held = None
                self._cond.notify_all()
            while not self._queue:
                remaining = deadline - self._clock.now()
                if self._exhausted or self._closed or remaining <= 0.0:
                    return None
                self._cond.wait(remaining)
            slot, frame = self._queue.popleft()
            self._held = slot
            self._since = self._queue[0][1].arrival_s if self._queue else float("inf")
            return frame

    def peek(self) -> tuple[Frame, float] | None:
        """The frame `take` would return now, left where it is, and since when this source
        has had a frame waiting (in `latest` mode, replaced ones count: a camera whose frames
        keep being replaced while it waits has waited since the first)."""
        with self._cond:
            return (self._queue[0][1], self._since) if self._queue else None

    def close(self) -> None:
        with self._cond:
            if self._drop is not None:   # handed over, never taken: owed nothing
                for _, frame in self._queue:
                    self._drop(frame)
            self._arrive = self._drop = None
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._ring_bell()
