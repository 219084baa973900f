"""Several cameras in one process: how many 30 fps sources edgert sustains, batching off, by deadline, fixed.

    python tools/bench_sources.py [--sources 1 2 4 8] [--modes off deadline fixed]
        [--seconds 20] [--budget-ms 33.3] [--hogs 2] [--max-batch 4] [--json PATH]

For each number of sources N and each `[runtime] batching` mode, one `edgert run` of the demo
model (as device_configs/demo.toml sets it, its rule and zone, `[fail_safe] action = "stop"`)
over N `pattern:` sources at 30 fps and the demo clip's size, `latest` frames, with
`budget_ms = --budget-ms` (one frame period by default), beside `--hogs` busy processes
(tools/soak_contention.py's), watched by tools/observe.py for `--seconds` of decisions (from
the first record on). The modes for one N run one after another, their order rotated per N so
no mode always goes first; `fixed` is the stream muxers' way (a full batch or the timeout,
whatever the deadlines), kept for comparison.

Per run: frames offered (every source's `frames`), records, ok, fail-safes (and their share of
records), frames replaced before they were decided (`dropped`), late `ok` as the observer saw
them and as edgert counted them, the decided-ok rate per source in the window (mean and the
slowest source), batches and frames batched, latency capture → receipt at the observer over
all records (p50, p99), and seq gaps. A mode sustains N sources when every source decides
≥ 29.7 ok frames/s (99 % of 30 fps), no `ok` arrives late and fail-safes stay under 0.1 % of
records. Prints a table and, per mode, the most sources it sustained; `--json` writes it all.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from observe import Observed, observe  # noqa: E402
from soak_contention import ENV, HOG, summary  # noqa: E402

DEMO = REPO / "device_configs" / "demo.toml"
FPS = 30.0
SIZE = [360, 640]          # the demo clip's frame size
SUSTAINED_FPS = 0.99 * FPS
MAX_FAIL_SAFE = 0.001      # of records


def _toml(name: str, table: dict, array: bool = False) -> list[str]:
    """One table (and its sub-tables) as TOML lines; JSON's scalars and arrays are TOML's."""
    lines = [f"[[{name}]]" if array else f"[{name}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += _toml(f"{name}.{k}", v)
    return lines


def config(n: int, mode: str, budget_ms: float, max_batch: int,
           loop_priority: str = "realtime") -> str:
    """The demo's model, rule and zone over `n` pattern sources, with absolute paths."""
    demo = tomllib.loads(DEMO.read_text())
    model = dict(demo["model"])
    for key in ("path", "labels"):
        model[key] = str((DEMO.parent / model[key]).resolve())
    runtime = dict(demo["runtime"], budget_ms=budget_ms, batching=mode, max_batch=max_batch,
                   loop_priority=loop_priority)
    lines = ['device_id = "bench-sources"']
    for i in range(1, n + 1):
        lines += _toml("sources", {"id": f"cam{i}", "url": "pattern:", "mode": "latest",
                                   "fps": FPS, "size": SIZE}, array=True)
    lines += _toml("model", model) + _toml("runtime", runtime)
    for key in ("zones", "rules"):
        for table in demo[key]:
            lines += _toml(key, table, array=True)
    lines += _toml("fail_safe", {"action": "stop"}) + _toml("outputs", {"type": "stdout"}, array=True)
    return "\n".join(lines) + "\n"


def watch(cfg: Path, seconds: float) -> Observed:
    """`edgert run cfg` until `seconds` have passed since its first record."""
    first: list[float] = []

    def enough(_record: dict, got: float) -> bool:
        first[:1] = first[:1] or [got]
        return got - first[0] >= seconds

    return observe([sys.executable, "-m", "edgert", "run", str(cfg)], seconds=seconds + 120,
                   env=ENV, cwd=str(cfg.parent), on_record=enough)


