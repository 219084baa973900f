"""SIGHUP (systemctl reload): a good config's rules take effect at a frame boundary; a bad one
is refused with a log line and STATUS=, and the old one keeps running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, write_config
from onnx_models import one_box_pred, yolo_constant
from test_service_notify import Notify

CONFIG = """
device_id = "reload-test"
[source]
url = "pattern:"
fps = 30
[model]
path = "model.onnx"
[runtime]
budget_ms = 500
[fail_safe]
action = "stop"
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""
RULE = """
[[rules]]
name = "any-defect"
labels = ["defect"]
action = "reject"
"""


def actions(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(ln)["action"] for ln in path.read_text().splitlines()
            if ln.endswith("}") and '"edgert.decision/1"' in ln]


def wait(cond, timeout: float, what: str) -> None:   # noqa: ANN001
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def test_sighup_applies_good_rules_and_refuses_a_bad_config(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "model.onnx", one_box_pred(),
                  metadata={"names": "{0: 'part', 1: 'defect'}"})
    cfg = write_config(tmp_path / "device.toml", CONFIG)
    notify = Notify(str(tmp_path / "notify.sock"))
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=notify.address)
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=err)
    out = tmp_path / "out.jsonl"
    try:
        notify.wait(lambda: notify.count("READY=1") == 1, 120, "READY=1")
        wait(lambda: len(actions(out)) >= 5, 30, "first records")
        assert set(actions(out)) == {"none"}

        write_config(cfg, CONFIG + RULE)
        proc.send_signal(signal.SIGHUP)
        wait(lambda: "reject" in actions(out), 30, "the new rule to act")
        seen = actions(out)
        first = seen.index("reject")
        assert set(seen[first:]) == {"reject"}   # switched at one frame, never back

        write_config(cfg, CONFIG + RULE + "\n[[rules]]\nname = 'x'\n")   # action missing
        proc.send_signal(signal.SIGHUP)
        notify.wait(lambda: any(m.startswith("STATUS=reload rejected") for _, m in notify.got),
                    30, "STATUS= for the rejected reload")
        n = len(actions(out))
        wait(lambda: len(actions(out)) > n + 5, 30, "records after the rejected reload")
        assert set(actions(out)[first:]) == {"reject"}   # the old (good) rules still run
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
        notify.sock.close()
    log = (tmp_path / "stderr.txt").read_text()
    assert "reloaded" in log
    assert "reload rejected, the running config stays:" in log and "rules[1].action" in log


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for ln in path.read_text().splitlines():
        if ln.endswith("}"):
            out.append(json.loads(ln))
    return out


def decisions(path: Path) -> list[dict]:
    return [r for r in records(path) if r["schema"] == "edgert.decision/1"]


class Run:
    """`edgert run` on a config in tmp_path, with a notify socket to read STATUS= from."""

    def __init__(self, tmp_path: Path, cfg: Path) -> None:
        self.notify = Notify(str(tmp_path / "notify.sock"))
        env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=self.notify.address)
        self.err = open(tmp_path / "stderr.txt", "w")
        self.log = tmp_path / "stderr.txt"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)],
                                     cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        self.notify.wait(lambda: self.notify.count("READY=1") == 1, 120, "READY=1")

    def reload(self, status: str) -> None:
        """SIGHUP, then until STATUS= says `status` (reloaded / reload rejected) once more."""
        n = sum(m.startswith(f"STATUS={status}") for _, m in self.notify.got)
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait(lambda: sum(m.startswith(f"STATUS={status}")
                                     for _, m in self.notify.got) > n, 120, status)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        self.notify.sock.close()


def boxes_from(recs: list[dict], box: list[float]) -> int:
    """The index of the first record whose detection has `box` (all after it must too)."""
    for i, r in enumerate(recs):
        if r["detections"] and r["detections"][0]["box"] == box:
            return i
    raise AssertionError(f"no record with box {box}")


