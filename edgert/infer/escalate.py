"""Escalation: a heavier model on the same frame, only when the primary is unsure (a detection
scores inside the configured band, or so near a rule's `min_score` that the rule's decision
hinges on it) and the heavier model's learned cost still fits before the deadline. Its
detections then replace the primary's, and the record says so.

It runs on the main model only: when the ladder has stepped down to a lighter rung the board
is short of time, and escalating would undo the step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgert.config.types import EscalateConfig, Rule
from edgert.frame import Detections
from edgert.guard import Ticket

STAGES = ("preprocess", "infer", "postprocess")


class Escalation:
    """The heavier model's stages (a Pipeline's, whose rules it never uses) and when to run them."""

    def __init__(self, cfg: EscalateConfig, heavy,   # noqa: ANN001 - a Pipeline
                 rules: tuple[Rule, ...] = ()) -> None:
        self.cfg, self.heavy = cfg, heavy
        self.lo, self.hi = cfg.band
        # The thresholds a decision hinges on: (labels, min_score) of each rule with one.
        self._hinges = [(r.labels, r.min_score) for r in rules if r.min_score > 0.0] \
            if cfg.hinge > 0.0 else []
        self._hinge_masks: list[tuple[np.ndarray, float]] = []
        self.runs = self.unsure_frames = self.no_time = self.errors = 0
        self.seen_s = 0.0   # the last run's cost: stands in until the costs are learned
        self._on_labels: tuple[str, ...] | None = None
        self._on = np.ones(1, np.bool_)

    def unsure(self, det: Detections) -> bool:
        """A detection of the labels in `on` scores inside the band, or (with `hinge`) a
        detection a rule counts scores within `hinge` of that rule's `min_score`."""
        if not len(det):
            return False
        if det.labels is not self._on_labels:
            self._on_labels, on = det.labels, self.cfg.on
            self._on = np.array([not on or lab in on for lab in det.labels] + [False], np.bool_)
            self._hinge_masks = [
                (np.array([not labels or lab in labels for lab in det.labels] + [False],
                          np.bool_), score) for labels, score in self._hinges]
        ids = np.where((det.class_ids >= 0) & (det.class_ids < len(det.labels)), det.class_ids,
                       len(det.labels))
        s = det.scores
        if np.any(self._on[ids] & (s >= self.lo) & (s < self.hi)):
            return True
        hinge = self.cfg.hinge
        return any(bool(np.any(mask[ids] & (np.abs(s - score) < hinge)))
                   for mask, score in self._hinge_masks)

    def cost(self) -> float:
        costs = self.heavy.costs
        learned = sum(costs.expected(s) for s in STAGES)
        return learned if costs.expected("infer") > 0.0 else self.seen_s

    def run(self, t: Ticket, now: Callable[[], float]) -> Detections | str:
        """The heavier model's detections for t's frame, or "deadline" (the guard stopped it)
        or the error that stopped it."""
        heavy, costs = self.heavy, self.heavy.costs
        t0 = now()
        tensor, transform = heavy.pre(t.frame.source_id)(t.frame)
        t1 = now()
        costs.observe("preprocess", t1 - t0)
        primary = t.runner
        heavy.runner.reset()   # a stop meant for an earlier frame
        t.runner = heavy.runner   # the guard stops this run at the deadline
        try:
            result = heavy.runner.run(tensor)
        finally:
            t.runner = primary
        t2 = now()
        costs.observe("infer", t2 - t1, stopped=result.stopped)
        if result.outputs is None:
            return "deadline" if result.stopped else f"escalation: {result.error}"
        try:
            det = heavy.decoder(result.outputs, transform)
        except Exception as e:  # a model emitting garbage: the primary's detections stand
            return f"escalation: {type(e).__name__}: {e}"[:200]
        t3 = now()
        costs.observe("postprocess", t3 - t2)
        self.seen_s = t3 - t0
        self.runs += 1
        return det
