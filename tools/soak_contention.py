"""The promise under contention, observed from outside: edgert beside busy processes for a while.

    python tools/soak_contention.py [--minutes 20] [--hogs 2] [--factor 1.5] [--config CFG]

Starts `--hogs` busy-looping processes (ordinary priority, like the other work on a board),
measures the demo model's loaded median inference with a short `edgert run` beside them,
then runs the demo config with `budget_ms = factor × that median` and `latest` frames for
`--minutes`, watched by tools/observe.py (a separate process stamping each record on receipt).
Reports late `ok` records (target 0) and how far past their deadlines the fail-safes arrived
(targets: p99 ≤ 2 ms, max ≤ 5 ms), plus edgert's own summary. Exit 1 on any late `ok`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from observe import observe  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO))
HOG = "import os\nos.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))\nwhile True: pass"


def config_with(base: Path, budget_ms: float, folder: Path, loop_priority: str = "normal") -> Path:
    text = base.read_text()
    text = re.sub(r"(?m)^budget_ms\s*=.*$",
                  f'budget_ms = {budget_ms:.3f}\nloop_priority = "{loop_priority}"', text)
    # Paths in the demo config are relative to it: point them back at its folder.
    text = re.sub(r'(?m)^(url\s*=\s*"file:)([^/"][^"]*)"', lambda m: f'{m.group(1)}{base.parent / m.group(2)}"', text)
    text = re.sub(r'(?m)^((?:path|labels)\s*=\s*")([^/"][^"]*)"', lambda m: f'{m.group(1)}{base.parent / m.group(2)}"', text)
    text = re.sub(r'(?m)^loop\s*=.*$', "", text)
    text = text.replace('mode = "latest"', 'mode = "latest"\nloop = true', 1)
    out = folder / "device.toml"
    out.write_text(text)
    return out


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(stderr: str) -> dict:
    for line in stderr.splitlines():
        if "summary: " in line:
            return json.loads(line.split("summary: ", 1)[1])
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--factor", type=float, default=1.5)
    ap.add_argument("--config", type=Path, default=REPO / "device_configs" / "demo.toml")
    ap.add_argument("--loop-priority", choices=("normal", "realtime"), default="realtime")
    args = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            calib = config_with(args.config, 10_000.0, folder)
            obs = observe([sys.executable, "-m", "edgert", "run", str(calib)], seconds=30,
                          env=ENV, cwd=tmp)
            median = summary(obs.stderr)["latency_ms"]["infer"]["p50"]
            budget = args.factor * median
            cfg = config_with(args.config, budget, folder, args.loop_priority)
            hog_cpu0 = sum(cpu_s(h.pid) for h in hogs)
            t0 = time.monotonic()
            obs = observe([sys.executable, "-m", "edgert", "run", str(cfg)],
                          seconds=args.minutes * 60, env=ENV, cwd=tmp,
                          timeout=args.minutes * 60 + 120)
            hog_share = (sum(cpu_s(h.pid) for h in hogs) - hog_cpu0) / (time.monotonic() - t0)
            fs = [r for r in obs.records if r["status"] == "fail_safe"]
            late_fs = obs.lateness_ms("fail_safe")
            s = summary(obs.stderr)
            seqs = [r["seq"] for r in obs.records]
            report = {
                "minutes": args.minutes, "hogs": args.hogs, "loop_priority": args.loop_priority,
                "loaded_median_infer_ms": median, "budget_ms": round(budget, 3),
                "records": len(obs.records), "observer_realtime": obs.realtime,
                "seq_without_gaps": seqs == list(range(1, len(seqs) + 1)),
                "ok": {"n": sum(r["status"] == "ok" for r in obs.records),
                       "late": obs.late("ok"),
                       # How late the late ones came, as the observer saw them (0: none).
                       "late_by_ms": sorted(round(float(x), 3) for x in
                                            obs.lateness_ms("ok") if x > 0)[-5:]},
                "fail_safe": {"n": len(fs), "by_cause": {c: sum(r.get("cause") == c for r in fs)
                                                         for c in {r.get("cause") for r in fs}}},
                "fail_safe_past_deadline_ms": {
                    "p50": round(float(np.percentile(late_fs, 50)), 3),
                    "p99": round(float(np.percentile(late_fs, 99)), 3),
                    "max": round(float(late_fs.max()), 3)} if late_fs.size else {},
                "edgert_summary": {k: s.get(k) for k in ("records", "ok", "fail_safe", "late_ok",
                                                         "misses", "sender", "guard")},
                "missing_seqs": sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))[:20],
                # The latest fail-safes: the herald's own lateness (late_ms) against what the
                # observer saw, to tell a late herald from a slow way to the reader.
                "latest_fail_safes": sorted(
                    ({"seq": r["seq"], "cause": r.get("cause"), "stage": r.get("stage"),
                      "herald_late_ms": r.get("late_ms"),
                      "observed_late_ms": round((got - r["captured_at"]
                                                 - r["deadline_ms"] / 1e3) * 1e3, 3)}
                     for r, got in zip(obs.records, obs.received) if r["status"] != "ok"),
                    key=lambda x: -x["observed_late_ms"])[:8],
                # What the busy processes still got (cores' worth): the cost to other work.
                "hogs_cpu_cores": round(hog_share, 3),
                "returncode": obs.returncode,
            }
            print(json.dumps(report, indent=2))
            return 1 if obs.late("ok") else 0
    finally:
        for h in hogs:
            h.kill()
            h.wait()


if __name__ == "__main__":
    sys.exit(main())
