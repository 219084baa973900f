"""The loop's observers: an injected object with a do-nothing default (metrics, the systemd
watchdog, replay's video and report hang here, not inside the loop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgert.frame import Frame
from edgert.pipeline import FrameResult
from edgert.publish.herald import Outcome
from edgert.records import Metrics

if TYPE_CHECKING:
    from edgert.runtime import Runtime


class Watch:
    """Looks on as frames go through, for whoever wants more than records (replay's annotated
    video and report, metrics). Does nothing by default; the loop calls it on its own thread,
    so a watcher must be quick or hand the work to a thread of its own."""

    def on_frame(self, frame: Frame, result: FrameResult, seq: int) -> None:
        """After the stages, before the record is handed over (the pixels are valid now only)."""

    def on_outcome(self, outcome: Outcome) -> None:
        """What went out for a frame, as the herald reports it (later, in order)."""

    def on_ready(self, runtime: Runtime) -> None:
        """Warmed up, READY=1 sent: the parts a watcher may read (on the loop's thread only)."""

    def on_idle(self, source_state: str) -> None:
        """The loop asked for a frame and none came: it is alive, waiting on its source."""

    def on_metrics(self, metrics: Metrics) -> None:
        """The periodic metrics record, as it goes to the outputs."""
