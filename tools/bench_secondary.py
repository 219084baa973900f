"""The secondary stage's figures (issue 14): MobileNetV2's cost per person crop, one crop per
run against a batch, side by side; and, with YOLOX-nano persons → MobileNetV2 on the Intel
video under `edgert run`, the share of frames on which the budget cut the secondary stage
short at 1.5× the primary's median latency.

    PYTHONPATH=. python3 tools/bench_secondary.py            # needs ../shared/material
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
MATERIAL = REPO.parent / "shared" / "material"
sys.path.insert(0, str(REPO))

from edgert.config.types import InputConfig  # noqa: E402
from edgert.preprocess.crops import CropPreprocessor  # noqa: E402

IMAGENET = InputConfig(resize="stretch", color="rgb", scale=1 / 255,
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CONFIG = """
device_id = "bench-secondary"
[source]
url = "file:{video}"
mode = "every"
[model]
path = "{models}/yolox_nano_coco_416.onnx"
family = "yolox"
labels = "{models}/coco80.names"
conf = 0.3
[model.input]
align = "top_left"
{secondary}
[runtime]
budget_ms = {budget}
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "{out}"
"""
SECONDARY = """
[[model.secondary]]
name = "clothing"
on = ["person"]
path = "{models}/mobilenetv2-12-int8.onnx"
family = "classify"
labels = "{models}/imagenet1000_simple_labels.txt"
max_crops = 4
[model.secondary.input]
resize = "stretch"
color = "rgb"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
"""


def per_crop(k: int, reps: int) -> dict[str, float]:
    """Median ms per crop: k crops one run each, against one run of k, alternated."""
    session = ort.InferenceSession(str(MATERIAL / "models/mobilenetv2-12-int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), np.uint8)
    boxes = [np.array([100 + 200 * i, 100, 260 + 200 * i, 500], np.float32) for i in range(k)]
    one = CropPreprocessor(IMAGENET, (224, 224), np.float32, 1, 0.1)
    many = CropPreprocessor(IMAGENET, (224, 224), np.float32, k, 0.1)
    single, batched = [], []
    for rep in range(reps + 3):
        t0 = time.perf_counter()
        for b in boxes:
            one.write(0, image, one.box(b, (720, 1280)))
            session.run(None, {"input": one.tensor})
        t1 = time.perf_counter()
        for j, b in enumerate(boxes):
            many.write(j, image, many.box(b, (720, 1280)))
        session.run(None, {"input": many.tensor})
        t2 = time.perf_counter()
        if rep >= 3:   # first runs are warm-up
            single.append((t1 - t0) * 1e3 / k)
            batched.append((t2 - t1) * 1e3 / k)
    s, b = statistics.median(single), statistics.median(batched)
    return {"crops": k, "single_ms_per_crop": round(s, 3), "batched_ms_per_crop": round(b, 3),
            "batched_vs_single": round(b / s, 3)}


def run(tmp: Path, budget: float, secondary: bool) -> list[dict]:
    out = tmp / f"out-{secondary}.jsonl"
    out.unlink(missing_ok=True)
    models = MATERIAL / "models"
    cfg = tmp / "b.toml"
    cfg.write_text(CONFIG.format(
        video=MATERIAL / "videos/intel_one-by-one-person-detection.mp4", models=models,
        secondary=SECONDARY.format(models=models) if secondary else "", budget=budget, out=out))
    subprocess.run([sys.executable, "-m", "edgert", "run", str(cfg)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PYTHONPATH=str(REPO)))
    return [json.loads(ln) for ln in out.read_text().splitlines() if '"edgert.decision/1"' in ln]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    if not (MATERIAL / "README.md").is_file():
        print(f"the shared material is not at {MATERIAL}", file=sys.stderr)
        return 2
    report = {"per_crop": [per_crop(k, args.reps) for k in (2, 4)]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = run(tmp, 5000, secondary=False)
        median = statistics.median(r["latency_ms"]["total"] for r in plain)
        budget = round(1.5 * median, 2)
        recs = run(tmp, budget, secondary=True)
    people = [r for r in recs if r["status"] == "ok" and
              any(d["label"] == "person" for d in r["detections"])]
    cut = [r for r in people if any(d.get("attributes", {}).get("clothing", {}).get("skipped")
                                    == "budget" for d in r["detections"])]
    crops = [d["attributes"]["clothing"] for r in people for d in r["detections"]
             if "attributes" in d]
    report["at_1.5x"] = {
        "primary_median_ms": round(median, 3), "budget_ms": budget, "frames": len(recs),
        "ok": sum(r["status"] == "ok" for r in recs),
        "ok_frames_with_persons": len(people),
        "cut_short": len(cut), "cut_short_share": round(len(cut) / max(1, len(people)), 4),
        "crops_run": sum("skipped" not in c or c["skipped"] == "low_score" for c in crops),
        "crops_not_reached": sum(c.get("skipped") == "budget" for c in crops)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
