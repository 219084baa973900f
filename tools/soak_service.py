"""Soak `edgert run` as the service runs it: the demo clip looping at full speed, RSS and open
file descriptors of both processes (the loop and the sender) sampled, and 20 SIGHUP reloads
(alternately the rules, and the decoder's threshold: a new model loaded and warmed beside the
running one) with the longest frame in the 5 s after each against the median.

    PYTHONPATH=. python3 tools/soak_service.py --minutes 60      # the hour
    PYTHONPATH=. python3 tools/soak_service.py --minutes 5       # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = """
device_id = "soak"
[source]
url = "file:{clip}"
mode = "every"        # every frame, as fast as the loop asks: full speed
loop = true
[model]
path = "{repo}/models/demo/conveyor_det.onnx"
family = "yolov8"
labels = "{repo}/models/demo/labels.txt"
conf = {conf}
[model.input]
color = "rgb"
scale = 0.00392156862745098
[runtime]
budget_ms = 100
# A looping file at full speed never waits for a frame: at SCHED_FIFO the loop and its
# onnxruntime pool would take every core from the rest of the board for the whole hour.
loop_priority = "normal"
metrics_interval_s = 5
[fail_safe]
action = "stop"
[service]
metrics_listen = "127.0.0.1:{port}"
{rules}
[[outputs]]
type = "jsonl"
path = "{out}"
flush_every = 50
"""
RULES = ("[[zones]]\nname = \"reject\"\npolygon = [[0.55, 0.0], [0.80, 0.0], [0.80, 1.0], "
         "[0.55, 1.0]]\nanchor = \"center\"\n[[rules]]\nname = \"d\"\nlabels = [\"defect\"]\n"
         "zone = \"reject\"\nmin_score = {score}\naction = \"reject\"\n")


def sample(pid: int) -> tuple[int, int]:
    """RSS (KiB) and open descriptors of one process."""
    rss = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in text]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds before the baseline")
    ap.add_argument("--reloads", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgert-soak-"))
    cfg, out = tmp / "soak.toml", tmp / "decisions.jsonl"
    text = lambda score, conf=0.4: CONFIG.format(   # noqa: E731
        clip=REPO / "device_configs/demo/conveyor.mp4", repo=REPO, port=9199, out=out,
        rules=RULES.format(score=score), conf=conf)
    cfg.write_text(text(0.5))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "stderr.txt", "w"))
    while not out.exists() or out.stat().st_size == 0:
        if proc.poll() is not None:
            print((tmp / "stderr.txt").read_text(), file=sys.stderr)
            return 1
        time.sleep(0.2)
    start = time.monotonic()
    end = start + args.minutes * 60
    sender = children(proc.pid)[0]
    samples: list[tuple[float, int, int, int, int]] = []
    reload_at: list[float] = []
    rss_at: list[int] = []   # the loop's RSS (KiB) just before each reload
    reload_every = (args.minutes * 60 - args.warmup) / (args.reloads + 1)
    next_reload = start + args.warmup + reload_every
    while time.monotonic() < end and proc.poll() is None:
        (lr, lf), (sr, sf) = sample(proc.pid), sample(sender)
        samples.append((time.monotonic() - start, lr, lf, sr, sf))
        if len(reload_at) < args.reloads and time.monotonic() >= next_reload:
            n = len(reload_at)   # rules, model, rules, model …
            cfg.write_text(text(0.5 + 0.1 * (n // 2 % 2), 0.4 + 0.05 * ((n + 1) // 2 % 2)))
            reload_at.append(time.time())
            rss_at.append(lr)
            proc.send_signal(signal.SIGHUP)
            next_reload += reload_every
        time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    recs = [json.loads(ln) for ln in out.read_text().splitlines() if ln.endswith("}")]
    every = [r for r in recs if r.get("schema") == "edgert.decision/1"]
    recs = [r for r in every if r["status"] == "ok"]
    totals = [r["latency_ms"]["total"] for r in recs]
    around, missed, control = [], 0, []
    for t in reload_at:   # every frame decided in the 5 s after each SIGHUP …
        around.extend(r["latency_ms"]["total"] for r in recs if t <= r["decided_at"] < t + 5)
        missed += sum(1 for r in every if r["status"] != "ok" and t <= r["decided_at"] < t + 5)
        c = t - reload_every / 2   # … and, to compare, in 5 s halfway between two reloads
        control.extend(r["latency_ms"]["total"] for r in recs if c <= r["decided_at"] < c + 5)
    base = [s for s in samples if s[0] >= args.warmup]
    first, last = base[0], base[-1]
    report = {
        "minutes": args.minutes, "exit": code, "records_ok": len(totals),
        "fps": round(len(totals) / (samples[-1][0] or 1), 1),
        "loop_rss_kib": {"after_warmup": first[1], "end": last[1], "growth": last[1] - first[1],
                         "max": max(s[1] for s in base)},
        "loop_fds": {"after_warmup": first[2], "end": last[2], "max": max(s[2] for s in base)},
        "sender_rss_kib": {"after_warmup": first[3], "end": last[3], "growth": last[3] - first[3],
                           "max": max(s[3] for s in base)},
        "sender_fds": {"after_warmup": first[4], "end": last[4], "max": max(s[4] for s in base)},
        "reloads": len(reload_at),
        "reloaded": (tmp / "stderr.txt").read_text().count("reloaded "),
        "frame_total_ms": {"median": round(statistics.median(totals), 3),
                           "p99": round(sorted(totals)[int(len(totals) * 0.99)], 3),
                           "max": round(max(totals), 3)},
        "after_reload_ms": {"max": round(max(around), 3) if around else None,
                            "median": round(statistics.median(around), 3) if around else None,
                            "not_ok": missed},
        "between_reloads_ms": {"max": round(max(control), 3) if control else None,
                               "median": round(statistics.median(control), 3) if control else None},
        "loop_rss_kib_at_reloads": rss_at,
        "not_ok": len(every) - len(recs),
        "folder": str(tmp),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
