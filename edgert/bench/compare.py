"""Each contender in its own process, in alternating rounds close in time, so frames per second,
CPU per frame and peak RSS compare under the same load."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgert.errors import EdgertError, UsageError

INSTALL_ULTRALYTICS = ("--compare ultralytics needs the ultralytics package, which edgert never "
                       "requires; install it with: pip install ultralytics (on a CPU-only board, "
                       "pip install torch --index-url https://download.pytorch.org/whl/cpu first)")
COMPARE = ("naive", "ultralytics")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def contenders(compare: str, ahead: bool) -> list[str]:
    if compare not in COMPARE:
        raise UsageError(f"--compare {compare}: use one of {', '.join(COMPARE)}")
    if compare == "ultralytics" and not _installed("ultralytics"):
        raise UsageError(INSTALL_ULTRALYTICS)
    kinds = ["edgert"] + (["edgert-ahead"] if ahead else []) + ["naive"]
    return kinds + (["ultralytics"] if compare == "ultralytics" else [])


def _peer(kind: str, config: str, frames: int, warmup: int,
          hw: tuple[int, int]) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[2])   # edgert importable from a checkout too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-m", "edgert.bench.peer", kind, config,
                           "--frames", str(frames), "--warmup", str(warmup), "--imgsz", f"{hw[0]},{hw[1]}"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise EdgertError(f"bench: the {kind} contender failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(config: str, kinds: list[str], frames: int, hw: tuple[int, int], rounds: int = 2,
            warmup: int = 10) -> dict[str, Any]:
    """Medians over `rounds` of each contender's own run; the order flips every round."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            runs[kind].append(_peer(kind, config, frames, warmup, hw))
    keys = ("fps", "cpu_ms_per_frame", "peak_rss_mb", "startup_s")
    out: dict[str, Any] = {"rounds": rounds, "frames": frames, "contenders": {
        k: {**{key: statistics.median(x[key] for x in v) for key in keys},
            "fps_each": [x["fps"] for x in v], "notes": v[-1].get("notes", {})}
        for k, v in runs.items()}}
    base = out["contenders"]["edgert"]
    out["ratios"] = {k: {"fps": base["fps"] / c["fps"],
                         "cpu_ms_per_frame": base["cpu_ms_per_frame"] / c["cpu_ms_per_frame"],
                         "peak_rss": base["peak_rss_mb"] / c["peak_rss_mb"]}
                     for k, c in out["contenders"].items() if k != "edgert"}
    return out
