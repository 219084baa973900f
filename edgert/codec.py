"""The one place records become the contract's JSON, and decisions are read back from it."""

from __future__ import annotations

import json
from typing import Any

from edgert.records import (SCHEMA_DECISION, SCHEMA_EVENT, SCHEMA_METRICS, SCHEMA_STATUS,
                            Attr, Decision, Det, Event, Metrics, Status, Timing, Verdict)

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def decision_dict(d: Decision) -> dict[str, Any]:
    v, t = d.verdict, d.timing
    rec: dict[str, Any] = {
        "schema": SCHEMA_DECISION, "device_id": d.device_id, "run_id": d.run_id, "seq": d.seq,
        "frame_id": v.frame_id, "captured_at": round(t.captured_at, 6),
        "decided_at": round(t.decided_at, 6), "deadline_ms": t.deadline_ms,
        "status": v.status, "action": v.action, "latency_ms": dict(t.latency_ms),
        "detections": [_det(x) for x in v.detections],
    }
    if v.source_id is not None:
        rec["source_id"] = v.source_id
    if v.rule is not None:
        rec["rule"] = v.rule
    if v.rung is not None:
        rec["rung"] = v.rung
    if v.reused:
        rec["reused"] = True
    if v.escalated:
        rec["escalated"] = True
    if v.cause is not None:
        rec["cause"], rec["stage"] = v.cause, v.stage
    if v.error is not None:
        rec["error"] = v.error
    if t.late_ms is not None:
        rec["late_ms"] = t.late_ms
    if v.held_seq is not None:
        rec["held_seq"], rec["held_age_ms"] = v.held_seq, v.held_age_ms
    if v.hold_expired:
        rec["hold_expired"] = True
    return rec


def _det(x: Det) -> dict[str, Any]:
    if x.box is None:
        d = {"label": x.label, "class_id": x.class_id, "score": x.score}
    elif x.track_id is not None:
        d = {"label": x.label, "class_id": x.class_id, "score": x.score, "box": list(x.box),
             "track_id": x.track_id}
    else:
        d = {"label": x.label, "class_id": x.class_id, "score": x.score, "box": list(x.box)}
    if x.keypoints is not None:
        d["keypoints"] = x.keypoints   # tuples of (x, y, score): JSON arrays as they are
    if x.attributes is not None:
        d["attributes"] = {name: _attr(a) for name, a in x.attributes.items()}
    return d


def _points(kps: Any) -> tuple | None:
    if kps is None:
        return None
    return tuple((float(p[0]), float(p[1]), None if p[2] is None else float(p[2])) for p in kps)


def _det_from(d: dict[str, Any]) -> Det:
    attrs = d.get("attributes")
    return Det(d["label"], int(d["class_id"]), float(d["score"]),
               tuple(d["box"]) if "box" in d else None, d.get("track_id"),
               _points(d.get("keypoints")),
               None if attrs is None else {
                   name: Attr(a.get("label", ""), int(a.get("class_id", -1)),
                              float(a.get("score", 0.0)), a.get("skipped"),
                              _points(a.get("keypoints")))
                   for name, a in attrs.items()})


def _attr(a: Attr) -> dict[str, Any]:
    """A secondary model's result; one it did not run on says only why."""
    d: dict[str, Any] = ({"label": a.label, "class_id": a.class_id, "score": a.score}
                         if a.label else {})
    if a.skipped:
        d["skipped"] = a.skipped
    if a.keypoints is not None:
        d["keypoints"] = a.keypoints
    return d


def event_dict(e: Event) -> dict[str, Any]:
    rec: dict[str, Any] = {"schema": SCHEMA_EVENT, "device_id": e.device_id, "run_id": e.run_id,
                           "seq": e.seq, "rule": e.rule, "kind": e.kind, "event_id": e.event_id,
                           "frame_id": e.frame_id, "at": round(e.at, 6)}
    if e.track_id is not None:
        rec["track_id"] = e.track_id
    if e.counts is not None:
        rec["counts"] = dict(e.counts)
    if e.source_id is not None:
        rec["source_id"] = e.source_id
    return rec


def status_dict(s: Status) -> dict[str, Any]:
    return {"schema": SCHEMA_STATUS, "state": s.state, "device_id": s.device_id,
            "at": round(s.at, 3), **s.detail}


def metrics_dict(m: Metrics) -> dict[str, Any]:
    return {"schema": SCHEMA_METRICS, "device_id": m.device_id, "run_id": m.run_id,
            "at": round(m.at, 3), "interval_s": m.interval_s, **m.counts,
            "misses": {k: dict(v) for k, v in m.misses.items()},
            "latency_ms": {k: dict(v) for k, v in m.latency_ms.items()}, "rung": m.rung,
            "source": dict(m.source), "outputs": dict(m.outputs)}


_TO_DICT = {Decision: decision_dict, Event: event_dict, Status: status_dict, Metrics: metrics_dict}


def encode(record: Decision | Event | Status | Metrics) -> bytes:
    """One compact JSON line, no newline. NaN is refused: JSON readers on the floor reject it."""
    return _dumps(_TO_DICT[type(record)](record)).encode()


def decode_decision(rec: dict[str, Any]) -> Decision:
    """A decision record (as a dict from JSON) back as the typed value; raises KeyError or
    TypeError when a required field is missing or of the wrong kind."""
    if rec.get("schema") != SCHEMA_DECISION:
        raise TypeError(f"schema is {rec.get('schema')!r}, not {SCHEMA_DECISION!r}")
    dets = tuple(_det_from(d) for d in rec["detections"])
    verdict = Verdict(frame_id=int(rec["frame_id"]), status=rec["status"], action=rec["action"],
                      rule=rec.get("rule"), detections=dets, cause=rec.get("cause"),
                      stage=rec.get("stage"), error=rec.get("error"), rung=rec.get("rung"),
                      held_seq=rec.get("held_seq"), held_age_ms=rec.get("held_age_ms"),
                      hold_expired=bool(rec.get("hold_expired", False)),
                      source_id=rec.get("source_id"), reused=bool(rec.get("reused", False)),
                      escalated=bool(rec.get("escalated", False)))
    timing = Timing(captured_at=float(rec["captured_at"]), decided_at=float(rec["decided_at"]),
                    deadline_ms=float(rec["deadline_ms"]), latency_ms=dict(rec["latency_ms"]),
                    late_ms=rec.get("late_ms"))
    return Decision(rec["device_id"], rec["run_id"], int(rec["seq"]), verdict, timing)

