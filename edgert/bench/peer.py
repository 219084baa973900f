"""One contender alone in its own process, so CPU per frame and peak RSS are its own:
`python -m edgert.bench.peer {edgert,edgert-ahead,naive,ultralytics} CONFIG --frames N`."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Callable, Iterator

KINDS = ("edgert", "edgert-ahead", "naive", "ultralytics")
NOTES: dict[str, str] = {}   # how a contender ran, where it had to differ from the usual


def _edgert(config: str, ahead: bool) -> Iterator[None]:
    from edgert.bench.setup import bench_config
    from edgert.publish import NullOutput
    from edgert.runtime import Runtime
    from edgert.source import decode_ahead, open_source

    cfg = bench_config(config)
    # Decoding ahead is replay's source (video files only); other kinds are read as usual.
    ahead = ahead and cfg.source.kind == "file"
    source = decode_ahead(cfg.source) if ahead else open_source(cfg.source)
    rt = Runtime.local(cfg, [NullOutput()], source=source)
    try:
        rt.source.start()
        first = rt.source.read(5.0)
        rt.warm_up(first.image, runs=5)
        while True:
            frame = rt.source.read(5.0)
            if frame is None:
                return
            rt.step(frame)
            yield
    finally:
        rt.close()


def _naive(config: str) -> Iterator[None]:
    from edgert.bench.setup import bench_config
    from edgert.bench.naive import NaiveLoop

    loop = NaiveLoop.open(bench_config(config))
    try:
        while True:
            loop.step()
            yield
    finally:
        loop.close()


def _torchvision_or_ultralytics_nms() -> str:
    """Ultralytics imports torchvision for video; a CPU-only torch next to a CUDA torchvision
    wheel cannot load its ops. Then Ultralytics' own pure-torch NMS (made to match
    torchvision's) stands in, under torchvision's name, and the report says so."""
    import types

    try:
        import torchvision  # noqa: F401
        return "torchvision"
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    from ultralytics.utils.nms import TorchNMS

    stub = types.ModuleType("torchvision")
    stub.ops = types.SimpleNamespace(nms=TorchNMS.nms)  # type: ignore[attr-defined]
    sys.modules["torchvision"] = stub
    return "ultralytics TorchNMS (torchvision's ops do not load with this torch)"


def _ultralytics(config: str, hw: tuple[int, int]) -> Iterator[None]:
    from edgert.bench.setup import bench_config
    from ultralytics import YOLO

    NOTES["nms"] = _torchvision_or_ultralytics_nms()

    cfg = bench_config(config)   # nothing more of edgert in this process: its RSS is theirs
    model = YOLO(str(cfg.model.path), task="detect")
    for _ in model.predict(source=cfg.source.target, stream=True, device="cpu",
                           imgsz=list(hw), conf=cfg.model.conf,
                           iou=cfg.model.iou, max_det=cfg.model.max_det, verbose=False):
        yield


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM): ru_maxrss would carry the parent's over the exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(frames: Iterator[None], n: int, warmup: int) -> dict[str, float]:
    """Wall and process CPU over `n` frames after `warmup` (start-up and first runs excluded)."""
    start = time.perf_counter()
    for _ in range(warmup):
        next(frames)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for _ in frames:
        done += 1
        if done >= n:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    frames.close()
    return {"frames": done, "wall_s": wall, "fps": done / wall,
            "cpu_ms_per_frame": cpu * 1e3 / max(done, 1), "startup_s": t0 - start,
            "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgert.bench.peer", description=__doc__)
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("config")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--imgsz", default="640,640", metavar="H,W", help="the model's input size")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    h, w = (int(v) for v in args.imgsz.split(","))
    hw = (h, w)
    runners: dict[str, Callable[[], Iterator[None]]] = {
        "edgert": lambda: _edgert(args.config, False),
        "edgert-ahead": lambda: _edgert(args.config, True),
        "naive": lambda: _naive(args.config),
        "ultralytics": lambda: _ultralytics(args.config, hw)}
    result = measure(runners[args.kind](), args.frames, args.warmup)
    print(json.dumps({"kind": args.kind, **result, "notes": NOTES}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
