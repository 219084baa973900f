"""Frozen, typed configuration values: what the rest of edgert may rely on after load."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

Point = tuple[float, float]

# Still images: `images:` reads them, and `file:` hands them to the same reader (not FFmpeg).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where frames come from ([source], or one of [[sources]])."""

    url: str                    # as written by the user, for messages
    kind: str                   # file | camera | v4l | network | gstreamer | images | pattern
                                # (images: a folder of images, or one image file)
    target: str                 # path, device index, URL or pipeline, resolved against the config
    mode: str = "latest"        # latest | every
    fps: float | None = None    # pattern rate (default 30) and a cap for any source
    loop: bool = False          # a file or image folder starts again at its end
    stall_timeout_s: float = 5.0   # a live source with no new frame this long is reopened
    reopen_initial_s: float = 0.5  # first backoff of a reopen; doubles to reopen_max_s
    reopen_max_s: float = 30.0
    size: tuple[int, int] = (480, 640)  # pattern: [height, width]
    id: str = "main"            # [[sources]]: names the source in records, topics and `sources`
    fail_safe: str | None = None   # this source's fail-safe action; None: [fail_safe] action


@dataclass(frozen=True, slots=True)
class InputConfig:
    """What the model expects of its input ([model.input])."""

    resize: str = "letterbox"          # letterbox | stretch | center_crop
    size: tuple[int, int] | None = None  # [height, width]; from the model when static
    color: str = "bgr"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = 114
    crop_fraction: float = 0.875
    align: str = "center"              # letterbox placement: center | top_left
    layout: str | None = None          # nchw | nhwc; None: read from the file's input shape
    # The keys the device config or model.toml set, as (key, "config" | "model.toml"): the
    # model's metadata fills in only the others, and check and the ready line say which is which.
    given: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The model and how to read its outputs ([model], over model.toml)."""

    path: Path
    family: str = "yolov8"
    labels: tuple[str, ...] | None = None   # from labels file; else the model's metadata
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    top_k: int = 5
    input: InputConfig = field(default_factory=InputConfig)
    secondary: tuple[SecondaryConfig, ...] = ()   # models run on crops of this one's detections
    stage: UserStageConfig | None = None          # a cascade of the user's own, after them
    escalate: EscalateConfig | None = None        # a heavier model, only when this one is unsure


@dataclass(frozen=True, slots=True)
class EscalateConfig:
    """[model.escalate]: a heavier model with the same labels, run on the same frame only when
    the primary is unsure and the heavier model's learned cost still fits the deadline."""

    model: ModelConfig
    band: tuple[float, float] = (0.3, 0.6)   # a detection scoring lo <= s < hi is unsure
    on: tuple[str, ...] = ()                  # labels whose scores count; empty: every label
    # Also unsure: a detection a rule counts whose score is within `hinge` of that rule's
    # min_score — the rule's decision hinges on it (0: off).
    hinge: float = 0.0


@dataclass(frozen=True, slots=True)
class UserStageConfig:
    """[model.stage]: a Python function run on each frame after the primary's decode (and the
    secondary models), with sessions it names, inside the frame's deadline."""

    function: str                                  # "package.module:function"
    sessions: Mapping[str, Path] = field(default_factory=dict)   # name → .onnx, opened at start
    options: Mapping[str, object] = field(default_factory=dict)  # handed to it as they are


@dataclass(frozen=True, slots=True)
class SecondaryConfig:
    """A second model on crops of the primary's detections ([[model.secondary]]); its results
    go to each detection's `attributes` under `name`."""

    name: str
    model: ModelConfig                 # its file, family (classify or a user decoder), input
    on: tuple[str, ...] = ()           # the primary's labels to crop; empty: every label
    min_score: float = 0.0             # the primary's score a detection needs to be cropped
    max_crops: int = 4                 # per frame, highest primary score first
    padding: float = 0.1               # the box grows by this share of its width/height a side


@dataclass(frozen=True, slots=True)
class Rung:
    """A lighter way to run the same task: another model file, or the same at another size."""

    name: str
    path: Path                          # the main model's file unless the rung names its own
    size: tuple[int, int] | None = None  # [height, width] for a model with a dynamic input


