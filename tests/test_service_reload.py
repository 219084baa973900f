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
