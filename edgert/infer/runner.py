"""Run `session.run` on a worker thread so the loop can stop waiting at the frame's deadline."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edgert.deadline import Deadline, monotonic


@dataclass(frozen=True, slots=True)
class RunResult:
    """One inference: outputs, or why there are none."""

    outputs: Sequence[np.ndarray] | None   # None when the deadline came first
    seconds: float                         # inference time, or time waited until the deadline
    error: str | None = None               # onnxruntime failed for a reason other than the deadline
    busy: bool = False                     # the previous, aborted run had not unwound by the deadline


class InferenceRunner:
    """One worker thread, one run at a time.

    At the deadline the loop stops waiting and sets `RunOptions.terminate`, which onnxruntime
    checks between operators; the worker finishes the aborted run on its own shortly after.
    The next `run` waits for that, so there is never more than one run in flight.
    """

    def __init__(self, session: ort.InferenceSession, input_name: str) -> None:
        self.session, self.input_name = session, input_name
        self._options = ort.RunOptions()
        self._options.log_severity_level = 4   # a terminated run is expected, not an error
        self._feeds: dict[str, np.ndarray] = {}
        self._result: list[np.ndarray] | None = None
        self._error: str | None = None
        self._job = threading.Event()
        self._done = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self.terminated = 0
        self.last_run_s = 0.0   # the bare session.run of the last finished run, for benchmarks
        self._thread = threading.Thread(target=self._work, name="edgert-infer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            self._job.wait()
            self._job.clear()
            if self._closing:
                return
            t0 = monotonic()
            try:
                self._result, self._error = self.session.run(None, self._feeds, self._options), None
            except Exception as e:  # a terminated run raises; so does a broken model
                self._result, self._error = None, str(e).strip().splitlines()[0][:200]
            self.last_run_s = monotonic() - t0
            self._done.set()
            self._idle.set()

    def run(self, tensor: np.ndarray, deadline: Deadline) -> RunResult:
        """Infer `tensor`, giving up at `deadline`; the result is never older than the deadline."""
        start = monotonic()
        # An aborted run is still unwinding (onnxruntime stops between operators, and one
        # operator can be long): wait for it no longer than this frame's own deadline.
        remaining = deadline.remaining(start)
        if not self._idle.wait(remaining if remaining < 3.0e7 else None):
            return RunResult(None, monotonic() - start, busy=True)
        self._idle.clear()
        self._done.clear()
        self._options.terminate = False
        self._feeds[self.input_name] = tensor
        self._job.set()
        remaining = deadline.remaining()
        finished = self._done.wait(remaining) if remaining < 3.0e7 else self._done.wait()
        took = monotonic() - start
        if not finished:
            self._options.terminate = True
            self.terminated += 1
            return RunResult(None, took)
        if self._result is None:
            return RunResult(None, took, self._error)
        return RunResult(self._result, took)

    def close(self) -> None:
        self._options.terminate = True
        self._idle.wait(5.0)
        self._closing = True
        self._job.set()
        self._thread.join(5.0)