def test_sighup_loads_a_new_model_thresholds_and_outputs_beside_the_old(tmp_path: Path) -> None:
    # Two models whose one confident box differs: which one decided shows in every record.
    yolo_constant(tmp_path / "model.onnx", one_box_pred(), metadata={"names": "{0: 'part', 1: 'defect'}"})
    yolo_constant(tmp_path / "model2.onnx", one_box_pred(box=(16, 16, 8, 8)),
                  metadata={"names": "{0: 'part', 1: 'defect'}"})
    cfg = write_config(tmp_path / "device.toml", CONFIG + RULE)
    run = Run(tmp_path, cfg)
    out, out2 = tmp_path / "out.jsonl", tmp_path / "out2.jsonl"
    try:
        wait(lambda: len(decisions(out)) >= 5, 60, "first records")
        assert {r["action"] for r in decisions(out)} == {"reject"}
        first_box = decisions(out)[0]["detections"][0]["box"]

        # A decoder threshold: the box (score 0.9) falls below conf, so the rule stops.
        write_config(cfg, CONFIG.replace("[model]", "[model]\nconf = 0.95") + RULE)
        run.reload("reloaded")
        n = len(decisions(out))
        wait(lambda: len(decisions(out)) > n + 5, 60, "records after the threshold")
        acts = [r["action"] for r in decisions(out)]
        assert acts[-1] == "none" and "reject" not in acts[acts.index("none"):]

        # Another model file, loaded and warmed beside the running one.
        write_config(cfg, CONFIG.replace("model.onnx", "model2.onnx") + RULE)
        run.reload("reloaded")
        n = len(decisions(out))
        wait(lambda: len(decisions(out)) > n + 5, 60, "records after the new model")
        recs = decisions(out)
        new_box = recs[-1]["detections"][0]["box"]
        assert new_box != first_box
        switched = boxes_from(recs, new_box)
        assert all(r["detections"][0]["box"] == new_box for r in recs[switched:])
        assert all(r["action"] == "reject" for r in recs[switched:])

        # An output added: it gets records from the switch on, the first one loses none.
        two = CONFIG.replace("model.onnx", "model2.onnx") + RULE + \
            '\n[[outputs]]\ntype = "jsonl"\npath = "out2.jsonl"\n'
        write_config(cfg, two)
        run.reload("reloaded")
        wait(lambda: len(decisions(out2)) >= 5, 60, "records on the added output")

        # An output that cannot open: refused whole, both outputs go on.
        bad = two + '\n[[outputs]]\ntype = "serial"\nport = "/dev/ttyEDGERT-none"\n' \
            'on_missing = "fail"\n'
        write_config(cfg, bad.replace("budget_ms = 500", "budget_ms = 400"))
        run.reload("reload rejected")
        n, n2 = len(decisions(out)), len(decisions(out2))
        wait(lambda: len(decisions(out)) > n + 5 and len(decisions(out2)) > n2 + 5, 60,
             "records on both outputs after the rejected reload")
        assert decisions(out)[-1]["deadline_ms"] == 500   # the budget of the refused config not in force
        log = run.stop()
    finally:
        run.close()
    recs, recs2 = decisions(out), decisions(out2)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))   # no gap over 4 reloads
    assert [r["seq"] for r in recs2] == list(range(recs2[0]["seq"], recs[-1]["seq"] + 1))
    assert {r["status"] for r in recs} == {"ok"}   # no frame missed its deadline for a reload
    assert "ttyEDGERT-none" in log and "reload rejected, the running config stays" in log
    assert log.count("reloaded ") == 3


def test_sighup_keeps_open_events_of_rules_that_stay(tmp_path: Path) -> None:
    yolo_constant(tmp_path / "model.onnx", one_box_pred(), metadata={"names": "{0: 'part', 1: 'defect'}"})
    rule = RULE + "update_s = 3600\n"
    cfg = write_config(tmp_path / "device.toml", CONFIG + rule)
    run = Run(tmp_path, cfg)
    out = tmp_path / "out.jsonl"
    try:
        wait(lambda: any(r["schema"] == "edgert.event/1" for r in records(out)), 60, "new event")
        write_config(cfg, CONFIG + rule + "\n[[rules]]\nname = 'parts'\nlabels = ['part']\n"
                     "action = 'count'\n")
        run.reload("reloaded")
        n = len(decisions(out))
        wait(lambda: len(decisions(out)) > n + 5, 60, "records after the reload")
        run.stop()
    finally:
        run.close()
    events = [(r["rule"], r["kind"], r["event_id"]) for r in records(out)
              if r["schema"] == "edgert.event/1"]
    # One event across the reload: new at the start, end only when the run ends.
    assert events == [("any-defect", "new", events[0][2]), ("any-defect", "end", events[0][2])]


def test_adopt_keeps_tracks_and_rule_state_only_where_unchanged() -> None:
    from edgert.config.types import Rule, TrackerConfig, Zone
    from edgert.decide import RuleEngine
    from edgert.frame import Detections
    import numpy as np

    room = Zone("room", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), anchor="center")
    dwell = Rule("dwell", "alarm", labels=("person",), zone="room", dwell_s=0.5)
    other = Rule("other", "x", labels=("car",))
    box = np.array([[10, 10, 50, 90]], np.float32)

    def det() -> Detections:
        return Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int32), ("person", "car"))

    old = RuleEngine((dwell,), (room,), (), TrackerConfig(), "reference")
    for i in range(10):
        out = old.decide(det(), (100, 100), i * 0.1)
    assert out.action == "alarm" and [e.kind for e in old.events.take()] == []
    tid = int(out.track_ids[0])

    kept = RuleEngine((dwell, other), (room,), (), TrackerConfig(), "reference")
    kept.adopt(old, 0.9)
    out = kept.decide(det(), (100, 100), 1.0)
    assert kept.tracker is old.tracker and int(out.track_ids[0]) == tid
    assert out.action == "alarm" and out.events == ()   # still dwelling: no end, no new

    other_model = RuleEngine((dwell,), (room,), (), TrackerConfig(), "reference")
    other_model.adopt(kept, 1.0, keep_tracks=False)
    assert other_model.tracker is not kept.tracker
    ends = other_model.events.take()
    assert [(e.rule, e.kind) for e in ends] == [("dwell", "end")]   # its track ids mean nothing now


