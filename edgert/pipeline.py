"""One frame through the stages under its deadline: preprocess → infer → postprocess → decide. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgert.deadline import Deadline, monotonic
from edgert.decide import Outcome, RuleEngine
from edgert.frame import Detections, Frame
from edgert.infer import InferenceRunner
from edgert.postprocess import Decoder
from edgert.preprocess import Transform

Preprocess = Callable[[Frame], "tuple[np.ndarray, Transform]"]


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What became of one frame. `cause` names the stage that ran out of time, or why it failed."""

    status: str                       # ok | overrun
    latency_ms: dict[str, float]
    detections: Detections | None = None
    outcome: Outcome | None = None
    cause: str | None = None          # see docs/configuration.md, "The decision record"
    error: str | None = None


def finite(det: Detections) -> Detections:
    """Drop detections with NaN/inf (an overflowing fp16/int8 model): records must stay JSON."""
    ok = np.isfinite(det.scores)
    if det.has_boxes:
        ok &= np.isfinite(det.boxes).all(axis=1)
    if ok.all():
        return det
    return Detections(det.boxes[ok], det.scores[ok], det.class_ids[ok], det.labels)


class Pipeline:
    """Holds the stages, built by the runtime; `process` is the whole per-frame data path."""

    def __init__(self, preprocess: Preprocess, runner: InferenceRunner, decoder: Decoder,
                 rules: RuleEngine) -> None:
        self.preprocess, self.runner, self.decoder, self.rules = preprocess, runner, decoder, rules

    def _overrun(self, lat: dict[str, float], cause: str, error: str | None = None) -> FrameResult:
        self.rules.missed()
        return FrameResult("overrun", lat, cause=cause, error=error)

    def process(self, frame: Frame, deadline: Deadline) -> FrameResult:
        lat = {"capture": frame.capture_s * 1e3}
        t0 = monotonic()
        if deadline.expired(t0):
            return self._overrun(lat, "stale")
        tensor, transform = self.preprocess(frame)
        t1 = monotonic()
        lat["preprocess"] = (t1 - t0) * 1e3
        if deadline.expired(t1):
            return self._overrun(lat, "preprocess")
        run = self.runner.run(tensor, deadline)
        t2 = monotonic()
        lat["infer"] = (t2 - t1) * 1e3
        if run.outputs is None:
            cause = "infer_busy" if run.busy else "infer_error" if run.error else "infer"
            return self._overrun(lat, cause, run.error)
        if deadline.expired(t2):
            return self._overrun(lat, "infer")
        try:
            detections = self.decoder(run.outputs, transform)
        except Exception as e:  # a user decoder, or a model emitting garbage: never fatal
            lat["postprocess"] = (monotonic() - t2) * 1e3
            return self._overrun(lat, "postprocess_error", f"{type(e).__name__}: {e}"[:200])
        detections = finite(detections)
        t3 = monotonic()
        lat["postprocess"] = (t3 - t2) * 1e3
        if deadline.expired(t3):
            return self._overrun(lat, "postprocess")
        outcome = self.rules.decide(detections, (frame.height, frame.width))
        t4 = monotonic()
        lat["decide"] = (t4 - t3) * 1e3
        if deadline.expired(t4):
            self.rules.retract()
            return FrameResult("overrun", lat, detections, outcome, cause="decide")
        return FrameResult("ok", lat, detections, outcome)
