"""The service seen from outside: systemd's notify protocol on a real datagram socket, and the
Prometheus endpoint over HTTP, while the loop runs and while it is stalled on purpose."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, write_config
from onnx_models import one_box_pred, yolo_constant
from test_mqtt import free_port

# A user decoder (edgert/postprocess/user.py) that blocks while a flag file exists: the loop
# stalls inside a stage, as a hung driver or a deadlocked decoder would.
DECODER = """
import os, time
import numpy as np

def decode(outputs, ctx):
    while os.path.exists(os.environ["EDGERT_TEST_STALL"]):
        time.sleep(0.02)
    return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
"""

CONFIG = """
device_id = "notify-test"
[source]
url = "pattern:"
fps = 30
[model]
path = "model.onnx"
family = "stall_decoder:decode"
[runtime]
budget_ms = 200
metrics_interval_s = 1
[fail_safe]
action = "stop"
[service]
metrics_listen = "127.0.0.1:{port}"
stall_s = 1
[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


class Notify:
    """The systemd side of sd_notify: a datagram socket, messages read as they come."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.address = address
        self.got: list[tuple[float, str]] = []

    def read(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                now = time.monotonic()
                self.got.extend((now, line) for line in data.decode().splitlines())
                self.sock.settimeout(0.0)
        except (BlockingIOError, socket.timeout):
            pass

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, f"waited {timeout} s for {what}; got {self.got}"
            self.read(0.1)

    def count(self, prefix: str, after: float = 0.0) -> int:
        return sum(1 for t, m in self.got if m.startswith(prefix) and t > after)


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def histogram_count(text: str, stage: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'edgert_stage_latency_ms_count{{stage="{stage}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract", "path"])
def test_notify_watchdog_metrics_and_health_follow_the_loop(tmp_path: Path, abstract: bool) -> None:
    yolo_constant(tmp_path / "model.onnx", one_box_pred())
    (tmp_path / "stall_decoder.py").write_text(DECODER)
    port = free_port()
    cfg = write_config(tmp_path / "device.toml", CONFIG.format(port=port))
    flag = tmp_path / "stall"
    address = f"@edgert-test-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify.sock")
    notify = Notify(address)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(REPO), str(tmp_path))),
               NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000", EDGERT_TEST_STALL=str(flag))
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        notify.wait(lambda: notify.count("READY=1") == 1, 120, "READY=1")
        # READY=1 came first: nothing (no watchdog ping) before warm-up finished.
        assert notify.got[0][1] == "READY=1", notify.got
        assert "ready:" in (tmp_path / "stderr.txt").read_text() or proc.poll() is None

        # Pings at about half WATCHDOG_USEC, each with a STATUS= line.
        notify.wait(lambda: notify.count("WATCHDOG=1") >= 4, 30, "four watchdog pings")
        pings = [t for t, m in notify.got if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.3 < g < 1.0 for g in gaps), gaps
        status = [m for _, m in notify.got if m.startswith("STATUS=")]
        assert status and "fps" in status[-1] and "providers CPUExecutionProvider" in status[-1]

        # Histograms present and moving; health fine.
        code, first = http(base + "/metrics")
        assert code == 200 and 'edgert_stage_latency_ms_bucket{le="+Inf",stage="infer"}' in first
        notify.wait(lambda: histogram_count(http(base + "/metrics")[1], "total")
                    > histogram_count(first, "total") + 5, 20, "the histograms to move")
        assert http(base + "/healthz")[0] == 200

        # Stall the loop inside a stage: health fails closed, the pings stop.
        flag.touch()
        notify.wait(lambda: http(base + "/healthz")[0] == 503, 20, "/healthz to fail")
        notify.read(0.2)
        stalled_at = time.monotonic()
        notify.read(2.5)   # a window longer than two ping periods: no ping may come in it
        assert notify.count("WATCHDOG=1", after=stalled_at) == 0, notify.got[-5:]
        assert proc.poll() is None

        # The loop comes back: pings and health too.
        flag.unlink()
        resumed = time.monotonic()
        notify.wait(lambda: notify.count("WATCHDOG=1", after=resumed) >= 1, 20, "pings again")
        notify.wait(lambda: http(base + "/healthz")[0] == 200, 20, "/healthz to recover")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        notify.read(0.5)
        assert notify.got[-1][1] == "STOPPING=1", notify.got[-3:]
    finally:
        if flag.exists():
            flag.unlink()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notify.sock.close()
