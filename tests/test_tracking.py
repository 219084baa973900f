"""Tracking, lines and events on the Intel people video, and deadline misses that only coast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import edgert, write_config
from edgert.config.types import Line, Rule, TrackerConfig, Zone
from edgert.decide import RuleEngine
from edgert.frame import Detections

PEOPLE = """
device_id = "people"
[source]
url = "file:{video}"
mode = "every"
[model]
path = "{model}"
family = "yolox"
labels = "{labels}"
conf = 0.3
[model.input]
align = "top_left"
[runtime]
budget_ms = 5000
[[zones]]
name = "room"
units = "fraction"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
anchor = "center"
[[lines]]
name = "entry"          # people walk in from under the camera, away from it
units = "fraction"
p1 = [0.0, 0.6]
p2 = [0.75, 0.6]
[[lines]]
name = "exit"           # … and leave through the doorway on the right
units = "fraction"
p1 = [0.75, 0.0]
p2 = [0.75, 1.0]
[[rules]]
name = "entering"
labels = ["person"]
crosses = "entry"
direction = "bottom_to_top"
action = "count_in"
[[rules]]
name = "leaving"
labels = ["person"]
crosses = "exit"
direction = "left_to_right"
action = "count_out"
[[rules]]
name = "someone-in-room"
labels = ["person"]
min_score = 0.5
zone = "room"
min_off_s = 1.0
action = "occupied"
[fail_safe]
action = "stop"
"""

# Counted by eye: frames of the clip extracted with OpenCV every ~50 frames and around each
# change in the number of people detected, then looked at. Six people come in one by one from
# under the camera (about frames 63, 228, 506, 745, 925 and 1237), walk to the table and leave
# through the doorway on the right (about frames 192, 446, 695, 866, 1195 and 1359). Nobody
# comes back in through the doorway or walks back out under the camera.
ENTERING, LEAVING = 6, 6


def test_people_counted_through_the_doorway_with_one_id_per_visit(tmp_path: Path,
                                                                   material: Path) -> None:
    video = material / "videos/intel_one-by-one-person-detection.mp4"
    cfg = write_config(tmp_path / "people.toml", PEOPLE.format(
        video=video, model=material / "models/yolox_nano_coco_416.onnx",
        labels=material / "models/coco80.names"))
    proc = edgert("replay", str(video), "--config", str(cfg), "--out", str(tmp_path / "out"),
                  timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(ln) for ln in (tmp_path / "out/decisions.jsonl").read_text().splitlines()]
    events = [r for r in recs if r["schema"] == "edgert.event/1"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    came = [e for e in events if e["rule"] == "entering"]
    went = [e for e in events if e["rule"] == "leaving"]
    assert all(e["kind"] == "new" for e in came + went)   # a crossing is a single new
    assert len(came) == ENTERING and came[-1]["counts"] == {"bottom_to_top": ENTERING}
    assert len(went) == LEAVING and went[-1]["counts"] == {"left_to_right": LEAVING}
    # One id per visit: whoever came in is who left, and each visit has its own id.
    assert [e["track_id"] for e in came] == [e["track_id"] for e in went]
    assert len({e["track_id"] for e in came}) == ENTERING
    # A zone rule's events pair up: every new has one end, with updates between.
    room = [e for e in events if e["rule"] == "someone-in-room"]
    opened = [e["event_id"] for e in room if e["kind"] == "new"]
    ended = [e["event_id"] for e in room if e["kind"] == "end"]
    assert opened and sorted(opened) == sorted(ended)
    # Each person's detections carry their visit's id from shortly after they come in.
    decisions = [r for r in recs if r["schema"] == "edgert.decision/1"]
    for c, w in zip(came, went):
        ids = {d.get("track_id") for r in decisions if c["frame_id"] <= r["frame_id"] <= w["frame_id"]
               for d in r["detections"] if d["label"] == "person" and d["score"] >= 0.5}
        assert ids == {c["track_id"]}, (c["frame_id"], w["frame_id"], ids)


LABELS = ("person",)
HW = (480, 640)


def walker(x: float) -> Detections:
    return Detections(np.array([[x, 200, x + 60, 400]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int32), LABELS)


def engine() -> RuleEngine:
    zone = Zone("floor", ((0, 0), (640, 0), (640, 480), (0, 480)), units="pixels")
    line = Line("door", (320, 0), (320, 480))
    rules = (Rule("inside", "occupied", ("person",), zone="floor"),
             Rule("dwell", "alarm", ("person",), zone="floor", dwell_s=1.0),
             Rule("cross", "count", ("person",), crosses="door", direction="left_to_right"))
    return RuleEngine(rules, (zone,), (line,), TrackerConfig(lost_s=0.5))


def test_deadline_misses_coast_and_never_end_an_event() -> None:
    """A person walks left to right at 10 fps; frames 10..39 (3 s, six times the tracks'
    lost_s) miss their deadline. Nothing ends during the misses, the track keeps its id, the
    crossing is counted once, and everything ends only when the run closes."""
    eng = engine()
    drafts, ids = [], set()
    for i in range(60):
        t = i / 10
        if 10 <= i < 40:
            eng.missed(t)
            continue
        out = eng.decide(walker(10 + i * 8), HW, t)
        drafts += out.events
        ids |= {int(v) for v in out.track_ids if v >= 0}
    assert [d.kind for d in drafts if d.kind == "end"] == []
    assert ids == {1}
    crossings = [d for d in drafts if d.rule == "cross"]
    assert len(crossings) == 1 and crossings[0].counts == {"left_to_right": 1}
    closing = eng.close(6.0)
    assert sorted((d.rule, d.kind) for d in closing) == [("dwell", "end"), ("inside", "end")]


def test_without_coasting_the_same_gap_would_end_the_track() -> None:
    """The control: the same 3 s gap as decided empty frames does end the track."""
    eng = engine()
    drafts = []
    for i in range(60):
        det = walker(10 + i * 8) if not 10 <= i < 40 else Detections.empty(LABELS)
        drafts += eng.decide(det, HW, i / 10).events
    assert any(d.kind == "end" and d.rule == "dwell" for d in drafts)
