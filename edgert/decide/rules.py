"""Rules: the first rule (in config order) whose condition holds, debounced, chooses the action."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from edgert.config.types import Rule, Zone
from edgert.decide.zones import ZoneGeometry
from edgert.frame import Detections
from edgert.records import NO_ACTION


@dataclass(frozen=True, slots=True)
class Outcome:
    action: str
    rule: str | None      # the rule that fired, if any
    matched: tuple[str, ...] = ()   # every rule whose condition held this frame (before debounce)


class _RuleState:
    """One rule's condition and its k-of-n debounce window."""

    def __init__(self, rule: Rule, zone: ZoneGeometry | None) -> None:
        self.rule, self.zone = rule, zone
        k, n = rule.debounce
        self.k = k
        self.window: deque[bool] = deque([False] * n, maxlen=n)
        self._labels_seen: tuple[str, ...] | None = None
        self._class_ids: frozenset[int] = frozenset()

    def _wanted(self, labels: tuple[str, ...]) -> frozenset[int] | None:
        if labels is not self._labels_seen:   # the decoder's labels never change in a run
            self._labels_seen = labels
            self._class_ids = frozenset(i for i, lab in enumerate(labels) if lab in self.rule.labels)
        return self._class_ids

    def holds(self, det: Detections, lists: tuple[list, list, list],
              frame_hw: tuple[int, int]) -> bool:
        # Plain Python over a handful of detections beats numpy's per-call overhead here.
        scores, classes, all_boxes = lists
        wanted = self._wanted(det.labels) if self.rule.labels else None
        boxes = all_boxes if self.zone is not None else None
        for i in range(len(scores)):
            if scores[i] < self.rule.min_score or (wanted is not None and classes[i] not in wanted):
                continue
            if boxes is None or self.zone.inside(boxes[i], frame_hw):  # type: ignore[union-attr]
                return True
        return False


class RuleEngine:
    """Holds per-rule debounce state across frames; one instance per run."""

    def __init__(self, rules: tuple[Rule, ...], zones: tuple[Zone, ...]) -> None:
        geo = {z.name: ZoneGeometry(z) for z in zones}
        self._rules = [_RuleState(r, geo[r.zone] if r.zone else None) for r in rules]

    def decide(self, det: Detections, frame_hw: tuple[int, int]) -> Outcome:
        fired: str | None = None
        action = NO_ACTION
        matched = []
        # Every rule sees every frame, so a rule lower in the list keeps an honest
        # debounce window even while a rule above it wins the action.
        lists = (det.scores.tolist(), det.class_ids.tolist(), det.boxes.tolist())
        for st in self._rules:
            held = st.holds(det, lists, frame_hw)
            st.window.append(held)
            if held:
                matched.append(st.rule.name)
            if fired is None and sum(st.window) >= st.k:
                fired, action = st.rule.name, st.rule.action
        return Outcome(action, fired, tuple(matched))

    def missed(self) -> None:
        """A frame without a decision (deadline passed) counts as not matched for debounce."""
        for st in self._rules:
            st.window.append(False)
