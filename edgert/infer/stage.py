"""A user stage: the user's own Python after the primary's decode, for a cascade no config can
express (a face detector inside each person, a second stage that refines boxes), inside the
same deadline as the rest of the frame.

The function is called once per frame with a `StageContext`; it returns new `Detections` (or
None to keep them). Sessions it names are opened once at start; `ctx.sessions[name].run(...)`
can be stopped by the guard at the deadline like the primary's run, and each knows its learned
cost, so the function can decide what still fits (`ctx.remaining()`). Its documentation and a
complete example are in docs/models.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnxruntime as ort

from edgert.costs import StageCosts
from edgert.errors import EdgertError
from edgert.frame import Detections, Frame
from edgert.guard import Ticket
from edgert.infer.runner import InferenceRunner

log = logging.getLogger("edgert")


class DeadlinePassed(EdgertError):
    """Raised by `UserSession.run` when the guard stopped it: the frame's record is gone."""


class UserSession:
    """One session a user stage named: runs on the loop's thread, stoppable at the deadline."""

    def __init__(self, name: str, session: ort.InferenceSession) -> None:
        self.name, self.session = name, session
        self.inputs = session.get_inputs()
        self.runner = InferenceRunner(session, self.inputs[0].name)
        self.costs = StageCosts()
        self._ticket: Ticket | None = None

    def expected(self) -> float:
        """The learned cost of one run (s); 0 until a few runs were seen."""
        return self.costs.expected("run")

    def run(self, feeds: np.ndarray | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for `feeds` (the tensor for the first input, or a dict by name). Raises
        DeadlinePassed when the frame's deadline stopped it, EdgertError when it failed."""
        t = self._ticket
        if t is None:
            raise EdgertError(f"session {self.name!r} is run outside a frame")
        self.runner.reset()
        t.runner = self.runner   # the guard stops this run at the deadline
        result = self.runner.run_feeds(feeds if isinstance(feeds, Mapping)
                                       else {self.inputs[0].name: feeds})
        self.costs.observe("run", result.seconds, result.stopped)
        if result.stopped:
            raise DeadlinePassed(f"the deadline stopped session {self.name!r}")
        if result.outputs is None:
            raise EdgertError(f"session {self.name!r} failed: {result.error}")
        return list(result.outputs)


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a user stage gets for one frame. Do not write to `image`: it is the source's."""

    frame: Frame
    detections: Detections
    sessions: Mapping[str, UserSession]
    remaining: Callable[[], float]    # seconds before the stages after this one must start
    options: Mapping[str, Any]        # [model.stage.options], as written

    @property
    def image(self) -> np.ndarray:
        return self.frame.image

    def fits(self, name: str, runs: int = 1) -> bool:
        """Whether `runs` more runs of session `name` are expected to fit."""
        return self.sessions[name].expected() * runs <= self.remaining()


class UserStage:
    """The configured function and its sessions."""

    def __init__(self, fn: Callable[[StageContext], Any], sessions: dict[str, UserSession],
                 spec: str, options: Mapping[str, Any]) -> None:
        self.fn, self.sessions, self.spec, self.options = fn, sessions, spec, options
        self.errors = 0

    def __call__(self, t: Ticket, det: Detections, reserve_s: float,
                 now: Callable[[], float]) -> tuple[Detections, str | None]:
        """The detections it returns, and None, "deadline" or an error."""
        primary = t.runner
        for s in self.sessions.values():
            s._ticket = t
        at = t.deadline.at
        ctx = StageContext(t.frame, det, self.sessions, lambda: at - now() - reserve_s,
                           self.options)
        try:
            out = self.fn(ctx)
        except DeadlinePassed:
            return det, "deadline"
        except Exception as e:  # the user's code: counted, never fatal
            return det, self._error(f"{type(e).__name__}: {e}")
        finally:
            t.runner = primary
            for s in self.sessions.values():
                s._ticket = None
        if out is None:
            return det, None
        if not isinstance(out, Detections):
            return det, self._error(f"returned {type(out).__name__}, not Detections or None")
        return out, None

    def _error(self, error: str) -> str:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("user stage %s failed on %d frame(s) so far: %s", self.spec, self.errors,
                        error)
        return error[:200]
