"""Rules: each rule's condition, debounced and held for its minimum on/off times, in media
time; the highest-priority rule that is on (then config order) chooses the frame's action."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edgert.config.types import Line, Rule, TrackerConfig, Zone
from edgert.decide.crossing import LineCounter
from edgert.decide.events import EventDraft, Events, PerTrack
from edgert.decide.tracker import Tracker
from edgert.decide.zones import LineGeometry, ZoneGeometry
from edgert.frame import Detections
from edgert.records import NO_ACTION


@dataclass(frozen=True, slots=True)
class Outcome:
    action: str
    rule: str | None      # the rule that fired, if any
    matched: tuple[str, ...] = ()   # every rule whose condition held this frame (before debounce)
    events: tuple[EventDraft, ...] = ()
    track_ids: np.ndarray | None = None   # per detection, -1 untracked; None: tracking is off


class _View:
    """One frame's detections as arrays, with zone memberships computed once per zone."""

    def __init__(self, det: Detections, frame_hw: tuple[int, int]) -> None:
        self.det, self.frame_hw = det, frame_hw
        self.scores = det.scores
        self.class_ids = det.class_ids
        self.boxes = det.boxes.astype(np.float64) if det.has_boxes else None
        self.area = ((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
                     if self.boxes is not None else None)
        self._zones: dict[str, np.ndarray] = {}

    def in_zone(self, geo: ZoneGeometry, want: np.ndarray) -> np.ndarray:
        name = geo.zone.name
        if geo.zone.anchor == "overlap":   # costs per box: only the rows this rule wants
            return want & geo.mask(self.boxes, self.frame_hw, want)
        if name not in self._zones:
            self._zones[name] = geo.mask(self.boxes, self.frame_hw, want)
        return want & self._zones[name]


class _RuleState:
    """One rule: its filter, debounce (k of n frames or a duration) and on/off hold."""

    def __init__(self, rule: Rule, zone: ZoneGeometry | None, line: LineCounter | None,
                 order: int, events: Events) -> None:
        self.rule, self.zone, self.line, self.order = rule, zone, line, order
        self.k = rule.debounce[0]
        self.window: deque[bool] = deque([False] * rule.debounce[1], maxlen=rule.debounce[1])
        self.raw_since: float | None = None     # duration debounce: held continuously since
        self.on = False
        self.changed_at = -float("inf")         # media time of the last on/off switch
        self.events = events
        self.last_count = 0
        self.tracks = PerTrack(rule, events) if rule.dwell_s > 0 else None
        self._labels_seen: tuple[str, ...] | None = None
        self._lut = np.zeros(1, np.bool_)

    def _label_mask(self, v: _View) -> np.ndarray:
        labels = v.det.labels
        if labels is not self._labels_seen:   # the decoder's labels never change in a run
            self._labels_seen = labels
            self._lut = np.array([lab in self.rule.labels for lab in labels] + [False], np.bool_)
        ids = v.class_ids
        return self._lut[np.where((ids >= 0) & (ids < len(labels)), ids, len(labels))]

    def filter(self, v: _View) -> np.ndarray:
        r = self.rule
        m = v.scores >= r.min_score
        if r.labels:
            m &= self._label_mask(v)
        if v.area is not None and (r.area[0] > 0 or r.area[1] != float("inf")):
            m &= (v.area >= r.area[0]) & (v.area <= r.area[1])
        if r.attribute is not None:
            m &= _has_attribute(v.det, *r.attribute)
        if self.zone is not None and v.boxes is not None:
            m = v.in_zone(self.zone, m)
        return m


    def debounced(self, raw: bool, t: float) -> bool:
        self.window.append(raw)
        if self.rule.debounce_s > 0:
            if not raw:
                self.raw_since = None
                return False
            if self.raw_since is None:
                self.raw_since = t
            return t - self.raw_since >= self.rule.debounce_s
        return sum(self.window) >= self.k

    def end(self, t: float) -> None:
        """The rule stops being evaluated (the run ends, a reload removed it): its events end."""
        if self.tracks is not None:
            self.tracks.close(t)
        elif self.line is None:
            self.events.rule_state(self.rule, False, t, None)

    def hold(self, want: bool, t: float) -> bool:
        """Minimum on and off times: a switch waits until the current state has lasted."""
        r = self.rule
        if want != self.on and t - self.changed_at >= (r.min_on_s if self.on else r.min_off_s):
            self.on, self.changed_at = want, t
        return self.on


class RuleEngine:
    """Holds every rule's state across frames (and the tracker, when a rule needs one)."""

    def __init__(self, rules: tuple[Rule, ...], zones: tuple[Zone, ...],
                 lines: tuple[Line, ...] = (), tracker: TrackerConfig | None = None,
                 kernels: str = "numba") -> None:
        self._args = (rules, zones, lines, tracker, kernels)
        geo = {z.name: ZoneGeometry(z, kernels) for z in zones}
        lgeo = {ln.name: LineGeometry(ln) for ln in lines}
        self.events = Events()
        self._rules = [_RuleState(r, geo[r.zone] if r.zone else None,
                                  LineCounter(lgeo[r.crosses]) if r.crosses else None, i,
                                  self.events) for i, r in enumerate(rules)]
        # Priority first, then config order: the first of equals wins, as before priorities.
        self._by_priority = sorted(self._rules, key=lambda s: (-s.rule.priority, s.order))
        needs = any(r.tracked for r in rules)
        self.tracker = Tracker(tracker or TrackerConfig(), kernels) if needs else None
        self._last_ids: np.ndarray | None = None   # the last inferred frame's track ids

    def adopt(self, old: RuleEngine, t: float, keep_tracks: bool = True) -> None:
        """After a reload, carry on from `old` (a fresh engine's state is empty): its open
        events and their numbering; the state of every rule whose definition, zone and line
        are unchanged (debounce, hold, dwell, line counts); the tracker when its settings are
        unchanged and `keep_tracks` (the same model). A rule that is gone or changed ends its
        open events at `t`; they go out with the next frame's."""
        self.events = old.events
        before = {st.rule.name: st for st in old._rules}
        same_tracks = (keep_tracks and old.tracker is not None and self.tracker is not None
                       and self._args[3] == old._args[3])
        for i, st in enumerate(self._rules):
            prev = before.get(st.rule.name)
            if prev is not None and prev.rule == st.rule and _geometry(prev) == _geometry(st) \
                    and (same_tracks or not st.rule.tracked):
                del before[st.rule.name]
                prev.order = st.order
                self._rules[i] = prev
            else:
                st.events = self.events
                if st.tracks is not None:
                    st.tracks.events = self.events
        for gone in before.values():
            gone.end(t)
        self._by_priority = sorted(self._rules, key=lambda s: (-s.rule.priority, s.order))
        if same_tracks:
            self.tracker, self._last_ids = old.tracker, old._last_ids

    def fresh(self) -> RuleEngine:
        """A new engine with the same rules: for warm-up, which must not touch this one's state."""
        return RuleEngine(*self._args)

    def decide(self, det: Detections, frame_hw: tuple[int, int], t: float = 0.0,
               reused: bool = False) -> Outcome:
        """One decided frame at media time `t` (seconds). `reused`: the detections are the last
        inferred frame's (motion gating found nothing new): the tracker coasts, ids stay."""
        v = _View(det, frame_hw)
        ids = None
        if self.tracker is not None and v.boxes is not None:
            if reused and self._last_ids is not None and len(self._last_ids) == len(det):
                self.tracker.coast(t)
                ids = self._last_ids
            else:
                ids = self._last_ids = self.tracker.update(v.boxes, v.scores, t)
        matched = []
        for st in self._rules:
            r = st.rule
            m = st.filter(v)
            if st.line is not None:
                raw = self._cross(st, v, m, ids, frame_hw, t)
            elif st.tracks is not None:
                raw = st.tracks.step(t, ids, m, v, self.tracker)
            else:
                n = int(np.count_nonzero(m))
                raw = n >= r.min_count and (r.max_count is None or n <= r.max_count)
                st.last_count = n
            if raw:
                matched.append(r.name)
            on = st.hold(st.debounced(raw, t), t)
            if st.line is None and st.tracks is None:
                self.events.rule_state(r, on, t, {r.zone or "frame": st.last_count})
        fired: _RuleState | None = next((s for s in self._by_priority if s.on), None)
        action = fired.rule.action if fired else NO_ACTION
        return Outcome(action, fired.rule.name if fired else None, tuple(matched),
                       self.events.take(), ids)

    def _cross(self, st: _RuleState, v: _View, m: np.ndarray, ids: np.ndarray | None,
               frame_hw: tuple[int, int], t: float) -> bool:
        if ids is None:
            return False
        rows = np.flatnonzero(m & (ids >= 0))
        tracks = [(int(ids[i]), tuple(v.boxes[i])) for i in rows]
        crossed = st.line.step(frame_hw, tracks, self.tracker.ended)
        want = st.rule.direction
        fired = False
        for tid, direction in crossed:
            if want in ("any", direction):
                fired = True
                self.events.crossing(st.rule, t, tid, dict(st.line.counts))
        return fired

    def missed(self, t: float | None = None) -> None:
        """A frame without a decision (the deadline cut it): the tracker coasts and every rule
        keeps its state, so a missed deadline neither ends an event nor fills a debounce."""
        if self.tracker is not None and t is not None:
            self.tracker.coast(t)

    def close(self, t: float) -> tuple[EventDraft, ...]:
        """The run ends: every open event ends."""
        for st in self._rules:
            st.end(t)
        return self.events.take()


def _geometry(st: _RuleState) -> tuple:
    return (st.zone.zone if st.zone else None, st.line.geo.line if st.line else None)


def _has_attribute(det: Detections, name: str, label: str) -> np.ndarray:
    """Per detection: a secondary model `name` ran on it and said `label` (at its conf)."""
    if det.attributes is None:
        return np.zeros(len(det), np.bool_)
    out = np.zeros(len(det), np.bool_)
    for i, attrs in enumerate(det.attributes):
        a = attrs.get(name) if attrs is not None else None
        out[i] = a is not None and a.skipped is None and a.label == label
    return out
