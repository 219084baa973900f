"""Debounce (frames and duration), min on/off, priorities, dwell, counts and directions,
table-driven on synthetic detections and media times."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.config.types import Line, Rule, Zone
from edgert.decide import RuleEngine
from edgert.frame import Detections

LABELS = ("part", "defect")
HW = (100, 200)
LEFT = Zone("left", ((0, 0), (100, 0), (100, 100), (0, 100)), units="pixels", anchor="center")
HALF = Zone("half", ((0, 0), (100, 0), (100, 100), (0, 100)), units="pixels", anchor="overlap",
            overlap=0.5)


def frame(*objs: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    boxes = np.array([b for _, _, b in objs], np.float32).reshape(-1, 4)
    return Detections(boxes, np.array([s for _, s, _ in objs], np.float32),
                      np.array([LABELS.index(lab) for lab, _, _ in objs], np.int32), LABELS)


D = ("defect", 0.9, (10, 10, 30, 30))      # a defect in `left`
P = ("part", 0.9, (120, 10, 140, 30))      # a part outside it
E = ()


def actions(rules, seq, zones=(LEFT,), lines=(), dt=0.1):
    eng = RuleEngine(tuple(rules), zones, lines)
    return [eng.decide(frame(*objs), HW, i * dt).action for i, objs in enumerate(seq)]


R = "reject"
_ = "none"
CASES = {
    "k of n frames": ([Rule("r", R, ("defect",), debounce=(2, 3))],
                      [[D], [], [D], [], [], [D], [D]], [_, _, R, _, _, _, R]),
    "duration 0.25 s at 10 fps": ([Rule("r", R, ("defect",), debounce_s=0.25)],
                                  [[D], [D], [D], [D], [], [D]], [_, _, _, R, _, _]),
    "min_on 0.3 s holds the action": ([Rule("r", R, ("defect",), min_on_s=0.3)],
                                      [[D], [], [], [], []], [R, R, R, _, _]),
    "min_off 0.3 s keeps it off": ([Rule("r", R, ("defect",), min_off_s=0.3)],
                                   [[D], [], [D], [D], [D], [D]], [R, _, _, _, R, R]),
    "zone and label": ([Rule("r", R, ("defect",), zone="left")],
                       [[P], [D], [("defect", 0.9, (150, 10, 170, 30))]], [_, R, _]),
    "min_score": ([Rule("r", R, ("defect",), min_score=0.95)], [[D]], [_]),
    "area range": ([Rule("r", R, area=(0, 500))],
                   [[D], [("part", 0.9, (0, 0, 50, 50))]], [R, _]),
    "count at least 2 in zone": ([Rule("r", R, zone="left", min_count=2)],
                                 [[D], [D, ("part", 0.9, (40, 40, 60, 60))], [D, P]], [_, R, _]),
    "count zero: zone empty": ([Rule("r", "go", zone="left", min_count=0, max_count=0)],
                               [[D], [P], []], [_, "go", "go"]),
    "overlap anchor": ([Rule("r", R, zone="half")],
                       [[("part", 0.9, (80, 0, 120, 10))], [("part", 0.9, (90, 0, 130, 10))]],
                       [R, _]),
}


@pytest.mark.parametrize("name", CASES)
def test_rule_conditions_and_timing(name: str) -> None:
    rules, seq, want = CASES[name]
    assert actions(rules, seq, zones=(LEFT, HALF)) == want


@pytest.mark.parametrize("priorities, want", [
    ((0, 0), "first"),     # equal priority: config order, as before priorities existed
    ((0, 5), "second"),
    ((3, 1), "first"),
])
def test_the_highest_priority_rule_that_is_on_wins(priorities, want) -> None:
    rules = [Rule("a", "first", ("defect",), priority=priorities[0]),
             Rule("b", "second", ("defect",), priority=priorities[1])]
    assert actions(rules, [[D]]) == [want]


def walk(eng, xs, y=(40, 60), dt=0.1, t0=0.0):
    drafts = []
    for i, x in enumerate(xs):
        det = frame(("part", 0.9, (x, y[0], x + 40, y[1]))) if x is not None else frame()
        drafts += eng.decide(det, HW, t0 + i * dt).events
    return drafts


V = Line("v", (100, 0), (100, 100))
H = Line("h", (0, 50), (200, 50))


@pytest.mark.parametrize("line, direction, path, fired", [
    (V, "left_to_right", dict(xs=range(50, 150, 10)), 1),
    (V, "right_to_left", dict(xs=range(50, 150, 10)), 0),
    (V, "right_to_left", dict(xs=range(150, 50, -10)), 1),
    (V, "any", dict(xs=list(range(50, 150, 10)) + list(range(150, 50, -10))), 2),
    (H, "top_to_bottom", dict(xs=[50] * 8, ys=[(y - 20, y + 20) for y in range(10, 90, 10)]), 1),
    (H, "bottom_to_top", dict(xs=[50] * 8, ys=[(y - 20, y + 20) for y in range(80, 0, -10)]), 1),
])
def test_crossings_by_direction(line, direction, path, fired) -> None:
    eng = RuleEngine((Rule("c", "count", crosses=line.name, direction=direction),), (), (line,))
    drafts = []
    ys = path.get("ys", [(40, 60)] * len(list(path["xs"])))
    for i, (x, y) in enumerate(zip(path["xs"], ys)):
        drafts += eng.decide(frame(("part", 0.9, (x - 20, y[0], x + 20, y[1]))), HW, i * 0.1).events
    assert len(drafts) == fired and all(d.kind == "new" and d.track_id == 1 for d in drafts)


def test_dwell_fires_per_track_after_its_time_and_updates_once_a_second() -> None:
    eng = RuleEngine((Rule("loiter", "alarm", ("part",), zone="left", dwell_s=2.0),), (LEFT,))
    # 5 s still in the zone at 10 fps, then out to the right; its track is confirmed (and its
    # time starts) on its second frame, and its centre leaves the zone at 5.6 s.
    drafts = walk(eng, [20] * 50 + list(range(30, 160, 10)))
    kinds = [(d.kind, round(d.media_s, 1)) for d in drafts]
    assert kinds == [("new", 2.1), ("update", 3.1), ("update", 4.1), ("update", 5.1),
                     ("end", 5.6)]
    assert {d.track_id for d in drafts} == {1} and len({d.number for d in drafts}) == 1


def test_rule_events_pair_up_and_update_at_most_per_interval() -> None:
    eng = RuleEngine((Rule("r", R, ("defect",), update_s=0.5),), ())
    drafts = []
    for i, objs in enumerate([[D]] * 12 + [[]] * 2):
        drafts += eng.decide(frame(*objs), HW, i * 0.1).events
    assert [d.kind for d in drafts] == ["new", "update", "update", "end"]
    assert drafts[0].counts == {"frame": 1} and drafts[-1].counts == {"frame": 0}
