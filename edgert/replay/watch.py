"""Replay's look at the loop: copies each decided frame for the annotated video and ticks the
progress bar, without slowing the loop by drawing or encoding on its thread."""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

from edgert.clock import Clock
from edgert.frame import Frame
from edgert.pipeline import FrameResult
from edgert.publish.herald import Outcome
from edgert.replay.annotate import Annotator, Scene
from edgert.watch import Watch

QUEUE = 8   # frames waiting to be drawn: enough to ride out one slow encode


class ReplayWatch(Watch):
    """Hands copies to a drawing thread. `wait`: the loop waits for room (fast replay: every
    decided frame is drawn); otherwise a frame the drawer has no room for is left out and
    counted (real time: the loop must not wait for the video)."""

    def __init__(self, clock: Clock, annotator: Annotator | None, progress: Any | None,
                 *, wait: bool, fail_safe_action: str) -> None:
        self.clock, self.annotator, self.progress, self.wait = clock, annotator, progress, wait
        self.fail_safe_action = fail_safe_action
        self.not_drawn = 0
        self._queue: queue.Queue[Scene | None] = queue.Queue(QUEUE)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if annotator is not None:
            self._thread = threading.Thread(target=self._draw, name="edgert-annotate",
                                            daemon=True)
            self._thread.start()

    def on_frame(self, frame: Frame, result: FrameResult, seq: int) -> None:
        if self.annotator is None:
            return
        ok = result.status == "ok" and result.outcome is not None
        dets = result.detections.to_dets() if ok and result.detections is not None else ()
        scene = Scene(frame.image.copy(), frame.index, dets,
                      result.outcome.action if ok and result.outcome else self.fail_safe_action,
                      "ok" if ok else (result.cause or "error"),
                      (self.clock.now() - frame.arrival_s) * 1e3)
        if self.wait:
            self._queue.put(scene)
            return
        try:
            self._queue.put_nowait(scene)
        except queue.Full:
            self.not_drawn += 1

    def on_outcome(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def _draw(self) -> None:
        while (scene := self._queue.get()) is not None:
            if self._error is None and self.annotator is not None:
                try:
                    self.annotator.write(scene)
                except Exception as e:   # reported at close; the replay itself goes on
                    self._error = e

    def close(self) -> dict[str, Any]:
        """Finish the video; what it holds, for the report."""
        if self.progress is not None:
            self.progress.close()
        if self._thread is None or self.annotator is None:
            return {}
        self._queue.put(None)
        self._thread.join()
        self.annotator.close()
        if self._error is not None:
            raise OSError(f"the annotated video could not be written: {self._error}")
        return {"path": self.annotator.path.name, "frames": self.annotator.frames,
                "not_drawn": self.not_drawn}


def progress_bar(total: int | None, name: str) -> Any | None:
    """tqdm's bar (frames, rate, ETA) on a terminal; nothing when stderr is a file or pipe."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="frame", file=sys.stderr, leave=False)
