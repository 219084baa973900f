"""`every` mode for recorded and synthetic media: each read decodes the next frame, no thread."""

from __future__ import annotations

from edgert.clock import Clock
from edgert.errors import SourceError
from edgert.frame import Frame
from edgert.source.base import MediaTime, Reader, SourceStats, Tally, stamp
from edgert.source.ring import BufferRing
from edgert.source.timing import Pacer


class DirectSource:
    """Frames in order, decoded on the caller's thread when it asks, so replays are repeatable.

    Only `pattern:` is paced (at `fps`); a file or image folder runs as fast as the consumer.
    Meant for one consumer thread; `stats` may be called from any thread.
    """

    on_demand = True   # a frame is decoded when asked for: it is as fresh as the asking

    def __init__(self, reader: Reader, *, loop: bool, fps: float | None, clock: Clock,
                 source_id: str = "main") -> None:
        self._clock, self.source_id = clock, source_id
        self._media = MediaTime(live=False)
        self._reader = reader
        self._loop = loop
        self._pacer = Pacer(fps) if fps else None
        self._ring = BufferRing(3)
        self._held: int | None = None
        self._tally = Tally(reader.description)
        self._index = 0
        self._pass_frames = 0
        self._open = False
        self._ended = False

    def start(self) -> None:
        self._reader.validate()
        self._reader.open()
        self._media.set_rate(self._reader.rate())
        self._open = True

    @property
    def ended(self) -> bool:
        return self._ended

    def stats(self) -> SourceStats:
        return self._tally.snapshot(ended=self._ended)

    def read(self, timeout: float) -> Frame | None:
        if not self._open or self._ended:
            return None
        clock = self._clock
        deadline = clock.now() + max(0.0, timeout)
        if self._held is not None:
            self._ring.release(self._held)
            self._held = None
        if self._pacer is not None:
            now = clock.now()
            due = self._pacer.due(now)
            if due > deadline:
                clock.sleep(deadline - now)
                return None
            if due > now:
                clock.sleep(due - now)
        while True:
            slot = self._ring.acquire()
            started = clock.now()
            try:
                shot = self._reader.read(self._ring.buffer(slot))
            except SourceError as exc:  # one undecodable image: count it and read on
                self._ring.release(slot)
                self._tally.failed(str(exc), outage=False)
                if clock.now() >= deadline:
                    return None
                continue
            if shot is None:
                self._ring.release(slot)
                if not self._rewind():
                    return None
                continue
            image, grabbed, media = shot
            frame = stamp(self._index, self._ring.fill(slot, image), grabbed, started,
                          self._media.at(grabbed, media), clock, self.source_id)
            self._held = slot
            self._index += 1
            self._pass_frames += 1
            self._tally.count(frames=1)
            if self._pacer is not None:
                self._pacer.advance()
            return frame

    def _rewind(self) -> bool:
        """At the end of the medium: start it again if looping, else end the source."""
        if not self._loop or self._pass_frames == 0:
            self._finish("a whole pass yielded no frame" if self._loop else None)
            return False
        try:
            self._reader.open()
        except SourceError as exc:  # the file vanished between passes
            self._finish(str(exc))
            return False
        self._pass_frames = 0
        self._media.rewind()
        return True

    def _finish(self, error: str | None) -> None:
        self._ended = True
        self._tally.end(error)
        self._reader.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._reader.close()
