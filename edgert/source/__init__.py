"""Where frames come from: `open_source` is the one place that knows the concrete classes."""

from __future__ import annotations

from edgert.clock import LIVE, Clock
from edgert.config.types import SourceConfig
from edgert.errors import SourceUnavailable
from edgert.source.base import DEFAULT_FPS, FrameSource, Reader, SourceStats
from edgert.source.capture import CaptureReader
from edgert.source.direct import DirectSource
from edgert.source.grabber import AheadSource, GrabberSource
from edgert.source.images import ImageFolderReader
from edgert.source.pattern import PatternReader

__all__ = ["FrameSource", "SourceStats", "decode_ahead", "open_source"]

KINDS = ("file", "camera", "v4l", "network", "gstreamer", "images", "pattern")
MODES = ("latest", "every")


def _reader(cfg: SourceConfig, clock: Clock) -> Reader:
    if cfg.kind == "images":
        return ImageFolderReader(cfg, clock)
    if cfg.kind == "pattern":
        return PatternReader(cfg, clock)
    return CaptureReader(cfg, clock)


def open_source(cfg: SourceConfig, clock: Clock = LIVE, source_id: str = "main", *,
                threaded: bool = False) -> FrameSource:
    """The source `cfg` describes, not yet started: call `start()` to open it.

    One Reader per kind of medium, driven either by a GrabberSource (a thread; `latest`
    mode, and `every` mode on live kinds) or by a DirectSource (`every` mode on files, image
    folders and the pattern: decoded on the caller's thread, so replays are repeatable).
    `threaded`: a GrabberSource always (one of several sources: none may decode on the loop's
    thread while another's frame waits; a recording is then paced at its own rate).
    """
    if cfg.kind not in KINDS:
        raise SourceUnavailable(f"source {cfg.url}: unknown kind {cfg.kind!r}; "
                                f"use one of {', '.join(KINDS)}")
    if cfg.mode not in MODES:
        raise SourceUnavailable(f"source {cfg.url}: unknown mode {cfg.mode!r}; "
                                "use latest or every")
    reader = _reader(cfg, clock)
    if cfg.mode == "every" and not reader.live and not threaded:
        # fps caps any source: a file or folder read on demand is paced only when it is set.
        pace = (cfg.fps or DEFAULT_FPS) if cfg.kind == "pattern" else cfg.fps
        return DirectSource(reader, loop=cfg.loop, fps=pace, clock=clock, source_id=source_id)
    return GrabberSource(reader, cfg, clock, source_id)


def decode_ahead(cfg: SourceConfig, clock: Clock = LIVE, source_id: str = "main") -> FrameSource:
    """Every frame of a recorded file, in order, decoded on a thread of its own ahead of the
    consumer and never paced (`edgert replay`'s fast clock)."""
    if cfg.kind != "file":
        raise SourceUnavailable(f"source {cfg.url}: decoding ahead is for video files only")
    return AheadSource(CaptureReader(cfg, clock), cfg, clock, source_id)