@dataclass(frozen=True, slots=True)
class LadderConfig:
    """Steps down to lighter rungs after repeated misses, back up when there is headroom."""

    rungs: tuple[Rung, ...] = ()         # lightest last; the main model is rung 0
    down_after: int = 3                  # consecutive missed frames before stepping down
    up_after: int = 30                   # consecutive frames with headroom before stepping up
    headroom: float = 0.8                # the rung above must be expected to fit in this share


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Budget, overrun policy, providers and threads ([runtime])."""

    providers: tuple[str, ...] = ("cpu",)
    budget_ms: float = 50.0
    on_overrun: str = "fail_safe"       # fail_safe | hold_last | skip
    hold_last_max_age_ms: float = 500.0  # hold_last: the oldest decision that may be repeated
    guard_priority: str = "realtime"     # realtime (SCHED_FIFO where allowed) | normal
    loop_priority: str = "realtime"      # realtime: the loop and its grabbers too (SCHED_FIFO 3) | normal
    cost_quantile: float = 0.5           # a stage is expected to cost this quantile of its recent runs
    metrics_interval_s: float = 10.0     # metrics records to outputs that carry them (MQTT); 0: off
    ladder: LadderConfig = field(default_factory=LadderConfig)
    intra_op_threads: int = 2
    inter_op_threads: int = 1
    kernels: str = "numba"               # numba | reference: pre/post-processing implementation
    spin_wait: bool = False              # onnxruntime's thread-pool spinning; off saves a core
    provider_policy: str = "fallback"    # fallback | fail: when a preferred provider is missing
    provider_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Several sources: frames of different sources run as one batch (a model whose batch
    # dimension is not fixed above 1): off | deadline (only while the batch's learned cost
    # meets its earliest deadline) | fixed (wait for max_batch frames or batch_timeout_ms, as
    # stream muxers do: for comparison).
    batching: str = "deadline"
    max_batch: int = 4
    batch_timeout_ms: float = 33.0


@dataclass(frozen=True, slots=True)
class Zone:
    """A named polygon; a detection's anchor point (or a share of its box) must lie inside."""

    name: str
    polygon: tuple[Point, ...]
    units: str = "fraction"            # fraction (of the frame's width, height) | pixels: said
    anchor: str = "bottom_center"      # bottom_center | center | overlap
    overlap: float = 0.5               # anchor = "overlap": the share of the box inside the zone
    sources: tuple[str, ...] = ()      # the source ids it applies to; empty: every source

    @property
    def fractional(self) -> bool:
        return self.units == "fraction"


@dataclass(frozen=True, slots=True)
class Line:
    """A named segment for crossing rules; `left_to_right` etc. are as seen in the image."""

    name: str
    p1: Point
    p2: Point
    units: str = "pixels"              # pixels | fraction
    anchor: str = "center"             # the point of a box that crosses: center | bottom_center
    sources: tuple[str, ...] = ()      # the source ids it applies to; empty: every source

    @property
    def fractional(self) -> bool:
        return self.units == "fraction"


DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top", "any")


