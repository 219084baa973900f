"""`edgert bench` in one process: edgert's loop, the bare `session.run` floor and a hand-written
loop, frame by frame and interleaved, so all three see the same load."""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from edgert.bench.naive import NaiveLoop
from edgert.clock import LIVE
from edgert.bench.setup import bench_config
from edgert.config.types import Config
from edgert.errors import SourceUnavailable, UsageError
from edgert.publish import NullOutput
from edgert.runtime import Runtime
from edgert.wiring import input_plan


def pct(v: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(v), q)) if len(v) else float("nan")


def dist(v: list[float] | np.ndarray) -> dict[str, float]:
    return {"p50": pct(v, 50), "p99": pct(v, 99), "mean": float(np.mean(v)) if len(v) else float("nan")}


def _naive(cfg: Config) -> NaiveLoop | None:
    try:
        return NaiveLoop.open(cfg)
    except UsageError:
        return None   # another family or source: the report says the naive loop did not run


def bench(config_path: str, frames: int = 300) -> dict[str, Any]:
    """`frames` frames as fast as the source gives them, budget measured but not enforced."""
    cfg = bench_config(config_path)
    # Publishing is measured up to the output: encoding yes, a terminal's speed no.
    rt = Runtime.local(cfg, [NullOutput()])
    runner, feeds = rt.pipeline.runner, {}
    now, cpu = LIVE.now, time.process_time
    rt.source.start()
    first = rt.source.read(5.0)
    if first is None:
        rt.close()
        raise SourceUnavailable(f"{cfg.file}: source.url: the source gave no frame to bench on")
    rt.warm_up(first.image, runs=5)
    naive = _naive(cfg)
    if naive is not None:
        for _ in range(5):
            naive.step()
    m: dict[str, list[float]] = {k: [] for k in (
        "frame", "capture", "step", "run", "bare", "cpu_frame", "cpu_capture", "cpu_bare",
        "naive_frame", "naive_capture", "cpu_naive")}
    stages: dict[str, list[float]] = {}

    def edgert_frame() -> bool:
        c0, t0 = cpu(), now()
        frame = rt.source.read(1.0)
        c1, t1 = cpu(), now()
        if frame is None:
            return False
        rt.step(frame)
        t2, c2 = now(), cpu()
        m["capture"].append((t1 - t0) * 1e3)
        m["cpu_capture"].append((c1 - c0) * 1e3)
        m["step"].append((t2 - t1) * 1e3)
        m["frame"].append((t2 - t0) * 1e3)
        m["cpu_frame"].append((c2 - c0) * 1e3)
        m["run"].append(runner.last_run_s * 1e3)
        for k, v in rt.last_latency.items():
            stages.setdefault(k, []).append(v)
        # The floor: the same tensor through the same session, bare, right after.
        feeds[runner.input_name] = rt.pipeline.preprocess(frame)[0]
        c3, t3 = cpu(), now()
        runner.session.run(None, feeds)
        t4, c4 = now(), cpu()
        m["bare"].append((t4 - t3) * 1e3)
        m["cpu_bare"].append((c4 - c3) * 1e3)
        return True

    def naive_frame() -> None:
        if naive is None:
            return
        c0, t0 = cpu(), now()
        naive.step()
        t1, c1 = now(), cpu()
        m["naive_frame"].append((t1 - t0) * 1e3)
        m["naive_capture"].append(naive.last_capture_s * 1e3)
        m["cpu_naive"].append((c1 - c0) * 1e3)

    try:
        while len(m["frame"]) < frames:
            if len(m["frame"]) % 2:   # alternate who goes first: neither always follows the other
                naive_frame()
            if not edgert_frame() and rt.source.ended:
                break
            if not len(m["frame"]) % 2:
                naive_frame()
    finally:
        summary = rt.summary.as_dict()
        rt.close()
        if naive is not None:
            naive.close()
    return _report(cfg, rt, m, stages, summary, naive is not None)


def _report(cfg: Config, rt: Runtime, m: dict[str, list[float]], stages: dict[str, list[float]],
            summary: dict[str, Any], naive: bool) -> dict[str, Any]:
    a = {k: np.asarray(v) for k, v in m.items()}
    n = len(a["frame"])
    overhead = a["step"] - a["run"]
    floor = a["capture"] + a["bare"]
    med_run = pct(a["run"], 50)
    fps = lambda ms: 1e3 / float(np.mean(ms)) if len(ms) else float("nan")   # noqa: E731
    r: dict[str, Any] = {
        "config": str(cfg.file), "model": str(rt.info.path), "frames": n,
        "providers": list(rt.info.providers), "input_hw": list(input_plan(cfg, rt.info).hw),
        "stages_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in stages.items()},
        # What a user sees: wall time per decided frame, the source's read and decode included.
        "frame_ms": dist(a["frame"]),
        "capture_ms": dist(a["capture"]),
        "step_ms": dist(a["step"]),
        "throughput_fps": fps(a["frame"]),
        "session_run_in_loop_ms": {"p50": med_run, "p99": pct(a["run"], 99)},
        "bare_session_run_ms": {"p50": pct(a["bare"], 50), "p99": pct(a["bare"], 99)},
        "floor_frame_ms": dist(floor),
        "loop_overhead_ms": {"p50": pct(overhead, 50), "p99": pct(overhead, 99)},
        "loop_overhead_share": {"p50": pct(overhead, 50) / med_run,
                                "p99": pct(overhead, 99) / med_run},
        "in_loop_vs_bare_run": med_run / pct(a["bare"], 50),
        "step_vs_bare_run": pct(a["step"], 50) / pct(a["bare"], 50),
        "frame_vs_floor": pct(a["frame"], 50) / pct(floor, 50),
        "cpu_ms_per_frame": {"loop": pct(a["cpu_frame"], 50), "capture": pct(a["cpu_capture"], 50),
                             "bare_run": pct(a["cpu_bare"], 50),
                             "floor": pct(a["cpu_capture"] + a["cpu_bare"], 50)},
        "cpu_vs_floor": pct(a["cpu_frame"], 50) / pct(a["cpu_capture"] + a["cpu_bare"], 50),
        "memory_mb": {"max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "records": summary["records"],
        "naive": None,
    }
    if naive and len(a["naive_frame"]):
        r["naive"] = {"frames": len(a["naive_frame"]), "frame_ms": dist(a["naive_frame"]),
                      "capture_ms": dist(a["naive_capture"]), "throughput_fps": fps(a["naive_frame"]),
                      "cpu_ms_per_frame": pct(a["cpu_naive"], 50),
                      "fps_ratio": fps(a["frame"]) / fps(a["naive_frame"]),
                      "cpu_ratio": pct(a["cpu_frame"], 50) / pct(a["cpu_naive"], 50)}
    return r
