"""What the motion gate costs per frame, beside the OpenCV way, and what it saves on real video.

    python tools/bench_motion.py [--reps 300] [--cv-threads 1]

Per frame size, `MotionGate.changed` (block means straight from the frame, lighting taken out,
blocks counted) runs alternately with a cv2.resize(INTER_AREA) + cvtColor + absdiff + threshold
+ countNonZero baseline to the same grid, over a ring of 8 different frames (so no frame sits
warm in the cache), after a warm-up; medians and p99 are printed. Frames are the Intel video's,
scaled up once beforehand (random pixels when ../shared/material is absent). Then the gate, with
the defaults, goes through the Intel video as the loop would (infer when changed or due) and
the share of frames it would skip is printed, and again without forcing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_kernels import interleaved, row, side_by_side_args  # noqa: E402  (tools/ is on sys.path)

from edgert.config.types import MotionConfig  # noqa: E402
from edgert.preprocess import motion  # noqa: E402
from edgert.preprocess.motion import MotionGate  # noqa: E402

VIDEO = (Path(__file__).resolve().parent.parent.parent / "shared" / "material" / "videos"
         / "intel_one-by-one-person-detection.mp4")


def source_frames(count: int) -> list[np.ndarray]:
    """`count` frames spread over the video, or random ones without it."""
    if not VIDEO.is_file():
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (432, 768, 3), dtype=np.uint8) for _ in range(count)]
    cap = cv2.VideoCapture(str(VIDEO))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for i in np.linspace(0, total - 1, count).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, image = cap.read()
        if ok:
            frames.append(image)
    cap.release()
    return frames


def cost_case(frame_hw: tuple[int, int], base: list[np.ndarray], reps: int,
              warmup: int) -> list[str]:
    h, w = frame_hw
    ring = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in base]
    for f in ring:
        f.setflags(write=False)
    cfg = MotionConfig(enabled=True)
    gh, gw = cfg.grid
    threshold = int(cfg.pixel_threshold)
    gate = MotionGate(cfg, frame_hw)
    gate.warm_up()
    gate.inferred(ring[0], 0.0)
    prev = cv2.cvtColor(cv2.resize(ring[0], (gw, gh), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2GRAY)
    state = {"i": 0}

    def nxt() -> np.ndarray:
        state["i"] = (state["i"] + 1) % (2 * len(ring))
        return ring[state["i"] // 2]   # the baseline and the gate see the same frame

    def baseline() -> int:
        small = cv2.resize(nxt(), (gw, gh), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        moved = cv2.threshold(cv2.absdiff(grey, prev), threshold, 255, cv2.THRESH_BINARY)[1]
        return cv2.countNonZero(moved)

    t_cv, t_gate = interleaved(baseline, lambda: gate.changed(nxt()), reps, warmup)
    rows = [row(f"{w}x{h} -> {gw}x{gh}: changed()", t_cv, t_gate)]
    # The block means alone: what inferred() adds on a frame that was inferred.
    t_cv, t_ref = interleaved(baseline, lambda: gate.inferred(nxt(), 0.0), reps, warmup)
    return rows + [row(f"{w}x{h} -> {gw}x{gh}: inferred()", t_cv, t_ref)]


def skip_share(cfg: MotionConfig) -> str:
    if not VIDEO.is_file():
        return f"(no {VIDEO}: skip share not measured)"
    cap = cv2.VideoCapture(str(VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS)
    gate, n, changed, inferred = None, 0, 0, 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if gate is None:
            gate = MotionGate(cfg, image.shape[:2])
        media_s = n / fps
        c = gate.changed(image)
        if c or gate.due(media_s):
            gate.inferred(image, media_s)
            inferred += 1
        changed += c
        n += 1
    cap.release()
    return (f"force_every_s={cfg.force_every_s:g}: {n} frames at {fps:g} fps, changed "
            f"{changed / n:.1%}, inferred {inferred / n:.1%}, skipped {1 - inferred / n:.1%}")


def main() -> None:
    args = side_by_side_args(__doc__)
    base = source_frames(8)
    cfg = MotionConfig(enabled=True)
    MotionGate(cfg, (64, 64)).warm_up()
    print(f"numba {numba.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"numpy {np.__version__}; {args.reps} reps; kernels from cache: "
          f"{motion.kernels_from_cache()}; defaults: grid {list(cfg.grid)}, pixel_threshold "
          f"{cfg.pixel_threshold:g}, area_threshold {cfg.area_threshold:g}")
    print(f"{'per frame (ms)':<44} {'cv2 med':>8} {'cv2 p99':>8} {'gate med':>8} "
          f"{'gate p99':>8} {'cv2/gate':>8}")
    for frame_hw in [(1080, 1920), (720, 1280)]:
        print("\n".join(cost_case(frame_hw, base, args.reps, args.warmup)), flush=True)
    print("Intel video, as the loop would gate it:")
    for force in (cfg.force_every_s, 3600.0):
        print("  " + skip_share(MotionConfig(enabled=True, force_every_s=force)), flush=True)


if __name__ == "__main__":
    main()
