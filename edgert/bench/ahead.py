"""Decode-ahead for bench only: the next frames decode on a thread while the loop infers, in
order and none dropped, to show what overlapping decode with inference would buy."""

from __future__ import annotations

import dataclasses
import queue
import threading

from edgert.frame import Frame
from edgert.source import FrameSource, SourceStats


class AheadSource:
    """Wraps a source in `every` mode; a thread reads it into a short queue of copied frames."""

    on_demand = True

    def __init__(self, inner: FrameSource, depth: int = 2) -> None:
        self.inner = inner
        self._queue: queue.Queue[Frame | None] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False

    def start(self) -> None:
        self.inner.start()
        self._thread = threading.Thread(target=self._pump, name="bench-ahead", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            frame = self.inner.read(0.5)
            if frame is None and not self.inner.ended:
                continue
            if frame is not None:   # the inner source recycles its buffers on the next read
                frame = dataclasses.replace(frame, image=frame.image.copy())
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if frame is None:
                return

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self, timeout: float) -> Frame | None:
        try:
            frame = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if frame is None:
            self._ended = True
        return frame

    def stats(self) -> SourceStats:
        return self.inner.stats()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.inner.close()
