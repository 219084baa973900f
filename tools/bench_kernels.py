"""Side-by-side timings of the numba kernels against the OpenCV/numpy path they replace.

    python tools/bench_kernels.py [--reps 300] [--cv-threads 1]

Each case runs reference and kernel alternately in one loop (so load from other processes hits
both alike) after a warm-up, then prints medians, p99 and the speed-up of the medians. Numba
runs on one thread; OpenCV on --cv-threads (1 = like for like; 0 = OpenCV's default pool).
Outputs are checked to agree before anything is timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgert.config.types import InputConfig  # noqa: E402
from edgert.frame import Frame  # noqa: E402
from edgert.postprocess import kernels  # noqa: E402
from edgert.postprocess.families import YoloV8Decoder  # noqa: E402
from edgert.postprocess.kernels import YoloV8Kernel  # noqa: E402
from edgert.preprocess import fused  # noqa: E402
from edgert.preprocess.fused import FusedPreprocessor  # noqa: E402
from edgert.preprocess.reference import ReferencePreprocessor  # noqa: E402
from edgert.preprocess.transform import plan_transform  # noqa: E402


def interleaved(ref: Callable[[], object], new: Callable[[], object], reps: int,
                warmup: int) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(warmup):
        ref(), new()
    t_ref, t_new = np.empty(reps), np.empty(reps)
    clock = time.perf_counter
    for i in range(reps):
        t0 = clock()
        ref()
        t1 = clock()
        new()
        t2 = clock()
        t_ref[i], t_new[i] = t1 - t0, t2 - t1
    return t_ref * 1e3, t_new * 1e3


def row(name: str, t_ref: np.ndarray, t_new: np.ndarray) -> str:
    mr, mn = np.median(t_ref), np.median(t_new)
    return (f"{name:<44} {mr:8.3f} {np.percentile(t_ref, 99):8.3f} "
            f"{mn:8.3f} {np.percentile(t_new, 99):8.3f} {mr / mn:7.2f}x")


def preprocess_case(frame_hw: tuple[int, int], input_hw: tuple[int, int], reps: int,
                    warmup: int) -> str:
    rng = np.random.default_rng(0)
    frame = Frame(0, rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8), 0.0, 0.0)
    cfg = InputConfig(resize="letterbox", color="rgb", scale=1 / 255)
    ref = ReferencePreprocessor(cfg, input_hw, np.float32)
    new = FusedPreprocessor(cfg, input_hw, np.float32)
    a, b = ref(frame)[0], new(frame)[0]
    worst = float(np.abs(a - b).max() * 255)
    if worst > 1.0 + 1e-3:
        raise SystemExit(f"fused and reference differ by {worst:.2f} grey levels")
    t_ref, t_new = interleaved(lambda: ref(frame), lambda: new(frame), reps, warmup)
    (fh, fw), (ih, iw) = frame_hw, input_hw
    return row(f"preprocess {fw}x{fh} -> {iw}x{ih} letterbox f32", t_ref, t_new)


def decode_case(max_det: int, reps: int, warmup: int, anchors: int = 8400, classes: int = 80,
                candidates: int = 1000) -> str:
    rng = np.random.default_rng(1)
    pred = np.empty((1, 4 + classes, anchors), np.float32)
    pred[0, 4:] = rng.random((classes, anchors), dtype=np.float32) * 0.2   # below conf
    idx = rng.choice(anchors, candidates, replace=False)
    pred[0, 4 + rng.integers(0, classes, candidates), idx] = rng.uniform(0.25, 1.0, candidates)
    centres = rng.uniform(0, 640, (40, 2))
    c = centres[rng.integers(0, 40, anchors)] + rng.normal(0, 20, (anchors, 2))
    wh = rng.uniform(8, 200, (anchors, 2))
    pred[0, :2], pred[0, 2:4] = np.clip(c, wh / 2, 640 - wh / 2).T, wh.T
    labels = tuple(str(i) for i in range(classes))
    transform = plan_transform((1080, 1920), (640, 640), "letterbox")
    ref = YoloV8Decoder(labels, 0, 0.25, 0.45, max_det)
    new = YoloV8Kernel(labels, 0, 0.25, 0.45, max_det, anchors=anchors)
    a, b = ref([pred], transform), new([pred], transform)
    same = len(a) == len(b) and np.array_equal(a.boxes, b.boxes)
    note = "identical" if same else f"{len(a)} vs {len(b)} kept"
    t_ref, t_new = interleaved(lambda: ref([pred], transform), lambda: new([pred], transform),
                               reps, warmup)
    return row(f"decode+NMS 8400x80, {candidates} cand, max_det={max_det} ({note})",
               t_ref, t_new)


def side_by_side_args(doc: str) -> argparse.Namespace:
    """--reps, --warmup and --cv-threads; numba on one thread, OpenCV on --cv-threads."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--cv-threads", type=int, default=1)
    args = ap.parse_args()
    numba.set_num_threads(1)
    cv2.setNumThreads(args.cv_threads)
    return args


def main() -> None:
    args = side_by_side_args(__doc__)
    print(f"numba {numba.__version__} (1 thread), OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), numpy {np.__version__}; {args.reps} reps, "
          f"kernels from cache: preprocess {fused.kernels_from_cache()}, "
          f"postprocess {kernels.kernels_from_cache()}")
    print(f"{'case (ms)':<44} {'ref med':>8} {'ref p99':>8} {'new med':>8} {'new p99':>8} "
          f"{'speed-up':>8}")
    for frame_hw, input_hw in [((1080, 1920), (640, 640)), ((360, 640), (320, 320)),
                               ((720, 1280), (640, 640)), ((1080, 1920), (512, 512))]:
        print(preprocess_case(frame_hw, input_hw, args.reps, args.warmup), flush=True)
    for max_det in (100, 1000):
        print(decode_case(max_det, args.reps, args.warmup), flush=True)


if __name__ == "__main__":
    main()
