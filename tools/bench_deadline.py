"""The hard budget's figures, observed from outside real `edgert run` processes.

    python tools/bench_deadline.py [--frames 2000] [--miss-frames 1200] [--hogs 0]

1. Fail-safe lateness while the model saturates both cores: a model that runs 2 MatMuls on a
   dark frame and 60 on a bright one (onnxruntime on 2 threads), fed an image folder where
   one frame in ten is bright; the budget sits between the two costs, so every bright frame's
   run is busy on both cores when its deadline comes and the guard publishes the fail-safe.
   Lateness is measured by the observer (tools/observe.py) on receipt: receive time minus
   `captured_at + deadline_ms`, for the guard's records (`cause = "deadline"`).
2. Miss rate at budget = 1.5 × the demo model's median inference (measured here first, bare
   runs paced at 30 fps; the share of those bare runs over the budget is a floor no loop can
   beat), the
   demo config with `latest` frames from a 30 fps `pattern:` source at the clip's size, over
   at least --miss-frames frames.

`--hogs N` adds N busy-looping processes during part 1 (more load than the model's own).
Both parts check that no `ok` record arrived late. Prints one JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))   # the cost-controlled test models
sys.path.insert(0, str(REPO / "tools"))

from edgert.config.types import RuntimeConfig  # noqa: E402
from edgert.infer import InferenceRunner, load_model  # noqa: E402
from observe import observe  # noqa: E402
from onnx_models import spiky_chain  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO))

SPIKE_CONFIG = """
device_id = "bench-deadline"
[source]
url = "images:frames"
mode = "every"
loop = true
[model]
path = "spiky.onnx"
[runtime]
budget_ms = {budget:.3f}
intra_op_threads = 2
[fail_safe]
action = "stop"
[[outputs]]
type = "stdout"
"""


def run_times(path: Path, x: np.ndarray, runs: int, fps: float | None = None) -> np.ndarray:
    """Bare `session.run` times (ms) with edgert's session settings: back to back, or one run
    every 1/fps s like the frames."""
    session, info = load_model(path, RuntimeConfig())
    runner = InferenceRunner(session, info.input_name)
    runner.run(x)
    times = []
    for _ in range(runs):
        times.append(runner.run(x).seconds * 1e3)
        if fps:
            time.sleep(max(0.0, 1 / fps - times[-1] / 1e3))
    return np.asarray(times)


def median_ms(path: Path, x: np.ndarray, runs: int = 15) -> float:
    return float(np.median(run_times(path, x, runs)))


def pct(v: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(v, np.float64)
    if not a.size:
        return {}
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}


def late_ok_details(obs) -> list[dict]:
    """For each `ok` record that arrived late: by how much, and how early it was decided."""
    out = []
    for r, got in zip(obs.records, obs.received):
        deadline = r["captured_at"] + r["deadline_ms"] / 1e3
        if r["status"] == "ok" and got > deadline:
            out.append({"seq": r["seq"], "late_ms": round((got - deadline) * 1e3, 3),
                        "decided_before_ms": round((deadline - r["decided_at"]) * 1e3, 3)})
    return out


def summary_of(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if "summary: " in line:
            return json.loads(line.split("summary: ", 1)[1])
    return {}


def lateness_under_saturation(work: Path, frames: int, hogs: int) -> dict:
    model = spiky_chain(work / "spiky.onnx", size=512, light=2, heavy=60)
    light = median_ms(model, np.full((1, 3, 64, 64), 30.0, np.float32))
    heavy = median_ms(model, np.full((1, 3, 64, 64), 230.0, np.float32), runs=3)
    budget = min(max(3 * light, light + 4), heavy / 2)
    folder = work / "frames"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((64, 64, 3), 230 if i == 5 else 30, np.uint8))
    cfg = work / "spike.toml"
    cfg.write_text(SPIKE_CONFIG.format(budget=budget))
    hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        obs = observe([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=str(work), env=ENV,
                      records=frames, timeout=1800)
    finally:
        for h in hog_procs:
            h.kill()
    by_guard = [(r, got) for r, got in zip(obs.records, obs.received)
                if r["status"] == "fail_safe" and r.get("cause") == "deadline"]
    late = [(got - (r["captured_at"] + r["deadline_ms"] / 1e3)) * 1e3 for r, got in by_guard]
    s = summary_of(obs.stderr)
    return {
        "model_ms": {"light": round(light, 3), "heavy": round(heavy, 3)}, "budget_ms": round(budget, 3),
        "hogs": hogs, "records": len(obs.records), "observer_realtime": obs.realtime,
        "guard": s.get("guard"), "ok_late": obs.late("ok"), "ok_late_in_process": s.get("late_ok"),
        "late_ok_records": late_ok_details(obs),
        "fail_safe_at_deadline": len(by_guard),
        "lateness_observed_ms": pct(late),
        "lateness_in_process_ms": pct([r["late_ms"] for r, _ in by_guard if "late_ms" in r]),
    }


def miss_rate(work: Path, frames: int) -> dict:
    demo = REPO / "device_configs" / "demo.toml"
    cap = cv2.VideoCapture(str(REPO / "device_configs" / "demo" / "conveyor.mp4"))
    ok, image = cap.read()
    cap.release()
    assert ok, "cannot read the demo clip"
    from edgert.config import load_config
    from edgert.preprocess import ReferencePreprocessor
    from edgert.frame import Frame
    cfg = load_config(demo)
    pre = ReferencePreprocessor(cfg.model.input, (320, 320), np.float32)
    tensor, _ = pre(Frame(0, image, 0.0, 0.0))
    # The median of runs paced like the frames (30 fps), not back to back: on this VM a
    # model run once every 33 ms takes ~1.5× as long as the same model run back to back
    # (idle vCPUs and onnxruntime's sleeping pool threads wake slowly).
    paced = run_times(cfg.model.path, tensor.copy(), 600, fps=30)
    median = float(np.median(paced))
    budget = 1.5 * median
    floor = {"runs": len(paced), "back_to_back_p50": round(median_ms(cfg.model.path, tensor.copy()), 3),
             "paced_p50": round(median, 3), "paced_p99": round(float(np.percentile(paced, 99)), 3),
             "over_budget": round(float((paced > budget).mean()), 4)}
    text = demo.read_text()
    text = text.replace("budget_ms = 100", f"budget_ms = {budget:.3f}")
    # A 30 fps live source of the clip's size (the clip itself is 15 fps): the demo model's cost
    # hardly depends on what it sees.
    text = text.replace('url = "file:demo/conveyor.mp4"', 'url = "pattern:"\nfps = 30\nsize = [360, 640]')
    assert f"budget_ms = {budget:.3f}" in text and "pattern:" in text, "demo.toml changed shape"
    path = REPO / "device_configs" / ".bench_deadline.toml"   # beside demo.toml: relative paths
    path.write_text(text)
    try:
        obs = observe([sys.executable, "-m", "edgert", "run", str(path)], env=ENV, records=frames,
                      timeout=1800)
    finally:
        path.unlink()
    n = len(obs.records)
    missed = [r for r in obs.records if r["status"] != "ok"]
    s = summary_of(obs.stderr)
    return {"median_inference_ms": round(median, 3), "budget_ms": round(budget, 3),
            "bare_runs": floor, "records": n,
            "missed": len(missed), "miss_rate": round(len(missed) / max(n, 1), 5),
            "causes": dict(Counter(f"{r.get('stage')}/{r.get('cause')}" for r in missed)),
            "ok_late": obs.late("ok"), "ok_late_in_process": s.get("late_ok"),
            "late_ok_records": late_ok_details(obs), "source": s.get("source"),
            "total_ms": s.get("latency_ms", {}).get("total")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000, help="records for the lateness part")
    ap.add_argument("--miss-frames", type=int, default=1200, help="records for the miss-rate part")
    ap.add_argument("--hogs", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"lateness": lateness_under_saturation(Path(tmp), args.frames, args.hogs),
                  "miss_rate": miss_rate(Path(tmp), args.miss_frames)}
    print(json.dumps(report, indent=2))
    bad = report["lateness"]["ok_late"] + report["miss_rate"]["ok_late"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