@dataclass(frozen=True, slots=True)
class Rule:
    """A condition on detections, how it is debounced, and the action and events it gives."""

    name: str
    action: str
    labels: tuple[str, ...] = ()        # empty: any label
    min_score: float = 0.0
    zone: str | None = None
    debounce: tuple[int, int] = (1, 1)  # matched in k of the last n frames …
    debounce_s: float = 0.0             # … or held for this long (media time), when above 0
    area: tuple[float, float] = (0.0, float("inf"))   # box area range, square pixels
    min_count: int = 1                  # objects matching at once: min_count ≤ n ≤ max_count
    max_count: int | None = None
    crosses: str | None = None          # a line: fires once per tracked object crossing it
    direction: str = "any"              # with crosses: one of DIRECTIONS
    dwell_s: float = 0.0                # a tracked object in `zone` at least this long
    min_on_s: float = 0.0               # once on, stays on at least this long (media time)
    min_off_s: float = 0.0              # once off, stays off at least this long
    priority: int = 0                   # higher wins the frame's action; ties: config order
    update_s: float = 1.0               # `update` events at most this often while holding
    attribute: tuple[str, str] | None = None   # (secondary name, label) a detection must carry
    sources: tuple[str, ...] = ()       # the source ids it applies to; empty: every source

    @property
    def tracked(self) -> bool:
        """Whether the rule needs object identities across frames."""
        return self.crosses is not None or self.dwell_s > 0


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """ByteTrack-style association ([tracker]); on only when a rule needs identities."""

    high_score: float = 0.5             # detections above this open and first claim tracks
    match_iou: float = 0.3              # first pass: high-score detections to every track
    low_iou: float = 0.5                # second pass: low-score detections to tracks still unmatched
    confirm_hits: int = 2               # a new track gets its id after this many hits in a row
    lost_s: float = 1.0                 # a track unseen this long (media time, observed frames) ends


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Motion gating ([motion]): a frame too like the last inferred one skips the model."""

    enabled: bool = False
    grid: tuple[int, int] = (36, 64)   # [rows, columns] of grey block means a frame is reduced to
    pixel_threshold: float = 12.0      # grey levels a block must move, global lighting taken out
    area_threshold: float = 0.005      # share of blocks (zones_only: of the zones') that must move
    force_every_s: float = 1.0         # media seconds: a frame is inferred at least this often
    zones_only: bool = False           # count only blocks that touch a zone the rules use


@dataclass(frozen=True, slots=True)
class FailSafeConfig:
    """The action a late decision carries: configuration, never a guess."""

    action: str


@dataclass(frozen=True, slots=True)
class SerialConfig:
    """A serial actuator link ([[outputs]] type = "serial"); the frame is in docs/serial.md."""

    port: str                          # a device path (absolute) or a pyserial URL
    baudrate: int = 115200
    write_timeout_ms: float = 100.0    # a write the device does not take in this long is given up
    heartbeat_ms: float = 250.0        # idle this long, the writer sends a heartbeat frame
    ack: bool = False                  # decision and safe_state frames ask the actuator for an ack
    ack_timeout_ms: float = 50.0       # ack: wait this long before sending the frame again
    ack_retries: int = 2               # ack: resends, unless a newer frame is waiting
    miss_streak: int = 5               # non-ok records in a row that send a safe_state; 0: never
    on_missing: str = "wait"           # wait | fail: the device cannot be opened at start
    queue: int = 16                    # frames waiting for the line; the oldest is dropped when full
    reopen_initial_s: float = 0.1      # reopen backoff after the port fails: doubles to reopen_max_s
    reopen_max_s: float = 2.0


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """An MQTT broker ([[outputs]] type = "mqtt"); topics and delivery are in docs/mqtt.md."""

    host: str
    client_id: str                     # default edgert-<device_id>
    prefix: str                        # topic prefix, ends with "/"; default edgert/<device_id>/
    queue_path: Path                   # the on-disk store-and-forward queue (SQLite)
    port: int = 1883                   # 8883 by default with TLS
    decision_qos: int = 1              # 0: not queued on disk, dropped while disconnected
    event_qos: int = 1
    keepalive_s: int = 30              # a silent connection is probed; dead after about 1.5x this
    protocol: str = "3.1.1"            # 3.1.1 | 5
    queue_max: int = 100_000           # rows on disk; beyond, the oldest are dropped and counted
    queue_sync: float = 1.0            # s between fsyncs of the queue (group commit); 0: every record
    backlog_max_age_s: float = 86400.0  # queued longer than this: dropped and counted (0: never)
    max_rate: float = 200.0            # messages/s from the queue to the broker (backlog drain)
    inflight: int = 64                 # QoS>=1 messages sent but not yet acknowledged
    reconnect_min_s: float = 0.5       # backoff doubles from here to reconnect_max_s, with jitter
    reconnect_max_s: float = 30.0
    close_timeout_s: float = 2.0       # at shutdown, time to deliver the queue before leaving it on disk
    tls: bool = False
    ca_file: Path | None = None        # None with tls: the system's CAs
    cert_file: Path | None = None      # client certificate and key, both or neither
    key_file: Path | None = None
    tls_verify: bool = True            # check the broker's certificate and host name
    username: str | None = None
    password: str | None = field(default=None, repr=False)   # never logged


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """One configured output ([[outputs]])."""

    type: str                          # stdout | jsonl | serial | mqtt
    path: Path | None = None           # jsonl
    flush_every: int = 1               # jsonl: flush after this many records
    serial: SerialConfig | None = None  # serial
    mqtt: MqttConfig | None = None     # mqtt
    sources: tuple[str, ...] = ()      # the sources whose records it carries; empty: every one


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Living as a service ([service]): the metrics endpoint and what counts as stalled."""

    metrics_listen: tuple[str, int] | None = None   # (host, port) of /metrics and /healthz; off
    stall_s: float = 5.0               # no loop progress this long: /healthz fails, WATCHDOG=1 stops


@dataclass(frozen=True, slots=True)
class Config:
    """One device's whole configuration, validated."""

    file: Path
    device_id: str
    source: SourceConfig
    model: ModelConfig
    runtime: RuntimeConfig
    fail_safe: FailSafeConfig
    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()
    rules: tuple[Rule, ...] = ()
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    outputs: tuple[OutputConfig, ...] = ()
    service: ServiceConfig = field(default_factory=ServiceConfig)
    # Every source, in config order: [[sources]], or the one [source] (id "main"). `source`
    # is the first. `named_sources`: [[sources]] was used, so records carry `source_id` and
    # MQTT topics the id.
    sources: tuple[SourceConfig, ...] = ()
    named_sources: bool = False

    def __post_init__(self) -> None:
        # Without [[sources]], `sources` follows `source`, also through dataclasses.replace.
        if not self.named_sources or not self.sources:
            object.__setattr__(self, "sources", (self.source,))

    def for_source(self, source_id: str) -> Config:
        """This config as one source sees it: that source, its fail-safe action, and the
        zones, lines and rules that apply to it (its own rule engine is built from this)."""
        src = next(s for s in self.sources if s.id == source_id)
        mine = lambda items: tuple(x for x in items if not x.sources or source_id in x.sources)  # noqa: E731
        return dataclasses.replace(
            self, source=src, sources=(src,), zones=mine(self.zones), lines=mine(self.lines),
            rules=mine(self.rules),
            fail_safe=FailSafeConfig(src.fail_safe) if src.fail_safe else self.fail_safe)
