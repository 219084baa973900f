"""The shapes every source shares: the FrameSource protocol, its stats, and the per-kind Reader."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgert.clock import Clock
from edgert.frame import Frame

log = logging.getLogger("edgert.source")

# A grabbed image, the monotonic instant its grab returned (the frame's capture time), and
# its time in the video where the medium says (a container's timestamp), else None.
Shot = tuple[np.ndarray, float, "float | None"]

DEFAULT_FPS = 30.0  # pattern:, image folders, and files whose container states no rate


def redact(url: str) -> str:
    """The URL without its password, for logs: rtsp://admin:secret@cam → rtsp://admin:***@cam."""
    return re.sub(r"(//[^/@:\s]*):[^/@\s]*@", r"\1:***@", url)


def stamp(index: int, image: np.ndarray, grabbed: float, started: float, media_s: float,
          clock: Clock, source_id: str) -> Frame:
    """A Frame whose grab returned at `grabbed` after capture work began at `started`."""
    return Frame(index, image, media_s, grabbed, clock.now() - started, source_id)


class MediaTime:
    """A source's own time line: the container's timestamps where it has them, else the
    frame index over the rate; a live source's capture time. A looping file continues
    where its last pass ended, so windows and ages measured in media time never run back."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.period = 1.0 / DEFAULT_FPS
        self._offset = 0.0
        self._last = -self.period
        self._n = 0

    def set_rate(self, fps: float | None) -> None:
        if fps:
            self.period = 1.0 / fps

    def at(self, grabbed: float, media: float | None) -> float:
        if self.live:
            return grabbed
        t = self._offset + (media if media is not None else self._n * self.period)
        self._n += 1
        self._last = t
        return t

    def rewind(self) -> None:
        """The medium starts again: its time line goes on one period after the last frame."""
        self._offset, self._n = self._last + self.period, 0


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A snapshot of a source's counters.

    frames: frames captured and offered to the consumer (after the fps cap);
    dropped: of those, frames overwritten in `latest` mode before the consumer took them;
    failures: failed opens, reads, stalls and undecodable images;
    reopens: times a live source came back after a failure;
    skipped: frames a live source read but discarded to honour `fps`.
    """

    frames: int
    dropped: int
    failures: int
    reopens: int
    state: str               # ok | reopening | ended
    last_error: str | None
    skipped: int = 0


class FrameSource(Protocol):
    """Where frames come from; `open_source` builds one per configured kind and mode."""

    def start(self) -> None:
        """Open the source; raises SourceUnavailable for a configuration that can never work."""

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None when none arrived within `timeout` seconds."""

    @property
    def ended(self) -> bool:
        """A finite source has handed out its last frame; the run should end."""

    def stats(self) -> SourceStats: ...

    def close(self) -> None:
        """Stop and release everything; idempotent."""


class Reader(Protocol):
    """One kind of medium, read synchronously; the sources add threads, pacing and retries.

    `read` writes into `into` when it has the right shape and otherwise returns a new array
    (the ring adopts it). It returns None at the end of a finite medium and raises SourceError
    for a failure: a live source then reopens, a finite one counts it and reads on.
    """

    live: bool          # a device or stream: failures are retried, the medium never ends
    description: str    # the user's URL, for messages

    def validate(self) -> None:
        """Raise SourceUnavailable for a mistake that no retry can fix; never blocks."""

    def open(self) -> None: ...

    def read(self, into: np.ndarray | None) -> Shot | None: ...

    def rate(self) -> float | None:
        """Frames per second the medium says it runs at, when it knows."""

    def close(self) -> None: ...


class Tally:
    """Counters shared by a grabber thread and the consumer, and the once-per-outage warning."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._lock = threading.Lock()
        self.frames = self.dropped = self.failures = self.reopens = self.skipped = 0
        self.state = "ok"
        self.last_error: str | None = None
        self._reported: set[str] = set()  # skip-failures already logged: a looped bad file

    def count(self, *, frames: int = 0, dropped: int = 0, skipped: int = 0) -> None:
        with self._lock:
            self.frames += frames
            self.dropped += dropped
            self.skipped += skipped

    def failed(self, error: str, *, outage: bool) -> None:
        """Count one failure; log an outage once, not per retry, and a bad file once per run."""
        with self._lock:
            self.failures += 1
            self.last_error = error
            if outage:
                first = self.state == "ok"
                self.state = "reopening"
            else:
                first = error not in self._reported and len(self._reported) < 1000
                if first:
                    self._reported.add(error)
        if not first:
            log.debug("source %s: %s (again)", self.description, error)
        elif outage:
            log.warning("source %s: %s; reopening with backoff until it comes back",
                        self.description, error)
        else:
            log.warning("source %s: %s; skipped", self.description, error)

    def recovered(self) -> None:
        with self._lock:
            if self.state != "reopening":
                return
            self.state = "ok"
            self.reopens += 1
            failures = self.failures
        log.info("source %s: back (%d failures so far)", self.description, failures)

    def end(self, error: str | None = None) -> None:
        """The medium is exhausted (the state turns "ended" once its last frame is taken)."""
        if error is None:
            return
        with self._lock:
            self.last_error = error
        log.warning("source %s: %s; the source has ended", self.description, error)

    def snapshot(self, *, ended: bool = False) -> SourceStats:
        with self._lock:
            return SourceStats(self.frames, self.dropped, self.failures, self.reopens,
                               "ended" if ended else self.state, self.last_error, self.skipped)
