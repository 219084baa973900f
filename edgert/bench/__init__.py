"""`edgert bench`: what the loop costs beyond `session.run`, and against the loops users write."""

from __future__ import annotations

from typing import Any

from edgert.publish import NullOutput

__all__ = ["NullOutput", "bench", "format_report"]


def bench(config_path: str, frames: int = 300, compare_with: str | None = None,
          decode_ahead: bool = False, rounds: int = 2) -> dict[str, Any]:
    """The in-process interleaved figures, then (with `compare_with`) each contender alone."""
    # Imported here: `python -m edgert.bench.peer` must load no more of edgert than it runs.
    from edgert.bench.compare import compare, contenders
    from edgert.bench.inloop import bench as bench_in_process

    kinds = contenders(compare_with, decode_ahead) if compare_with else None
    report = bench_in_process(config_path, frames)
    report["compare"] = compare(config_path, kinds, frames, tuple(report["input_hw"]), rounds) if kinds else None
    return report


def format_report(report: dict[str, Any]) -> str:
    from edgert.bench.report import format_report as fmt
    return fmt(report)