def seq_gaps(obs: Observed) -> int:
    """Seqs missing or repeated, each source's numbered from 1."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in obs.records:
        seqs[r.get("source_id", "")].append(r["seq"])
    return sum(max(s) - len(set(s)) + (len(s) - len(set(s))) for s in seqs.values())


def measure(n: int, mode: str, obs: Observed, seconds: float) -> dict:
    """One run's row: counts over the whole run (edgert's summary), ok rates over the window."""
    s = summary(obs.stderr)
    sources = s.get("sources") or ({"cam1": s["source"]} if "source" in s else {})
    t0 = obs.received[0] if obs.received else 0.0
    ok_in_window: dict[str, int] = {f"cam{i}": 0 for i in range(1, n + 1)}
    for r, got in zip(obs.records, obs.received):
        if r["status"] == "ok" and got - t0 < seconds:
            ok_in_window[r.get("source_id", "cam1")] += 1
    total_ms = np.array([(got - r["captured_at"]) * 1e3 for r, got in zip(obs.records, obs.received)])
    records = s.get("records", len(obs.records))
    fail_safe = s.get("fail_safe", sum(r["status"] == "fail_safe" for r in obs.records))
    batching = s.get("batching", {})
    rates = [k / seconds for k in ok_in_window.values()]
    row = {
        "sources": n, "mode": mode,
        "offered": sum(v.get("frames", 0) for v in sources.values()),
        "records": records, "ok": s.get("ok", sum(r["status"] == "ok" for r in obs.records)),
        "fail_safe": fail_safe,
        "fail_safe_pct": round(100 * fail_safe / records, 3) if records else None,
        "replaced": sum(v.get("dropped", 0) for v in sources.values()),
        "by_source": {k: {"frames": v.get("frames"), "dropped": v.get("dropped"),
                          "records": sum(r.get("source_id", "cam1") == k for r in obs.records),
                          "ok_fps": round(ok_in_window.get(k, 0) / seconds, 2)}
                      for k, v in sources.items()},
        "late_ok_observed": obs.late("ok"), "late_ok_edgert": s.get("late_ok"),
        "ok_fps_per_source": round(sum(rates) / n, 2), "ok_fps_slowest": round(min(rates), 2),
        "batches": batching.get("batches", 0), "frames_batched": batching.get("frames_batched", 0),
        "latency_ms": {"p50": round(float(np.percentile(total_ms, 50)), 2),
                       "p99": round(float(np.percentile(total_ms, 99)), 2)} if total_ms.size else {},
        "seq_gaps": seq_gaps(obs),
        "observer": {"records": len(obs.records), "realtime": obs.realtime,
                     # how late the late ones came, and what they were (to tell why)
                     "late_ok": [{"late_ms": round((got - r["captured_at"]
                                                    - r["deadline_ms"] / 1e3) * 1e3, 3),
                                  "latency_ms": r["latency_ms"], "source_id": r["source_id"],
                                  "seq": r["seq"], "received": got}
                                 for r, got in zip(obs.records, obs.received)
                                 if r["status"] == "ok"
                                 and got > r["captured_at"] + r["deadline_ms"] / 1e3]},
        "returncode": obs.returncode,
        "traceback": "Traceback" in obs.stderr,
        "edgert_summary": s,
    }
    row["sustained"] = bool(records and min(rates) >= SUSTAINED_FPS and row["late_ok_observed"] == 0
                            and fail_safe < MAX_FAIL_SAFE * records)
    if not s or row["traceback"] or obs.returncode:
        row["stderr_tail"] = obs.stderr.splitlines()[-15:]
    return row


COLUMNS = [("N", "sources"), ("mode", "mode"), ("offered", "offered"), ("records", "records"),
           ("ok", "ok"), ("fs", "fail_safe"), ("fs%", "fail_safe_pct"), ("replaced", "replaced"),
           ("late(obs)", "late_ok_observed"), ("late(ert)", "late_ok_edgert"),
           ("ok/s/src", "ok_fps_per_source"), ("slowest", "ok_fps_slowest"),
           ("batches", "batches"), ("batched", "frames_batched"), ("p50ms", "p50"),
           ("p99ms", "p99"), ("gaps", "seq_gaps"), ("sustained", "sustained")]


def table(rows: list[dict]) -> str:
    cells = [[h for h, _ in COLUMNS]]
    for r in rows:
        flat = {**r, **r["latency_ms"]}
        cells.append(["yes" if flat.get(k) is True else "no" if flat.get(k) is False
                      else "-" if flat.get(k) is None else str(flat[k]) for _, k in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                     for row in cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--modes", nargs="+", choices=("off", "deadline", "fixed"),
                    default=["off", "deadline", "fixed"])
    ap.add_argument("--seconds", type=float, default=20.0, help="of decisions per run")
    ap.add_argument("--budget-ms", type=float, default=33.3)
    ap.add_argument("--loop-priority", choices=("realtime", "normal"), default="realtime",
                    help="[runtime] loop_priority of the runs")
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the `finally`s below stop edgert and the hogs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    rows: list[dict] = []
    hogs: list[subprocess.Popen] = []
    try:
        for _ in range(args.hogs):
            hogs.append(subprocess.Popen([sys.executable, "-c", HOG]))
        with tempfile.TemporaryDirectory() as tmp:
            for i, n in enumerate(args.sources):
                turn = i % len(args.modes)
                for mode in args.modes[turn:] + args.modes[:turn]:
                    cfg = Path(tmp) / f"sources{n}-{mode}.toml"
                    cfg.write_text(config(n, mode, args.budget_ms, args.max_batch,
                                          args.loop_priority))
                    print(f"bench_sources: {n} sources, batching {mode} ...", file=sys.stderr, flush=True)
                    t = time.monotonic()
                    rows.append(measure(n, mode, watch(cfg, args.seconds), args.seconds))
                    print(f"bench_sources:   {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
                    if "stderr_tail" in rows[-1]:
                        print("\n".join(rows[-1]["stderr_tail"]), file=sys.stderr)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    most = {m: max((r["sources"] for r in rows if r["mode"] == m and r["sustained"]), default=0)
            for m in args.modes}
    print(table(rows))
    print("most sources sustained (every source >= %.1f ok/s, 0 late ok, fail-safes < %g %%): %s"
          % (SUSTAINED_FPS, 100 * MAX_FAIL_SAFE, ", ".join(f"{m} {k}" for m, k in most.items())))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
                                          "runs": rows,
                                          "most_sustained": most}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
