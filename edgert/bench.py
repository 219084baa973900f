"""`edgert bench`: what the loop costs beyond `session.run`, measured against a bare run side by side."""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

import numpy as np

from edgert.config import load_config
from edgert.clock import LIVE
from edgert.errors import SourceUnavailable
from edgert.publish import NullOutput
from edgert.runtime import Runtime


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _pct(v: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(v), q)) if len(v) else float("nan")


def bench(config_path: str, frames: int = 300) -> dict[str, Any]:
    """Run `frames` frames as fast as the source gives them, budget measured but not enforced."""
    cfg = load_config(config_path)
    # Every frame, read on demand: a paced live source would only measure the camera's rate.
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, mode="every",
                                                              loop=cfg.source.kind in ("file", "images")))
    # Publishing is measured up to the output: encoding yes, a terminal's speed no.
    rt = Runtime.local(cfg, [NullOutput()])
    runner, feeds = rt.pipeline.runner, {}
    monotonic = LIVE.now
    rss0 = _rss_mb()
    rt.source.start()
    first = rt.source.read(5.0)
    if first is None:
        rt.close()
        raise SourceUnavailable(f"{cfg.file}: source.url: the source gave no frame to bench on")
    rt.warm_up(first.image, runs=5)
    loop_ms, run_ms, bare_ms, capture_ms, cpu_loop, cpu_bare = [], [], [], [], [], []
    stages: dict[str, list[float]] = {}
    try:
        while len(loop_ms) < frames:
            frame = rt.source.read(1.0)
            if frame is None:
                if rt.source.ended:
                    break
                continue
            c0, t0 = time.process_time(), monotonic()
            rt.step(frame)
            t1, c1 = monotonic(), time.process_time()
            loop_ms.append((t1 - t0) * 1e3)
            run_ms.append(runner.last_run_s * 1e3)
            capture_ms.append(frame.capture_s * 1e3)
            cpu_loop.append((c1 - c0) * 1e3)
            for k, v in rt.last_latency.items():
                stages.setdefault(k, []).append(v)
            # The baseline: the same tensor through the same session, bare, right after.
            feeds[runner.input_name] = rt.pipeline.preprocess(frame)[0]
            c2, t2 = time.process_time(), monotonic()
            runner.session.run(None, feeds)
            t3, c3 = monotonic(), time.process_time()
            bare_ms.append((t3 - t2) * 1e3)
            cpu_bare.append((c3 - c2) * 1e3)
    finally:
        summary = rt.summary.as_dict()
        rt.close()
    overhead = np.asarray(loop_ms) - np.asarray(run_ms)
    med_run = _pct(run_ms, 50)
    return {
        "config": str(cfg.file), "model": str(rt.info.path), "frames": len(loop_ms),
        "providers": list(rt.info.providers),
        "stages_ms": {k: {"p50": _pct(v, 50), "p99": _pct(v, 99)} for k, v in stages.items()},
        "capture_ms": {"p50": _pct(capture_ms, 50), "p99": _pct(capture_ms, 99)},
        "session_run_in_loop_ms": {"p50": med_run, "p99": _pct(run_ms, 99)},
        "bare_session_run_ms": {"p50": _pct(bare_ms, 50), "p99": _pct(bare_ms, 99)},
        "loop_overhead_ms": {"p50": _pct(overhead, 50), "p99": _pct(overhead, 99)},
        "loop_overhead_share": {"p50": _pct(overhead, 50) / med_run,
                                "p99": _pct(overhead, 99) / med_run},
        "in_loop_vs_bare_run": med_run / _pct(bare_ms, 50),
        "throughput_fps": 1e3 / _pct(loop_ms, 50) if loop_ms else float("nan"),
        "cpu_ms_per_frame": {"loop": _pct(cpu_loop, 50), "bare_run": _pct(cpu_bare, 50)},
        "memory_mb": {"rss_before": rss0, "rss_after": _rss_mb(),
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "records": summary["records"],
    }


def format_report(r: dict[str, Any]) -> str:
    def ms(d: dict[str, float]) -> str:
        return f"p50 {d['p50']:7.3f} ms   p99 {d['p99']:7.3f} ms"

    lines = [f"edgert bench: {r['frames']} frames of {r['model']} on {', '.join(r['providers'])}"]
    for k, v in r["stages_ms"].items():
        lines.append(f"  stage {k:<12} {ms(v)}")
    lines += [
        f"  session.run in loop {ms(r['session_run_in_loop_ms'])}",
        f"  bare session.run    {ms(r['bare_session_run_ms'])}   (same session, same tensor, "
        "interleaved)",
        f"  loop overhead       {ms(r['loop_overhead_ms'])}   (everything but session.run; "
        "capture excluded)",
        f"  overhead share      p50 {r['loop_overhead_share']['p50']:.1%}   p99 "
        f"{r['loop_overhead_share']['p99']:.1%}   of median inference",
        f"  in-loop / bare run  {r['in_loop_vs_bare_run']:.3f}x",
        f"  throughput          {r['throughput_fps']:.1f} frames/s (capture excluded)",
        f"  cpu per frame       loop {r['cpu_ms_per_frame']['loop']:.2f} ms, bare run "
        f"{r['cpu_ms_per_frame']['bare_run']:.2f} ms",
        f"  memory              rss {r['memory_mb']['rss_before']:.0f} → "
        f"{r['memory_mb']['rss_after']:.0f} MB, max {r['memory_mb']['max_rss']:.0f} MB",
    ]
    return "\n".join(lines)
