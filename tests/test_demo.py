"""The embedded demo end to end: the README's first command, and decisions checked against truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DEMO_CLIP, DEMO_CONFIG, DEMO_MODEL, DEMO_TRUTH, edgert

ZONE_X = (0.55, 0.80)   # device_configs/demo.toml: the reject zone spans the belt's height
K, N = 2, 3             # its debounce


def records(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def truth() -> list[dict]:
    return [json.loads(ln) for ln in DEMO_TRUTH.read_text().splitlines() if ln.strip()]


def in_zone(obj: dict, width: int = 640) -> bool:
    x1, _, x2, _ = obj["box"]
    return ZONE_X[0] * width <= (x1 + x2) / 2 <= ZONE_X[1] * width


@pytest.fixture(scope="module")
def every_record(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The demo config, every frame in order and a generous budget: a deterministic run."""
    text = DEMO_CONFIG.read_text()
    text = text.replace('url = "file:demo/conveyor.mp4"', f'url = "file:{DEMO_CLIP}"')
    text = text.replace('mode = "latest"', 'mode = "every"')
    text = text.replace('path = "../models/demo/conveyor_det.onnx"', f'path = "{DEMO_MODEL}"')
    text = text.replace('labels = "../models/demo/labels.txt"',
                        f'labels = "{DEMO_MODEL.parent / "labels.txt"}"')
    text = text.replace("budget_ms = 100", "budget_ms = 10000")
    cfg = tmp_path_factory.mktemp("demo") / "demo_every.toml"
    cfg.write_text(text)
    proc = edgert("run", str(cfg), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return records(proc.stdout)


@pytest.fixture(scope="module")
def every_frame(every_record: list[dict]) -> list[dict]:
    return [r for r in every_record if r["schema"] == "edgert.decision/1"]


def test_each_defective_part_gives_one_reject_event_in_the_zone(every_record) -> None:
    """Events against the truth: one `new` per defective part, while it is in the gate zone
    (a frame of slack at the zone's edges), and none for a good part; each one ends."""
    events = [r for r in every_record if r["schema"] == "edgert.event/1"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    new = [e for e in events if e["kind"] == "new"]
    assert {e["rule"] for e in events} == {"defect-at-pusher"}
    in_zone_frames: dict[int, set[int]] = {}
    for f in truth():
        for o in f["objects"]:
            if o["label"] == "defect" and in_zone(o):
                in_zone_frames.setdefault(o["id"], set()).update(
                    range(f["frame_id"] - 1, f["frame_id"] + 2))
    assert len(in_zone_frames) >= 5
    hits = {pid: [e["frame_id"] for e in new if e["frame_id"] in frames]
            for pid, frames in in_zone_frames.items()}
    assert all(len(h) == 1 for h in hits.values()), hits
    assert len(new) == len(in_zone_frames), [e["frame_id"] for e in new]
    ends = {e["event_id"] for e in events if e["kind"] == "end"}
    assert {e["event_id"] for e in new} == ends


def test_demo_config_runs_as_the_readme_says() -> None:
    proc = edgert("run", str(DEMO_CONFIG), "--frames", "20")
    assert proc.returncode == 0, proc.stderr
    out = [r for r in records(proc.stdout) if r["schema"] == "edgert.decision/1"]
    assert len(out) == 20 and all(r["device_id"] == "demo-conveyor" for r in out)
    assert {r["action"] for r in out} <= {"none", "reject", "stop"}


def test_every_defective_part_is_rejected_in_the_zone_and_no_good_part(every_frame) -> None:
    gt = truth()
    assert [r["frame_id"] for r in every_frame] == list(range(len(gt)))
    assert all(r["status"] == "ok" for r in every_frame)
    action = [r["action"] for r in every_frame]
    defect_in_zone = [any(o["label"] == "defect" and in_zone(o) for o in f["objects"]) for f in gt]
    # Every defective part: rejected on all its in-zone frames but the debounce's first one
    # and one frame of slack at each zone edge, where a box centre may land either side.
    parts: dict[int, list[int]] = {}
    for f in gt:
        for o in f["objects"]:
            if o["label"] == "defect" and in_zone(o):
                parts.setdefault(o["id"], []).append(f["frame_id"])
    assert len(parts) >= 5, "the clip should show several defective parts in the zone"
    for pid, frames in parts.items():
        inner = frames[K:-1]
        missed = [i for i in inner if action[i] != "reject"]
        assert not missed, f"defective part {pid} not rejected on frames {missed}"
    # No good part is rejected: where no defect is in or next to the zone, the action is none.
    near = [any(defect_in_zone[j] for j in range(max(0, i - N), min(len(gt), i + 2)))
            for i in range(len(gt))]
    false_rejects = [i for i, a in enumerate(action) if a == "reject" and not near[i]]
    assert not false_rejects, f"rejected without a defect in the zone on frames {false_rejects}"
    good_only = sum(1 for i in range(len(gt)) if not near[i]
                    and any(o["label"] == "part" and in_zone(o) for o in gt[i]["objects"]))
    assert good_only >= 20, "the clip should show good parts passing the zone"


def test_detections_match_the_renderers_boxes(every_frame) -> None:
    gt = truth()
    hits = total = 0
    for rec, f in zip(every_frame, gt):
        for o in f["objects"]:
            x1, y1, x2, y2 = o["box"]
            if x1 <= 1 or x2 >= 639:      # cut by the frame edge: the model may see it either way
                continue
            total += 1
            for d in rec["detections"]:
                bx1, by1, bx2, by2 = d["box"]
                iw = max(0.0, min(x2, bx2) - max(x1, bx1))
                ih = max(0.0, min(y2, by2) - max(y1, by1))
                inter = iw * ih
                union = (x2 - x1) * (y2 - y1) + (bx2 - bx1) * (by2 - by1) - inter
                if d["label"] == o["label"] and inter / union >= 0.5:
                    hits += 1
                    break
    assert total > 200 and hits / total >= 0.9, (hits, total)


def test_ready_means_ready_the_first_record_is_a_fresh_decision() -> None:
    """Warm-up runs on the source's real first frame before READY=1, and nothing grabbed
    before it is decided: over repeated starts the first record is an `ok` on a frame
    captured after READY (it was a stale fail-safe in 2 of 14 cold starts)."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from conftest import REPO

    demo = DEMO_CONFIG.read_text().replace("budget_ms = 100", "budget_ms = 30")
    demo = demo.replace('"file:demo/', f'"file:{DEMO_CONFIG.parent}/demo/')
    demo = demo.replace('"../models/', f'"{DEMO_CONFIG.parent.parent}/models/')
    for _ in range(4):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "demo.toml")
            with open(cfg, "w") as f:
                f.write(demo)   # 30 ms: a frame grabbed during warm-up would be stale by now
            addr = os.path.join(tmp, "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(addr)
            sock.settimeout(120)
            env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=addr)
            proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", cfg,
                                     "--frames", "3"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            while "READY=1" not in sock.recv(4096).decode().split("\n"):
                pass
            ready_wall = time.time()
            out, err = proc.communicate(timeout=120)
            sock.close()
        assert proc.returncode == 0, err
        first = json.loads(out.splitlines()[0])
        assert first["status"] == "ok", first
        # Captured no earlier than the moment READY went out (the notification's own trip
        # through the socket, and this process's own scheduling, are the slack).
        assert first["captured_at"] > ready_wall - 0.25, (first["captured_at"], ready_wall)
