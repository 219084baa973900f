"""The records edgert emits, as frozen types: what was decided kept apart from how long it took.

A `Decision` pairs a `Verdict` (the frame, its status, action, rule and detections: what two
runs of the same video and config must agree on) with a `Timing` (wall times, latencies,
lateness: what differs from machine to machine). `edgert.codec` is the one place that turns
them into the contract's JSON; outputs receive these types, never dicts to sniff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

SCHEMA_DECISION = "edgert.decision/1"
SCHEMA_EVENT = "edgert.event/1"
SCHEMA_METRICS = "edgert.metrics/1"
SCHEMA_STATUS = "edgert.status/1"
STAGES = ("capture", "preprocess", "infer", "postprocess", "decide")
NO_ACTION = "none"


Keypoint = tuple[float, float, float | None]   # x, y in frame pixels; score None: not given


class Attr(NamedTuple):
    """What a secondary model said about one detection (the record's `attributes` values)."""

    label: str
    class_id: int
    score: float
    # Not a result: "budget" (the deadline would not allow the run), "max_crops" (more crops
    # than allowed), "error"; "low_score": below the secondary's conf (label and score kept).
    skipped: str | None = None
    keypoints: tuple[Keypoint, ...] | None = None   # a landmarks decoder's, in frame pixels


class Det(NamedTuple):
    """One detection in frame pixels (`box` is None for a classification).

    New fields go last with a default: positional constructions elsewhere keep working.
    """

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float] | None = None
    track_id: int | None = None       # where tracking is on and the object's track is confirmed
    keypoints: tuple[Keypoint, ...] | None = None   # where the decoder gives them
    attributes: Mapping[str, Attr] | None = None    # secondary model name → its result


@dataclass(frozen=True, slots=True)
class Verdict:
    """What was decided for one frame: the content two runs are compared on."""

    frame_id: int
    status: str                       # ok | fail_safe | hold_last | skipped
    action: str
    rule: str | None = None
    detections: tuple[Det, ...] = ()
    cause: str | None = None          # a missed frame: stale | predicted | deadline | error
    stage: str | None = None          # … and where
    error: str | None = None
    rung: str | None = None           # the ladder rung that decided, when not the main model
    held_seq: int | None = None       # hold_last: the decision repeated …
    held_age_ms: float | None = None  # … and its age in media time
    hold_expired: bool = False        # hold_last had nothing recent enough: the safe action
    source_id: str | None = None      # only where several sources share a run
    reused: bool = False              # motion gating: unchanged, the last inferred detections
    escalated: bool = False           # the heavier model ([model.escalate]) decided


@dataclass(frozen=True, slots=True)
class Timing:
    """When and how fast: differs between machines and runs, never compared for content."""

    captured_at: float                # Unix seconds
    decided_at: float
    deadline_ms: float
    latency_ms: Mapping[str, float]   # every stage of STAGES and `total`
    late_ms: float | None = None      # a record the deadline forced out: how far past it


@dataclass(frozen=True, slots=True)
class Decision:
    device_id: str
    run_id: str
    seq: int
    verdict: Verdict
    timing: Timing

    @property
    def status(self) -> str:
        return self.verdict.status

    @property
    def action(self) -> str:
        return self.verdict.action


@dataclass(frozen=True, slots=True)
class Event:
    """A rule's event: `new` when it starts to hold, `update` while it holds, `end` after."""

    device_id: str
    run_id: str
    seq: int                          # the events' own sequence, without gaps
    rule: str
    kind: str                         # new | update | end
    event_id: str
    frame_id: int
    at: float                         # Unix seconds of the change
    track_id: int | None = None
    counts: Mapping[str, int] | None = None
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The retained health record: online, degraded (and why) or offline."""

    state: str
    device_id: str
    at: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Counts since start and recent latency percentiles, every `metrics_interval_s`."""

    device_id: str
    run_id: str
    at: float
    interval_s: float
    counts: Mapping[str, int]
    misses: Mapping[str, Mapping[str, int]]
    latency_ms: Mapping[str, Mapping[str, float]]
    rung: str
    source: Mapping[str, Any]
    outputs: Mapping[str, Any]
