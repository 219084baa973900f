"""Motion gating in the loop (issue 15): `edgert replay` of the Intel video with and without
`[motion]`, side by side: CPU ms per decision (the replay process's user + system time), the
share of frames that reused the last inferred detections, and how far the decisions agree.

    PYTHONPATH=. python3 tools/bench_motion_loop.py          # needs ../shared/material
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from bench_secondary import CONFIG, MATERIAL  # noqa: E402  (tools/ is on sys.path)
# The secondary bench's YOLOX-nano on the Intel video, with a rule on the room instead.
ROOM = """
[[zones]]
name = "room"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
anchor = "center"
[[rules]]
name = "someone-in-room"
labels = ["person"]
min_score = 0.5
zone = "room"
min_off_s = 1.0
action = "occupied"
{motion}
"""


def replay(tmp: Path, name: str, extra: str, size: int | None = None) -> tuple[list[dict], float]:
    """`edgert replay` of the Intel video with `extra` config (and the model run at `size`):
    its records, and the CPU seconds it took."""
    video = MATERIAL / "videos/intel_one-by-one-person-detection.mp4"
    cfg = tmp / f"{name}.toml"
    text = CONFIG.format(video=video, models=MATERIAL / "models", budget=5000,
                         out=tmp / f"{name}.jsonl", secondary=ROOM.format(motion=extra))
    if size is not None:
        text = text.replace('align = "top_left"\n', f'align = "top_left"\nsize = [{size}, {size}]\n', 1)
    cfg.write_text(text)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "edgert", "replay", str(video), "--config", str(cfg),
                    "--out", str(tmp / name)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recs = [json.loads(ln) for ln in (tmp / name / "decisions.jsonl").read_text().splitlines()]
    return recs, cpu


def main() -> int:
    if not (MATERIAL / "README.md").is_file():
        print(f"the shared material is not at {MATERIAL}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        replay(tmp, "warm", "")   # kernel caches and the file in the page cache
        plain, cpu_plain = replay(tmp, "plain", "")
        gated, cpu_gated = replay(tmp, "gated", "[motion]\nenabled = true")
    dec = lambda rs: [r for r in rs if r["schema"] == "edgert.decision/1"]   # noqa: E731
    ev = lambda rs: [(r["rule"], r["kind"]) for r in rs if r["schema"] == "edgert.event/1"]  # noqa: E731
    p, g = dec(plain), dec(gated)
    agree = sum(a["action"] == b["action"] for a, b in zip(p, g))
    print(json.dumps({
        "decisions": len(p),
        "cpu_ms_per_decision": {"ungated": round(cpu_plain * 1e3 / len(p), 3),
                                "gated": round(cpu_gated * 1e3 / len(g), 3),
                                "gated_vs_ungated": round(cpu_gated / cpu_plain, 3)},
        "reused_share": round(sum(bool(r.get("reused")) for r in g) / len(g), 4),
        "action_agreement": round(agree / len(p), 4),
        "events": {"ungated": len(ev(plain)), "gated": len(ev(gated)),
                   "same_sequence": ev(plain) == ev(gated)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
