"""The whole loop with numba kernels vs the OpenCV/numpy twins, frame by frame in one run.

A kernel that wins alone can lose in the loop (two cores shared with onnxruntime's pool), so
this measures what matters: the same frames through two complete runtimes, interleaved.

    python tools/bench_loop.py device_configs/demo.toml --frames 300
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from edgert.publish import NullOutput
from edgert.config import load_config
from edgert.runtime import Runtime
from edgert.source import open_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    cfg = load_config(args.config)
    src_cfg = dataclasses.replace(cfg.source, mode="every", loop=cfg.source.kind in ("file", "images"))
    runtimes = {}
    for kernels in ("numba", "reference"):
        c = dataclasses.replace(cfg, source=src_cfg,
                                runtime=dataclasses.replace(cfg.runtime, kernels=kernels))
        rt = Runtime.local(c, [NullOutput()], source=open_source(src_cfg))
        runtimes[kernels] = rt
    source = open_source(src_cfg)
    source.start()
    first = source.read(5.0)
    for rt in runtimes.values():
        rt.warm_up(first.image, runs=5)
    loop = {k: [] for k in runtimes}
    infer = {k: [] for k in runtimes}
    done = 0
    while done < args.frames:
        frame = source.read(1.0)
        if frame is None:
            if source.ended:
                break
            continue
        order = list(runtimes) if done % 2 == 0 else list(runtimes)[::-1]
        for k in order:
            rt = runtimes[k]
            t0 = time.perf_counter()
            rt.step(frame)
            loop[k].append((time.perf_counter() - t0) * 1e3)
            infer[k].append(rt.pipeline.runner.last_run_s * 1e3)
        done += 1
    source.close()
    print(f"{done} frames of {cfg.model.path.name}, each through both runtimes (order alternating)")
    for k in runtimes:
        over = np.asarray(loop[k]) - np.asarray(infer[k])
        print(f"  {k:<9} loop p50 {np.median(loop[k]):7.3f} ms  p99 {np.percentile(loop[k], 99):7.3f}"
              f"   overhead (loop − session.run) p50 {np.median(over):6.3f} ms  p99 "
              f"{np.percentile(over, 99):6.3f}   fps {1e3 / np.median(loop[k]):6.1f}")
    ratio = np.median(loop["reference"]) / np.median(loop["numba"])
    print(f"  whole loop, reference / numba median: {ratio:.3f}x")
    for rt in runtimes.values():
        rt.close()


if __name__ == "__main__":
    main()