def test_a_changed_source_or_its_fail_safe_is_refused_as_a_restart() -> None:
    import dataclasses

    from edgert.config.types import (Config, FailSafeConfig, ModelConfig, RuntimeConfig,
                                     SourceConfig)
    from edgert.service.reload import RESTART, changed, restart_said

    cam = SourceConfig("pattern:", "pattern", "", id="cam1")
    one = Config(Path("d.toml"), "d", cam, ModelConfig(Path("m.onnx")), RuntimeConfig(),
                 FailSafeConfig("stop"))
    assert changed(one, dataclasses.replace(one), RESTART) == []
    moved = dataclasses.replace(one, source=dataclasses.replace(cam, fps=5.0))
    assert restart_said(changed(one, moved, RESTART), False) == "source"

    two = dataclasses.replace(one, sources=(cam, dataclasses.replace(cam, id="cam2")),
                              named_sources=True)
    halt = dataclasses.replace(two, sources=(cam, dataclasses.replace(cam, id="cam2",
                                                                       fail_safe="halt")))
    keys = changed(two, halt, RESTART)
    assert keys == ["sources"] and "fail_safe" in restart_said(keys, True)
    keys = changed(two, dataclasses.replace(two, sources=(cam,)), RESTART)   # one removed
    assert keys == ["sources"]
    keys = changed(one, dataclasses.replace(one, sources=(cam,), named_sources=True), RESTART)
    assert restart_said(keys, True) == "[source] replaced by [[sources]] or back"


SEVERAL = CONFIG.replace('device_id = "reload-test"', 'device_id = "reload-several"').replace(
    '[source]\nurl = "pattern:"\nfps = 30\n',
    '[[sources]]\nid = "a"\nurl = "pattern:"\nfps = 30\n'
    '[[sources]]\nid = "b"\nurl = "pattern:"\nfps = 30\n')


def by_source(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if path.exists():
        for ln in path.read_text().splitlines():
            if ln.endswith("}") and '"edgert.decision/1"' in ln:
                r = json.loads(ln)
                out.setdefault(r["source_id"], []).append(r)
    return out


def test_a_reload_gives_each_source_its_own_new_rules_and_refuses_a_new_source(
        tmp_path: Path) -> None:
    yolo_constant(tmp_path / "model.onnx", one_box_pred(),
                  metadata={"names": "{0: 'part', 1: 'defect'}"})
    cfg = write_config(tmp_path / "device.toml", SEVERAL)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=err)
    out = tmp_path / "out.jsonl"
    try:
        wait(lambda: all(len(by_source(out).get(s, ())) >= 5 for s in "ab"), 120,
             "records of both sources")
        write_config(cfg, SEVERAL + RULE + 'sources = ["b"]\n')
        proc.send_signal(signal.SIGHUP)
        wait(lambda: any(r["action"] == "reject" for r in by_source(out).get("b", ())), 30,
             "b's new rule to act")
        n = {s: len(v) for s, v in by_source(out).items()}
        wait(lambda: all(len(by_source(out)[s]) >= n[s] + 10 for s in "ab"), 30, "more records")
        write_config(cfg, SEVERAL + RULE + 'sources = ["b"]\n'
                     + '[[sources]]\nid = "c"\nurl = "pattern:"\n')
        proc.send_signal(signal.SIGHUP)
        wait(lambda: "reload rejected" in (tmp_path / "stderr.txt").read_text(), 30,
             "the added source to be refused")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        err.close()
    recs = by_source(out)
    assert set(recs) == {"a", "b"}
    assert {r["action"] for r in recs["a"]} == {"none"}   # a's rules did not change
    b = [r["action"] for r in recs["b"]]
    assert set(b[b.index("reject"):]) == {"reject"}      # b switched at one frame
    for s in "ab":
        assert [r["seq"] for r in recs[s]] == list(range(1, len(recs[s]) + 1))
        assert all(r["status"] == "ok" for r in recs[s])
    log = (tmp_path / "stderr.txt").read_text()
    assert "[[sources]]" in log.split("reload rejected", 1)[1].splitlines()[0]
    assert proc.returncode == 0 and "Traceback" not in log
