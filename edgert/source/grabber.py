"""A grabber thread ahead of the consumer, so capture never waits for inference."""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

from edgert.config.types import SourceConfig
from edgert.clock import Clock
from edgert.errors import SourceError
from edgert.frame import Frame
from edgert.source.base import DEFAULT_FPS, MediaTime, Reader, Shot, SourceStats, Tally, log
from edgert.source.mailbox import Mailbox
from edgert.source.timing import Backoff, Pacer, RateCap


class GrabberSource:
    """Reads on its own thread into a Mailbox (`latest`: newest wins; `every`: short queue).

    Recorded and synthetic media are paced at their own rate (capped by `fps`), so behind a
    slow consumer they lose frames exactly as a camera would. Live kinds are capped by `fps`
    by skipping frames, and never end: a failed open, a read error or a stall is counted,
    logged once per outage, and the reader is reopened with exponential backoff.
    """

    def __init__(self, reader: Reader, cfg: SourceConfig, clock: Clock,
                 source_id: str = "main", *, paced: bool = True) -> None:
        self._clock = clock
        self._paced = paced
        self._reader = reader
        self._loop = cfg.loop
        self._fps = cfg.fps
        self._backoff = Backoff(cfg.reopen_initial_s, cfg.reopen_max_s)
        # A blocked OpenCV call cannot be interrupted; close waits for the backend's timeouts.
        self._join_s = 2.0 * cfg.stall_timeout_s + 5.0
        self._tally = Tally(reader.description)
        self._mailbox = Mailbox(latest=cfg.mode != "every", tally=self._tally, clock=clock,
                                media=MediaTime(reader.live), source_id=source_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._reader.validate()
        if not self._reader.live:  # a missing or unreadable file is the user's to fix, now
            self._reader.open()
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgert-source")
        self._thread.start()

    @property
    def ended(self) -> bool:
        return self._mailbox.ended

    def stats(self) -> SourceStats:
        return self._tally.snapshot(ended=self._mailbox.ended)

    def read(self, timeout: float) -> Frame | None:
        return self._mailbox.take(timeout)

    def peek(self) -> tuple[Frame, float] | None:
        """The frame `read` would return now, without taking it, and since when the source
        has had one waiting (several sources: see edgert.source.mux)."""
        return self._mailbox.peek()

    def watch(self, arrive: Callable[[Frame], Frame] | None,
              drop: Callable[[Frame], None] | None) -> None:
        """See edgert.source.mailbox.Mailbox.watch."""
        self._mailbox.watch(arrive, drop)

    def ring(self, bell: threading.Condition) -> None:
        """Notify `bell` after each frame handed over and at the end."""
        self._mailbox.bell = bell

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._mailbox.close()
        if self._thread is None:
            self._reader.close()
            return
        self._thread.join(self._join_s)
        if self._thread.is_alive():
            log.warning("source %s: the grabber is still blocked in OpenCV after %.0f s; "
                        "it will exit when that call returns", self._reader.description,
                        self._join_s)

    # The grabber thread.

    def _run(self) -> None:
        try:
            if self._reader.live:
                self._run_live()
            else:
                self._run_recorded()
        except Exception as exc:  # a bug, not the world: end loudly rather than hang the run
            log.exception("source %s: the grabber failed", self._reader.description)
            self._finish(f"the grabber failed: {exc!r}")
        finally:
            self._reader.close()

    def _run_live(self) -> None:
        cap = RateCap(self._fps) if self._fps else None
        opened = False
        while not self._stop.is_set():
            slot = self._mailbox.acquire(self._stop)
            if slot is None:
                return
            try:
                if not opened:
                    self._reader.open()
                    opened = True
                started = self._clock.now()
                shot = self._read(slot)
                if shot is None:
                    raise SourceError("the stream ended")
            except Exception as exc:  # OpenCV backends raise cv2.error too: all are the world's
                self._mailbox.discard(slot)
                self._reader.close()
                opened = False
                self._tally.failed(str(exc) or repr(exc), outage=True)
                self._stop.wait(self._backoff.next())
                continue
            self._tally.recovered()
            self._backoff.reset()
            if cap is not None and not cap.allow(shot[1]):
                self._mailbox.discard(slot)
                self._tally.count(skipped=1)
                continue
            self._mailbox.publish(slot, shot, started)

    def _run_recorded(self) -> None:
        self._mailbox.media.set_rate(self._reader.rate())
        rate = self._reader.rate() or DEFAULT_FPS
        pacer = Pacer(min(rate, self._fps) if self._fps else rate)
        pass_frames = 0
        while not self._stop.is_set():
            now = self._clock.now()
            due = pacer.due(now) if self._paced else now
            if due > now and self._stop.wait(due - now):
                return
            slot = self._mailbox.acquire(self._stop)
            if slot is None:
                return
            started = self._clock.now()
            try:
                shot = self._read(slot)
            except SourceError as exc:  # one undecodable image: count it and read on
                self._mailbox.discard(slot)
                self._tally.failed(str(exc), outage=False)
                continue
            if shot is None:
                self._mailbox.discard(slot)
                if not self._loop or pass_frames == 0:
                    self._finish("a whole pass yielded no frame" if self._loop else None)
                    return
                try:
                    self._reader.open()
                except SourceError as exc:  # the file vanished between passes
                    self._finish(str(exc))
                    return
                pass_frames = 0
                self._mailbox.media.rewind()
                continue
            pass_frames += 1
            self._mailbox.publish(slot, shot, started)
            pacer.advance()

    def _read(self, slot: int) -> Shot | None:
        return self._reader.read(self._mailbox.buffer(slot))

    def _finish(self, error: str | None) -> None:
        self._mailbox.finish()
        self._tally.end(error)


class AheadSource(GrabberSource):
    """Every frame of a recording, in order, decoded on its own thread as fast as it can run
    ahead of the consumer (fast replay): the decoder's time overlaps inference instead of
    adding to it. Unpaced, with a short ordered queue, so nothing is dropped and the frames a
    run decides never depend on how fast the machine is.

    A frame arrives when the consumer takes it, as with a DirectSource: the budget measures
    the loop's work on it, not how long it waited in the queue behind the previous frame.
    """

    on_demand = True   # its first frame is decided, not discarded as older than ready

    def __init__(self, reader: Reader, cfg: SourceConfig, clock: Clock,
                 source_id: str = "main") -> None:
        super().__init__(reader, dataclasses.replace(cfg, mode="every", loop=False), clock,
                         source_id, paced=False)

    def read(self, timeout: float) -> Frame | None:
        frame = super().read(timeout)
        return None if frame is None else dataclasses.replace(frame,
                                                              arrival_s=self._clock.now())
