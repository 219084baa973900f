"""The decision record's per-detection extras (keypoints, attributes) through encode, the JSON
text a subscriber reads, decode_decision and the --expect comparison."""

from __future__ import annotations

import json

from edgert.codec import decode_decision, encode
from edgert.records import Attr, Decision, Det, Timing, Verdict
from edgert.replay.expect import compare

PERSON = Det("person", 0, 0.91, (10.0, 20.0, 110.0, 220.0), 7,
             ((40.5, 50.0, 0.88), (80.0, 50.5, None)),
             {"clothing": Attr("jacket", 3, 0.74), "age": Attr("adult", 1, 0.6)})
PLAIN = Det("cup", 41, 0.5, (1.0, 2.0, 3.0, 4.0))
CLASS = Det("tabby", 281, 0.4, attributes={"colour": Attr("orange", 2, 0.9)})


def decision(*dets: Det, frame_id: int = 4) -> Decision:
    return Decision("dev", "run", frame_id + 1, Verdict(frame_id, "ok", "none", detections=dets),
                    Timing(1.0, 1.01, 50.0, {"total": 10.0}))


def test_keypoints_and_attributes_survive_the_round_trip() -> None:
    d = decision(PERSON, PLAIN, CLASS)
    rec = json.loads(encode(d))
    first = rec["detections"][0]
    assert first["keypoints"] == [[40.5, 50.0, 0.88], [80.0, 50.5, None]]
    assert first["attributes"] == {"clothing": {"label": "jacket", "class_id": 3, "score": 0.74},
                                   "age": {"label": "adult", "class_id": 1, "score": 0.6}}
    # Absent, not null, where there are none: subscribers that predate them see no change.
    assert "keypoints" not in rec["detections"][1] and "attributes" not in rec["detections"][1]
    assert "box" not in rec["detections"][2] and "keypoints" not in rec["detections"][2]
    back = decode_decision(rec)
    assert back.verdict == d.verdict
    assert back.verdict.detections[0].attributes["clothing"] == Attr("jacket", 3, 0.74)


def test_positional_dets_keep_their_meaning() -> None:
    d = Det("a", 1, 0.5, (0.0, 0.0, 1.0, 1.0), 3)
    assert d.track_id == 3 and d.keypoints is None and d.attributes is None


def test_expect_sees_a_moved_keypoint_or_a_changed_attribute() -> None:
    golden = [decision(PERSON)]
    near = PERSON._replace(keypoints=((41.5, 49.0, 0.87), (80.0, 50.5, None)))
    assert compare(golden, [decision(near)]) == []            # within 2 px and 0.02
    far = PERSON._replace(keypoints=((45.0, 50.0, 0.88), (80.0, 50.5, None)))
    unscored = PERSON._replace(keypoints=((40.5, 50.0, 0.88), (80.0, 50.5, 0.5)))
    fewer = PERSON._replace(keypoints=PERSON.keypoints[:1])
    relabelled = PERSON._replace(attributes={**PERSON.attributes, "age": Attr("child", 0, 0.6)})
    missing = PERSON._replace(attributes=None)
    for other in (far, unscored, fewer, relabelled, missing):
        diffs = compare(golden, [decision(other)])
        assert [x.frame_id for x in diffs] == [4], other


def test_a_golden_line_written_before_keypoints_still_reads() -> None:
    line = ('{"schema":"edgert.decision/1","device_id":"d","run_id":"r","seq":1,"frame_id":0,'
            '"captured_at":1.0,"decided_at":1.01,"deadline_ms":50,"status":"ok","action":"none",'
            '"latency_ms":{"total":10.0},"detections":[{"label":"cup","class_id":41,'
            '"score":0.5,"box":[1.0,2.0,3.0,4.0]}]}')
    assert decode_decision(json.loads(line)).verdict.detections == (PLAIN,)
