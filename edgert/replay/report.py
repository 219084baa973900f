"""report.json and the terminal table: counts, latency percentiles and costs, from the very
records the replay wrote (so the report can never disagree with decisions.jsonl)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert import __version__
from edgert.config.types import Config
from edgert.records import STAGES, Decision
from edgert.replay.run import Replayed

REPORT = "report.json"
QS = (50, 95, 99)


def percentiles(decisions: Sequence[Decision]) -> dict[str, dict[str, float]]:
    """p50/p95/p99/max per stage and total, over the frames whose stages all ran (ok)."""
    out: dict[str, dict[str, float]] = {}
    for stage in (*STAGES, "total"):
        v = np.asarray([d.timing.latency_ms.get(stage, 0.0) for d in decisions
                        if d.status == "ok"], np.float64)
        if v.size:
            out[stage] = {**{f"p{q}": round(float(np.percentile(v, q)), 3) for q in QS},
                          "max": round(float(v.max()), 3)}
    return out


def misses(decisions: Sequence[Decision], budget_ms: float) -> dict[str, Any]:
    """Frames that missed, by cause: the records' own (enforced) and, where the budget was only
    measured, `over_budget` for ok records whose total exceeded it."""
    by: dict[str, int] = {}
    for d in decisions:
        v = d.verdict
        if v.status != "ok":
            key = f"{v.cause or v.status}@{v.stage or '?'}"
            by[key] = by.get(key, 0) + 1
        elif d.timing.latency_ms.get("total", 0.0) > budget_ms:
            by["over_budget"] = by.get("over_budget", 0) + 1
    return dict(sorted(by.items()))


def file_report(r: Replayed, budget_ms: float) -> dict[str, Any]:
    ds = r.decisions
    n = len(ds)
    statuses: dict[str, int] = {}
    actions: dict[str, int] = {}
    for d in ds:
        statuses[d.status] = statuses.get(d.status, 0) + 1
        actions[d.action] = actions.get(d.action, 0) + 1
    return {
        "video": str(r.recording.path), "folder": str(r.folder),
        "frames_announced": r.recording.announced, "frames_read": r.frames_read,
        "frames_decided": n, "drops": r.dropped, "status": statuses, "actions": actions,
        "misses": misses(ds, budget_ms), "latency_ms": percentiles(ds),
        "fps": round(n / r.wall_s, 2) if r.wall_s > 0 else None,
        "cpu_ms_per_frame": round(r.cpu_s * 1e3 / n, 3) if n else None,
        "wall_s": round(r.wall_s, 3), "annotated": r.annotated or None,
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(cfg: Config, done: Sequence[Replayed], *, mode: str, complete: bool = True,
          error: str | None = None) -> dict[str, Any]:
    """The whole replay's report: one entry per recording and the totals over all of them."""
    budget = cfg.runtime.budget_ms
    files = [file_report(r, budget) for r in done]
    every = [d for r in done for d in r.decisions]
    wall = sum(r.wall_s for r in done)
    cpu = sum(r.cpu_s for r in done)
    total = {
        "frames_announced": sum(f["frames_announced"] or 0 for f in files),
        "frames_read": sum(f["frames_read"] for f in files),
        "frames_decided": len(every), "drops": sum(f["drops"] for f in files),
        "misses": misses(every, budget), "latency_ms": percentiles(every),
        "fps": round(len(every) / wall, 2) if wall > 0 else None,
        "cpu_ms_per_frame": round(cpu * 1e3 / len(every), 3) if every else None,
    }
    first = done[0] if done else None
    return {
        "complete": complete, **({"error": error} if error else {}),
        "edgert_version": __version__, "mode": mode, "config": str(cfg.file),
        "config_sha256": sha256(cfg.file), "model": first.model if first else str(cfg.model.path),
        "providers": list(first.providers) if first else list(cfg.runtime.providers),
        "budget_ms": budget,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "total": total, "recordings": files,
    }


def write(out: Path, report: dict[str, Any]) -> Path:
    """Written whole under a temporary name, then renamed: a reader never sees half a report."""
    path, tmp = out / REPORT, out / (REPORT + ".part")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def table(report: dict[str, Any]) -> str:
    """The few numbers to read at the end of a replay, one line per recording."""
    head = (f"{'recording':<28} {'frames':>7} {'decided':>7} {'drops':>5} {'misses':>6} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'fps':>7}")
    rows = [f"edgert replay ({report['mode']}), budget {report['budget_ms']:g} ms, "
            f"{Path(report['model']).name} on {','.join(report['providers'])}", head]
    entries = [(Path(f["video"]).name, f) for f in report["recordings"]]
    if len(entries) > 1:
        entries.append(("all", report["total"]))
    for name, f in entries:
        lat = f["latency_ms"].get("total", {})   # empty when no frame was decided ok
        ms = [f"{lat[k]:>8.2f}" if k in lat else f"{'-':>8}" for k in ("p50", "p99", "max")]
        rows.append(f"{name[:28]:<28} {f['frames_read']:>7} {f['frames_decided']:>7} "
                    f"{f['drops']:>5} {sum(f['misses'].values()):>6} {' '.join(ms)} "
                    f"{f['fps'] or 0:>7.1f}")
    return "\n".join(rows)
