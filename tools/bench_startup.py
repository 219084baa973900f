"""Start-up to READY, as systemd sees it: from spawning `edgert run` to its READY=1 notification.

    python tools/bench_startup.py [--runs 5] [--config device_configs/demo.toml]

Binds a datagram socket as NOTIFY_SOCKET and times each start until READY=1 arrives, with a
cold kernel cache (a fresh EDGERT_CACHE_DIR: numba compiles) and a warm one (the same folder
again). Prints medians and every run as JSON. Targets: warm ≤ 1 s, cold ≤ 6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ready_after(config: Path, cache: Path, folder: Path) -> float:
    addr = str(folder / f"notify-{time.monotonic_ns()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(120)
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=addr, EDGERT_CACHE_DIR=str(cache))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(config), "--frames", "5"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            msg = sock.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                return time.monotonic() - t0
    finally:
        proc.wait(120)
        sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--config", type=Path, default=REPO / "device_configs" / "demo.toml")
    args = ap.parse_args()
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.runs):
            cache = folder / f"cache{i}"
            cold.append(ready_after(args.config, cache, folder))
            warm.append(ready_after(args.config, cache, folder))
    print(json.dumps({"cold_s": {"median": round(statistics.median(cold), 3), "runs": [round(x, 3) for x in cold]},
                      "warm_s": {"median": round(statistics.median(warm), 3), "runs": [round(x, 3) for x in warm]}},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
