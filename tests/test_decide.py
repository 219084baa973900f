"""Zones, anchors, label/score filters and k-of-n debounce decide the frame's action."""

from __future__ import annotations

import numpy as np

from edgert.config.types import Rule, Zone
from edgert.decide import RuleEngine
from edgert.decide import kernels
from edgert.frame import Detections

LABELS = ("part", "defect")
HW = (100, 200)   # height, width
GATE = Zone("gate", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)), units="fraction",
            anchor="center")


def point_in_polygon(p, poly, impl=kernels.points_in_polygon) -> bool:
    out = np.zeros(1, np.bool_)
    impl(np.array([p], np.float64), np.array(poly, np.float64), out)
    return bool(out[0])


def dets(*items: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    boxes = np.array([b for _, _, b in items], np.float32).reshape(-1, 4)
    return Detections(boxes, np.array([s for _, s, _ in items], np.float32),
                      np.array([LABELS.index(lab) for lab, _, _ in items], np.int32), LABELS)


def test_points_in_polygon_matches_geometry() -> None:
    square = ((0, 0), (10, 0), (10, 10), (0, 10))
    pts = [(5, 5), (15, 5), (0, 5), (10, 10), (-1, -1), (9.99, 0.01)]
    assert [point_in_polygon(p, square) for p in pts] == [True, False, True, True, False, True]
    tri = ((0, 0), (10, 0), (0, 10))
    assert [point_in_polygon(p, tri) for p in [(2, 2), (6, 6), (5, 5)]] == [True, False, True]
    twin = kernels.points_in_polygon_ref
    assert [point_in_polygon(p, square, twin) for p in pts] == [True, False, True, True, False, True]
    assert [point_in_polygon(p, tri, twin) for p in [(2, 2), (6, 6), (5, 5)]] == [True, False, True]


def test_rule_needs_label_score_and_zone() -> None:
    eng = RuleEngine((Rule("r", "reject", ("defect",), 0.5, "gate"),), (GATE,))
    assert eng.decide(dets(("defect", 0.9, (120, 10, 160, 50))), HW).action == "reject"
    assert eng.decide(dets(("defect", 0.9, (10, 10, 50, 50))), HW).action == "none"    # outside
    assert eng.decide(dets(("defect", 0.4, (120, 10, 160, 50))), HW).action == "none"  # low score
    assert eng.decide(dets(("part", 0.9, (120, 10, 160, 50))), HW).action == "none"    # label
    assert eng.decide(Detections.empty(LABELS), HW).action == "none"


def test_bottom_center_anchor_uses_the_feet() -> None:
    floor = Zone("floor", ((0, 60), (200, 60), (200, 100), (0, 100)), units="pixels")
    eng = RuleEngine((Rule("r", "alarm", ("part",), 0.0, "floor"),), (floor,))
    # Box centre is above the zone but its bottom edge stands in it.
    assert eng.decide(dets(("part", 0.9, (10, 20, 40, 70))), HW).action == "alarm"
    assert eng.decide(dets(("part", 0.9, (10, 0, 40, 50))), HW).action == "none"


def test_first_matching_rule_wins_and_debounce_counts_k_of_n() -> None:
    rules = (Rule("stop-any-defect", "stop", ("defect",), 0.95),
             Rule("reject", "reject", ("defect",), 0.5, "gate", debounce=(2, 3)))
    eng = RuleEngine(rules, (GATE,))
    in_gate = dets(("defect", 0.9, (120, 10, 160, 50)))
    sequence = [in_gate, Detections.empty(LABELS), in_gate, Detections.empty(LABELS),
                Detections.empty(LABELS)]
    actions = [eng.decide(d, HW).action for d in sequence]
    assert actions == ["none", "none", "reject", "none", "none"]
    very_sure = dets(("defect", 0.99, (120, 10, 160, 50)))
    out = eng.decide(very_sure, HW)
    assert out.action == "stop" and out.rule == "stop-any-defect"
    assert out.matched == ("stop-any-defect", "reject")


def test_missed_frames_leave_debounce_where_it_was() -> None:
    """A frame the deadline cut is neither a match nor a miss: it must not end an event."""
    eng = RuleEngine((Rule("r", "reject", ("defect",), 0.5, None, debounce=(2, 2)),), ())
    d = dets(("defect", 0.9, (0, 0, 10, 10)))
    assert eng.decide(d, HW).action == "none"
    eng.missed()
    assert eng.decide(d, HW).action == "reject"
    eng.missed()
    assert eng.decide(d, HW).action == "reject"
