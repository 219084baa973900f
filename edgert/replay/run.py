"""One recording through the same loop as `edgert run`: fast (every frame, budget measured) or
at the recording's own pace (budget enforced by the sender process, as on the box)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert.clock import LIVE
from edgert.codec import decode_decision
from edgert.config.types import Config, OutputConfig, SourceConfig
from edgert.errors import EdgertError, UsageError
from edgert.publish.lines import jsonl_output
from edgert.records import Decision, SCHEMA_DECISION
from edgert.replay.annotate import Annotator
from edgert.replay.inputs import Recording, shortfall
from edgert.replay.watch import ReplayWatch, progress_bar
from edgert.runtime import Runtime
from edgert.source import decode_ahead

DECISIONS = "decisions.jsonl"
PART = ".part"   # a file still being written, or from a replay that did not finish
ANNOTATED = "annotated.mp4"


@dataclass(frozen=True, slots=True)
class Replayed:
    """What one recording gave: its decisions, read back from the file the run wrote."""

    recording: Recording
    folder: Path
    decisions: tuple[Decision, ...]
    frames_read: int
    dropped: int          # frames the source read that the loop never decided
    wall_s: float         # from ready to the end (warm-up excluded)
    cpu_s: float          # this process's CPU over the whole replay of the file
    summary: dict[str, Any]
    model: str
    providers: tuple[str, ...]
    labels: tuple[str, ...]
    annotated: dict[str, Any]


def _source_cfg(rec: Recording, realtime: bool) -> SourceConfig:
    return SourceConfig(url=f"file:{rec.path}", kind="file", target=str(rec.path),
                        mode="latest" if realtime else "every")


def replay_file(cfg: Config, rec: Recording, folder: Path, stop: threading.Event, *,
                realtime: bool, annotate: bool) -> Replayed:
    """Replays `rec` into `folder`. decisions.jsonl appears only once the recording was read
    to its end and every record is on disk; until then it is decisions.jsonl.part."""
    folder.mkdir(parents=True, exist_ok=True)
    final, part = folder / DECISIONS, folder / (DECISIONS + PART)
    for old in (final, part):
        old.unlink(missing_ok=True)   # an earlier replay's file must not pass for this one's
    src = _source_cfg(rec, realtime)
    annotator = None
    if annotate:
        annotator = Annotator(cfg, folder / ANNOTATED, rec.fps or 15.0, (rec.width, rec.height))
    watch = ReplayWatch(LIVE, annotator, progress_bar(rec.announced, rec.stem),
                        wait=not realtime, fail_safe_action=cfg.fail_safe.action)
    cpu0 = time.process_time()
    try:
        if realtime:
            # The live run's own parts: a paced, newest-frame-wins source and the sender
            # process that enforces the deadline and writes the file.
            rt = Runtime.build(dataclasses.replace(
                cfg, source=src, outputs=(OutputConfig(type="jsonl", path=part),)))
            rt.watch = watch
        else:
            out = jsonl_output(part)
            try:
                rt = Runtime.local(dataclasses.replace(cfg, source=src, outputs=()), [out],
                                   source=decode_ahead(src), watch=watch)
            except BaseException:
                out.close()
                raise
        summary = rt.run(stop)
    finally:
        annotated = watch.close()
    cpu_s = time.process_time() - cpu0
    if stop.is_set():
        raise UsageError(f"{rec.path}: replay interrupted; {part} holds what was decided so far")
    src_stats = summary.source
    if src_stats.get("last_error"):
        raise EdgertError(f"{rec.path}: the recording could not be read to its end "
                          f"({src_stats['last_error']})")
    decisions = read_decisions(part)
    s = summary.as_dict()
    written = sum(o.get("written", 0) for o in s.get("outputs", {}).values())
    # Events share the file: the outputs count them as written too.
    if written != summary.records + rt.event_seq or len(decisions) != summary.records:
        raise EdgertError(f"{part}: {summary.records} decisions were made but {len(decisions)} "
                          "reached the file; the disk may be full")
    frames_read = int(src_stats.get("frames", 0))
    if (why := shortfall(rec, frames_read)) is not None:
        raise Truncated(why)
    part.replace(final)
    return Replayed(rec, folder, tuple(decisions), frames_read, frames_read - len(decisions),
                    summary.seconds, cpu_s, s, str(rt.info.path), tuple(rt.info.providers),
                    tuple(rt.pipeline.decoder.labels), annotated)


class Truncated(UsageError):
    """The container announced more frames than the file holds."""


def read_decisions(path: Path) -> list[Decision]:
    """Decision records from a JSONL file (events and other records between them skipped);
    a line that is not JSON or not a decision is the file's fault, named with its line."""
    out: list[Decision] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot be read ({e}); give a decisions.jsonl that "
                         "edgert wrote") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise TypeError("not a JSON object")
            if rec.get("schema", SCHEMA_DECISION) != SCHEMA_DECISION:
                continue   # events share the file
            out.append(decode_decision(rec))
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path}: line {n} is not a decision record ({e}); give a "
                             "decisions.jsonl that edgert wrote") from None
    return out
