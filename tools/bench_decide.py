"""The decide stage's cost with 50 detections, 10 rules and tracking on, and our tracker
against supervision's ByteTrack on the same detections (when supervision is installed).

    PYTHONPATH=. python3 tools/bench_decide.py [--frames 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgert.config.types import Line, Rule, TrackerConfig, Zone
from edgert.decide import RuleEngine
from edgert.decide.tracker import Tracker
from edgert.frame import Detections

LABELS = ("person", "car", "part", "defect")
HW = (720, 1280)


def scene(frames: int, n: int = 50, seed: int = 0) -> list[Detections]:
    """n objects drifting across the frame with jitter, 5% missed per frame, mixed scores."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0], [1200, 650], (n, 2))
    vel = rng.uniform(-8, 8, (n, 2))
    size = rng.uniform(30, 80, (n, 2))
    cls = rng.integers(0, len(LABELS), n).astype(np.int32)
    out = []
    for _ in range(frames):
        pos = pos + vel
        bounce = (pos < 0) | (pos > [1200, 650])
        vel[bounce] *= -1
        keep = rng.random(n) > 0.05
        jitter = rng.normal(0, 1.0, (n, 2))
        xy = pos + jitter
        boxes = np.hstack([xy, xy + size]).astype(np.float32)[keep]
        scores = rng.uniform(0.2, 0.99, n).astype(np.float32)[keep]
        order = np.argsort(-scores)
        out.append(Detections(boxes[order], scores[order], cls[keep][order], LABELS))
    return out


def ten_rules() -> tuple[tuple[Rule, ...], tuple[Zone, ...], tuple[Line, ...]]:
    zones = (Zone("a", ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))),
             Zone("b", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)), anchor="center"),
             Zone("c", ((0.2, 0.2), (0.8, 0.2), (0.9, 0.7), (0.5, 0.9), (0.1, 0.7))))
    lines = (Line("v", (640, 0), (640, 720)), Line("h", (0, 360), (1280, 360)))
    rules = (Rule("r0", "stop", ("defect",), 0.5, "a", debounce=(2, 3), priority=5),
             Rule("r1", "slow", ("person",), 0.4, "b", min_count=3),
             Rule("r2", "alarm", ("person",), 0.5, "c", dwell_s=2.0),
             Rule("r3", "in", ("person",), crosses="v", direction="left_to_right"),
             Rule("r4", "out", ("person",), crosses="v", direction="right_to_left"),
             Rule("r5", "cars", ("car",), crosses="h"),
             Rule("r6", "empty", (), 0.0, "a", min_count=0, max_count=0),
             Rule("r7", "big", ("part",), area=(4000, 1e9), debounce_s=0.3),
             Rule("r8", "held", ("part",), 0.6, "c", min_on_s=1.0, min_off_s=0.5),
             Rule("r9", "any", ("car", "part"), 0.8))
    return rules, zones, lines


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def bench_decide(frames: list[Detections]) -> tuple[list[float], list[float]]:
    """Wall time and this thread's CPU time per frame: on a loaded box the wall p99 measures
    the neighbours' preemptions, the CPU p99 what the stage itself costs."""
    rules, zones, lines = ten_rules()
    eng = RuleEngine(rules, zones, lines, TrackerConfig())
    wall, cpu = [], []
    for i, det in enumerate(frames):
        c0, t0 = time.thread_time(), time.perf_counter()
        eng.decide(det, HW, i / 30)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return wall[100:], cpu[100:]   # after warm-up


def bench_ours(frames: list[Detections]) -> tuple[list[float], int]:
    tr = Tracker(TrackerConfig())
    times, ids = [], set()
    for i, det in enumerate(frames):
        boxes = det.boxes.astype(np.float64)
        t0 = time.perf_counter()
        got = tr.update(boxes, det.scores, i / 30)
        times.append(time.perf_counter() - t0)
        ids |= set(got[got >= 0].tolist())
    return times[100:], len(ids)


def bench_supervision(frames: list[Detections]) -> tuple[list[float], int] | None:
    try:
        import supervision as sv
    except ImportError:
        return None
    tr = sv.ByteTrack(frame_rate=30)
    times, ids = [], set()
    for det in frames:
        d = sv.Detections(xyxy=det.boxes.astype(np.float32), confidence=det.scores,
                          class_id=det.class_ids)
        t0 = time.perf_counter()
        got = tr.update_with_detections(d)
        times.append(time.perf_counter() - t0)
        ids |= set(got.tracker_id.tolist())
    return times[100:], len(ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=3000)
    frames = scene(ap.parse_args().frames)
    d, c = bench_decide(frames)
    print(f"decide, 50 detections, 10 rules, tracking on: wall p50 {pct(d, 50):.3f} ms, "
          f"p99 {pct(d, 99):.3f} ms; CPU p50 {pct(c, 50):.3f} ms, p99 {pct(c, 99):.3f} ms "
          f"over {len(d)} frames")
    ours, n_ours = bench_ours(frames)
    print(f"edgert Tracker:         p50 {pct(ours, 50):.3f} ms, p99 {pct(ours, 99):.3f} ms, "
          f"{n_ours} ids for 50 objects")
    sv = bench_supervision(frames)
    if sv is None:
        print("supervision ByteTrack:  not installed (pip install supervision to compare)")
    else:
        print(f"supervision ByteTrack:  p50 {pct(sv[0], 50):.3f} ms, p99 {pct(sv[0], 99):.3f} ms, "
              f"{sv[1]} ids for 50 objects")


if __name__ == "__main__":
    main()
