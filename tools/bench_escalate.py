"""Escalation (issue 15), side by side on the Intel video with `edgert replay`: YOLOX-nano run
at 320x320 (light) escalating to YOLOX-nano at its own 416x416 (heavy) when a person scores
inside the band, against each alone: the heavy model's share of frames, CPU ms per decision,
and agreement with the heavy model alone (the room rule's action; the number of persons).

    PYTHONPATH=. python3 tools/bench_escalate.py [--band 0.3 0.6]    # needs ../shared/material
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from bench_motion_loop import ROOM, replay  # noqa: E402  (tools/ is on sys.path)
from bench_secondary import MATERIAL  # noqa: E402

ESCALATE = """
[model.escalate]
path = "{models}/yolox_nano_coco_416.onnx"
family = "yolox"
labels = "{models}/coco80.names"
conf = 0.3
band = [{lo}, {hi}]
on = ["person"]
[model.escalate.input]
align = "top_left"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--band", type=float, nargs=2, default=(0.3, 0.6))
    args = ap.parse_args()
    if not (MATERIAL / "README.md").is_file():
        print(f"the shared material is not at {MATERIAL}", file=sys.stderr)
        return 2
    import tempfile
    esc = ESCALATE.format(models=MATERIAL / "models", lo=args.band[0], hi=args.band[1])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        replay(tmp, "warm", "")
        heavy, cpu_heavy = replay(tmp, "heavy", "")
        light, cpu_light = replay(tmp, "light", "", size=320)
        mixed, cpu_mixed = replay(tmp, "mixed", esc, size=320)
    dec = lambda rs: [r for r in rs if r["schema"] == "edgert.decision/1"]   # noqa: E731
    h, lt, m = dec(heavy), dec(light), dec(mixed)
    persons = lambda r: sum(d["label"] == "person" for d in r["detections"])   # noqa: E731

    def agreement(rs: list[dict]) -> dict[str, float]:
        return {"action": round(sum(a["action"] == b["action"] for a, b in zip(rs, h)) / len(h), 4),
                "persons": round(sum(persons(a) == persons(b) for a, b in zip(rs, h)) / len(h), 4)}

    n = len(h)
    print(json.dumps({
        "decisions": n, "band": list(args.band),
        "heavy_share": round(sum(bool(r.get("escalated")) for r in m) / len(m), 4),
        "cpu_ms_per_decision": {"light": round(cpu_light * 1e3 / n, 3),
                                "escalating": round(cpu_mixed * 1e3 / n, 3),
                                "heavy": round(cpu_heavy * 1e3 / n, 3)},
        "agreement_with_heavy": {"light": agreement(lt), "escalating": agreement(m)},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
