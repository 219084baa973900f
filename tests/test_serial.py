"""The serial output on real ptys, sockets and loop://, decoded by the reference decoder."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pty
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, edgert, write_config
from onnx_models import matmul_chain, one_box_pred, yolo_constant

from edgert.config import load_config
from edgert.config.types import SerialConfig
from edgert.publish import Post, Publisher
from edgert.publish.lines import stdout_output
from edgert.publish.sender import SenderProcess
from edgert.publish.serial import SerialOutput
from edgert.publish.serial_frame import (ACK, DECISION, FLAG_ACK, HEARTBEAT, SAFE_STATE,
                                         Deframer, SerialFrame, crc16, encode)
from edgert.records import Event

DECODER = REPO / "tools" / "serial_decode.py"
needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")

CONFIG = """
device_id = "serial-test"

[source]
url = "pattern:"
fps = 30

[model]
path = "model.onnx"
{model_extra}

[runtime]
budget_ms = {budget}

[[zones]]
name = "middle"
polygon = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]
anchor = "center"

[[rules]]
name = "defect-in-middle"
labels = ["defect"]
zone = "middle"
action = "reject"

[fail_safe]
action = "stop"

[[outputs]]
type = "jsonl"
path = "out.jsonl"

[[outputs]]
type = "serial"
port = "{port}"
{extra}
"""


def config(tmp: Path, port: str, extra: str = "", budget: float = 500, model_extra: str = "") -> Path:
    return write_config(tmp / "device.toml", CONFIG.format(port=port, extra=extra, budget=budget,
                                                           model_extra=model_extra))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return yolo_constant(tmp_path / "model.onnx", one_box_pred(),
                         metadata={"names": "{0: 'part', 1: 'defect'}"})


def decode_tool(data: bytes) -> list[dict]:
    """The reference decoder, as an actuator developer would run it: bytes in, JSON lines out."""
    proc = subprocess.run([sys.executable, str(DECODER)], input=data, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in proc.stdout.decode().splitlines()]


def records(path: Path) -> list[dict]:
    """The records but rule events (which share the file and have their own seq)."""
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in recs if r.get("schema") != "edgert.event/1"]


def of_type(frames: list[dict], kind: str) -> list[dict]:
    return [f for f in frames if f["type"] == kind]


class Wire:
    """The far end of the line: collects every byte edgert writes to a pty master or socket.

    Every Wire is stopped before its test's descriptors close: a reader left running would
    read whatever the next test opens under the same descriptor number.
    """

    running: list[Wire] = []

    def __init__(self, fd: int, owns_fd: bool = False) -> None:
        self.fd, self.owns_fd, self.data = fd, owns_fd, bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        Wire.running.append(self)

    @classmethod
    def stop_all(cls) -> None:
        while cls.running:
            cls.running[0].stop()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:   # EIO: the other side of the pty went away
                return
            if not chunk:
                return
            self.data.extend(chunk)

    def frames(self) -> list[SerialFrame | None]:
        return list(Deframer().feed(bytes(self.data)))

    def wait_for(self, done: Callable[[list[SerialFrame | None]], bool], timeout: float = 30,
                 what: str = "frames") -> list[SerialFrame | None]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            frames = self.frames()
            if done(frames):
                return frames
            time.sleep(0.02)
        pytest.fail(f"no {what} within {timeout} s; got {self.frames()[-5:]}")

    def stop(self) -> bytes:
        if self in Wire.running:
            Wire.running.remove(self)
            self._stop.set()
            self._thread.join(2)
            if self.owns_fd:
                os.close(self.fd)
        return bytes(self.data)


@pytest.fixture(autouse=True)
def _stop_wires():
    yield
    Wire.stop_all()


def decisions(frames: list[SerialFrame | None]) -> list[SerialFrame]:
    return [f for f in frames if f is not None and f.type == DECISION]


class Socat:
    """A pty pair with names, from socat: DEV for edgert, PEER for the test; stopping it makes
    both paths vanish, as a USB adapter's device node does when it is unplugged."""

    def __init__(self, folder: Path) -> None:
        self.dev, self.peer = folder / "dev", folder / "peer"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Socat:
        self.proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={self.dev}",
                                      f"pty,raw,echo=0,link={self.peer}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while not (self.dev.exists() and self.peer.exists()):
            assert time.monotonic() < end, "socat made no ptys"
            time.sleep(0.01)
        return self

    def wire(self) -> Wire:
        return Wire(os.open(self.peer, os.O_RDWR | os.O_NOCTTY), owns_fd=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()   # socat removes its links on SIGTERM
            self.proc.wait(10)


@pytest.fixture
def socat(tmp_path: Path):
    s = Socat(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def pty_pair():
    """A pty: edgert writes to the slave's path, the test reads the master."""
    master, slave = pty.openpty()
    yield master, os.ttyname(slave)
    Wire.stop_all()
    os.close(master)
    os.close(slave)


def serial_cfg(port: str, **kw) -> SerialConfig:
    return SerialConfig(port=port, **kw)


def record(seq: int, status: str = "ok", action: str = "reject") -> Post:
    line = json.dumps({"seq": seq, "status": status, "action": action}).encode()
    return Post("decision", line, seq, seq - 1, status, action, time.time())


def start_edgert(cfg: Path, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(cwd / "stderr.txt", "w"),
                            env=env)


def wait_text(path: Path, text: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    pytest.fail(f"{text!r} not in {path} within {timeout} s")


# The frame and the reference decoder


def test_worked_example_in_the_docs_is_what_edgert_sends() -> None:
    assert crc16(b"123456789") == 0x29B1
    frame = SerialFrame(DECISION, 12, 0, "reject", 11, 1717171717171)
    wire = encode(frame)
    text = "02 44 02 0c 01 01 01 02 0b 01 01 10 33 04 69 cf 8f 01 06 72 65 6a 65 63 74 aa d4 00"
    assert wire.hex(" ") == text
    assert text in (REPO / "docs" / "serial.md").read_text()
    assert decode_tool(wire) == [{"type": "decision", "seq": 12, "action": "reject",
                                  "frame_id": 11, "t_ms": 1717171717171, "ack_requested": False,
                                  "status": "ok"}]
    ack = encode(SerialFrame(ACK, 12, DECISION)).hex(" ")
    assert ack in (REPO / "docs" / "serial.md").read_text()


def test_serial_config_keys_load_with_defaults_and_ports_resolve(tmp_path: Path, model) -> None:
    from edgert.config import load_config
    cfg = load_config(config(tmp_path, "ttyACM0", 'baudrate = 9600\non_missing = "fail"'))
    out = cfg.outputs[1]
    assert out.type == "serial" and out.serial is not None
    assert out.serial == SerialConfig(port=str(tmp_path / "ttyACM0"), baudrate=9600,
                                      on_missing="fail")
    cfg = load_config(config(tmp_path, "socket://[::1]:7000", "ack = true\nack_retries = 0"))
    assert cfg.outputs[1].serial.port == "socket://[::1]:7000" and cfg.outputs[1].serial.ack


def test_corrupt_frames_are_reported_and_the_decoder_resynchronises() -> None:
    good = [encode(SerialFrame(DECISION, i, 0, "reject", i, 1000 + i)) for i in range(1, 5)]
    flipped = bytearray(good[1])
    flipped[8] ^= 0x10   # one bit on the wire
    stream = (b"\x17\x99garbage-before-the-first-delimiter\x00" + good[0] + bytes(flipped)
              + bytes(range(1, 200)) + b"\x00"          # a run longer than any frame
              + good[2][:10] + b"\x00"                  # a frame cut short
              + b"\x00\x00" + good[3]                   # padding is not a frame
              + encode(SerialFrame(SAFE_STATE, 4, 3, "stop", 4, 2000))
              + encode(SerialFrame(HEARTBEAT, 4, 3, "", 4, 2100))
              + encode(SerialFrame(ACK, 4, DECISION))
              + good[0][:7])                            # the input ends mid-frame
    out = decode_tool(stream)
    assert [f["type"] for f in out] == ["corrupt", "decision", "corrupt", "corrupt", "corrupt",
                                        "decision", "safe_state", "heartbeat", "ack", "corrupt"]
    assert out[0] == {"type": "corrupt"}
    assert [f["seq"] for f in of_type(out, "decision")] == [1, 4]
    assert out[6]["reason"] == "source_lost" and out[6]["action"] == "stop"
    assert out[7]["reason"] == "source_lost" and out[7]["action"] == ""
    assert out[8]["acks"] == "decision" and out[8]["seq"] == 4


def test_reference_decoder_agrees_with_edgert_on_a_noisy_stream() -> None:
    """The standalone copy must not drift from the encoder: random frames, random damage."""
    rng = random.Random(5)
    stream = bytearray()
    for i in range(300):
        frame = SerialFrame(rng.choice([DECISION, HEARTBEAT, SAFE_STATE, ACK, 0x5A]),
                            rng.randrange(2**32), rng.randrange(256),
                            rng.choice(["", "none", "reject", "stop", "é" * 16, "x" * 32]),
                            rng.randrange(2**32), rng.randrange(2**48), rng.randrange(256))
        data = bytearray(encode(frame))
        if rng.random() < 0.2:
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.05:
            data = bytearray(rng.randbytes(rng.randrange(1, 80)))
        stream += data
    stream += b"\x00"
    ours = list(Deframer().feed(bytes(stream)))
    theirs = decode_tool(bytes(stream))
    assert len(ours) == len(theirs) and len(ours) > 250
    for a, b in zip(ours, theirs):
        if a is None:
            assert b == {"type": "corrupt"}
        else:
            assert (b["seq"], b["action"], b["frame_id"], b["t_ms"], b["ack_requested"]) == \
                   (a.seq, a.action, a.frame_id, a.t_ms, bool(a.flags & FLAG_ACK))
    assert 0 < sum(a is None for a in ours) < len(ours)


def test_reference_decoder_is_standalone() -> None:
    """An actuator developer ports one file: it may import nothing but the standard library."""
    tree = ast.parse(DECODER.read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert imported <= {"json", "os", "sys"}, imported


# A real `edgert run`


def test_frames_from_edgert_run_decode_with_the_reference_decoder(tmp_path: Path, model,
                                                                  pty_pair) -> None:
    master, port = pty_pair
    wire = Wire(master)
    proc = edgert("run", str(config(tmp_path, port)), "--frames", "12", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wire.wait_for(lambda fs: any(f is not None and f.type == SAFE_STATE for f in fs))
    frames = decode_tool(wire.stop())
    assert "corrupt" not in [f["type"] for f in frames]
    got = of_type(frames, "decision")
    want = records(tmp_path / "out.jsonl")
    assert [(f["seq"], f["frame_id"], f["status"], f["action"], f["t_ms"]) for f in got] == \
           [(r["seq"], r["frame_id"], r["status"], r["action"], round(r["captured_at"] * 1e3))
            for r in want]
    assert [f["seq"] for f in got] == list(range(1, 13)) and got[0]["action"] == "reject"
    last = frames[-1]
    assert last == {**last, "type": "safe_state", "reason": "shutdown", "action": "stop",
                    "seq": 12}
    assert "serial:" in proc.stderr and "12 decision" in proc.stderr


def test_sigterm_puts_a_safe_state_frame_on_the_wire(tmp_path: Path, model) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    host, tcp = listener.getsockname()
    proc = start_edgert(config(tmp_path, f"socket://{host}:{tcp}"), tmp_path)
    listener.settimeout(30)
    try:
        conn, _ = listener.accept()
        with conn:
            wire = Wire(conn.fileno())
            wire.wait_for(lambda fs: len(decisions(fs)) >= 3, what="decision frames")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, (tmp_path / "stderr.txt").read_text()
            wire.wait_for(lambda fs: any(f is not None and f.type == SAFE_STATE for f in fs))
            frames = decode_tool(wire.stop())
    finally:
        Wire.stop_all()
        proc.kill()
        listener.close()
    assert frames[-1]["type"] == "safe_state" and frames[-1]["reason"] == "shutdown"
    assert frames[-1]["seq"] == records(tmp_path / "out.jsonl")[-1]["seq"]
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_a_lost_source_puts_a_safe_state_frame_on_the_wire(tmp_path: Path, model) -> None:
    """No camera, so no frames and no records: the actuator is told to go safe, once."""
    listener = socket.create_server(("127.0.0.1", 0))
    host, tcp = listener.getsockname()
    cfg = config(tmp_path, f"socket://{host}:{tcp}")
    text = cfg.read_text().replace('url = "pattern:"', 'url = "/dev/video97"\nstall_timeout_s = 0.5')
    assert "/dev/video97" in text
    cfg.write_text(text)
    proc = start_edgert(cfg, tmp_path)
    listener.settimeout(30)
    try:
        conn, _ = listener.accept()
        with conn:
            wire = Wire(conn.fileno())
            wire.wait_for(lambda fs: any(f is not None and f.type == SAFE_STATE for f in fs),
                          what="a safe_state frame")
            time.sleep(1.0)   # repeats would show here
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, (tmp_path / "stderr.txt").read_text()
            frames = decode_tool(wire.stop())
    finally:
        Wire.stop_all()
        proc.kill()
        listener.close()
    safe = of_type(frames, "safe_state")
    assert [f["reason"] for f in safe] == ["source_lost", "shutdown"], safe
    assert safe[0]["action"] == "stop"


def test_a_streak_of_missed_deadlines_sends_one_safe_state_frame(tmp_path: Path,
                                                                 pty_pair) -> None:
    matmul_chain(tmp_path / "model.onnx", size=512, depth=8)   # milliseconds: never in 0.5 ms
    (tmp_path / "labels.txt").write_text("part\ndefect\n")
    master, port = pty_pair
    wire = Wire(master)
    cfg = config(tmp_path, port, "miss_streak = 3", budget=0.5, model_extra='labels = "labels.txt"')
    proc = edgert("run", str(cfg), "--frames", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wire.wait_for(lambda fs: sum(f is not None and f.type == SAFE_STATE for f in fs) >= 2)
    frames = [f for f in decode_tool(wire.stop()) if f["type"] != "heartbeat"]
    assert [r["status"] for r in records(tmp_path / "out.jsonl")] == ["fail_safe"] * 8
    assert [(f["type"], f["seq"]) for f in frames] == \
           [("decision", 1), ("decision", 2), ("decision", 3), ("safe_state", 3)] + \
           [("decision", s) for s in range(4, 9)] + [("safe_state", 8)]
    assert frames[3]["reason"] == "misses" and frames[3]["action"] == "stop"
    assert {f["status"] for f in of_type(frames, "decision")} == {"fail_safe"}


@needs_socat
def test_unplugged_port_is_reopened_and_the_outage_counted(tmp_path: Path, model, socat) -> None:
    socat.start()
    cfg = config(tmp_path, str(socat.dev), "reopen_initial_s = 0.05\nreopen_max_s = 0.2")
    proc = start_edgert(cfg, tmp_path)
    err = tmp_path / "stderr.txt"
    try:
        wire = socat.wire()
        before = decisions(wire.wait_for(lambda fs: len(decisions(fs)) >= 5))
        socat.stop()                      # unplugged: both paths vanish, writes fail
        wire.stop()
        assert not socat.dev.exists()
        wait_text(err, "reopening with backoff")
        time.sleep(0.4)                   # a few reopen attempts fail while it is gone
        socat.start()                     # plugged back in, under the same name
        wire = socat.wire()
        after = decisions(wire.wait_for(lambda fs: len(decisions(fs)) >= 5))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
        wire.wait_for(lambda fs: any(f is not None and f.type == SAFE_STATE for f in fs))
        wire.stop()
    finally:
        proc.kill()
    assert after[0].seq > before[-1].seq
    assert [f.seq for f in after] == list(range(after[0].seq, after[0].seq + len(after)))
    text = err.read_text()
    assert text.count("reopening with backoff") == 1, text   # logged once per outage
    summary = next(ln for ln in text.splitlines() if "frames sent" in ln)
    failures = int(summary.split(" failures")[0].rsplit(" ", 1)[-1])
    reopens = int(summary.split(" reopens")[0].rsplit(" ", 1)[-1])
    assert failures >= 2 and reopens == 1, summary   # the failed write and failed reopens


def test_missing_device_with_on_missing_fail_exits_2_with_one_sentence(tmp_path: Path,
                                                                       model) -> None:
    cfg = config(tmp_path, "no-such-tty", 'on_missing = "fail"')
    proc = edgert("run", str(cfg), "--frames", "3", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line, line
    assert f"{cfg}: outputs[1].port" in line and "no-such-tty" in line
    assert "No such file or directory" in line and 'on_missing = "wait"' in line


@needs_socat
def test_missing_device_with_on_missing_wait_runs_and_starts_writing_when_it_appears(
        tmp_path: Path, model, socat) -> None:
    cfg = config(tmp_path, "dev", 'on_missing = "wait"\nreopen_initial_s = 0.05\n'
                 "reopen_max_s = 0.1")   # a relative path: next to the config, where socat links
    proc = start_edgert(cfg, tmp_path)
    err = tmp_path / "stderr.txt"
    try:
        wait_text(err, "waiting for it")
        wait_text(err, "ready:")
        time.sleep(0.3)                   # decisions go on (to the jsonl output) without it
        assert records(tmp_path / "out.jsonl")
        socat.start()
        wire = socat.wire()
        wire.wait_for(lambda fs: len(decisions(fs)) >= 3, what="decision frames")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
        wire.stop()
    finally:
        proc.kill()
    text = err.read_text()
    assert text.count("waiting for it") == 1
    summary = next(ln for ln in text.splitlines() if "frames sent" in ln)
    assert "1 reopens" in summary, summary


# The output in-process


def test_heartbeats_arrive_at_the_interval_when_no_decisions_flow(pty_pair) -> None:
    master, port = pty_pair
    wire = Wire(master)
    out = SerialOutput.open(serial_cfg(port, heartbeat_ms=40), f"serial:{port}", "stop")
    try:
        for seq in range(1, 41):          # decisions every 5 ms keep the line busy …
            out.send(record(seq))
            time.sleep(0.005)
        frames = wire.wait_for(lambda fs: sum(f is not None and f.type == HEARTBEAT
                                              and f.seq == 40 for f in fs) >= 10, timeout=30)
    finally:                              # … then it is idle: heartbeats
        out.close()
    frames = [f for f in frames if f is not None]
    beats = [f for f in frames if f.type == HEARTBEAT]
    assert [f.seq for f in frames if f.type == DECISION] == list(range(1, 41))
    # The idle heartbeats repeat the last decision. A loaded machine can stretch one of the
    # 5 ms sleeps past heartbeat_ms: a heartbeat between decisions is then right, as long as
    # it repeats the decision before it and followed heartbeat_ms of silence (checked below).
    assert sum(b.seq == 40 and b.frame_id == 39 for b in beats) >= 10
    last = None
    for f in frames:
        if f.type == DECISION:
            last = f
        elif f.type == HEARTBEAT:
            assert last is not None and (f.seq, f.frame_id, f.action) == (last.seq, last.frame_id, ""), f
    # A heartbeat only ever follows heartbeat_ms of silence (t_ms is in whole milliseconds).
    for before, beat in zip(frames, frames[1:]):
        if beat.type == HEARTBEAT:
            assert beat.t_ms - before.t_ms >= 39, (before, beat)
    idle = [b for b in beats if b.seq == 40]
    gaps = sorted(b.t_ms - a.t_ms for a, b in zip(idle, idle[1:]))
    # The median interval is the configured one: a late wake-up of the writer lengthens one
    # gap, not the median (100 ms is 2.5 intervals: a timer that drifted would exceed it).
    assert 39 <= gaps[len(gaps) // 2] <= 100, gaps


def test_send_never_blocks_when_nobody_reads(pty_pair) -> None:
    _master, port = pty_pair   # nobody reads: the kernel's pty buffer fills and stays full
    out = SerialOutput.open(serial_cfg(port, write_timeout_ms=20, queue=8), "serial:test", "stop")
    seq, end = 0, time.monotonic() + 20
    while out.stats()["write_timeouts"] == 0:   # fill the kernel's buffer first
        assert time.monotonic() < end, out.stats()
        seq += 1
        out.send(record(seq))
        time.sleep(0.0002)
    full = out.stats()
    t0 = time.monotonic()
    for seq in range(seq + 1, seq + 10_001):
        out.send(record(seq))
    sending = time.monotonic() - t0
    stats = out.stats()
    t1 = time.monotonic()
    out.close()
    closing = time.monotonic() - t1
    # Each write now waits 20 ms for the line: sends that waited would take over 3 minutes.
    assert sending < 5.0, sending
    dropped = stats["dropped"] - full["dropped"]
    written = stats["sent"]["decision"] - full["sent"]["decision"]
    assert dropped >= 10_000 - 8 - 1 - 300, stats   # counted, never silent
    assert written <= 300 and stats["write_timeouts"] >= full["write_timeouts"]
    assert out.stats()["write_timeouts"] > full["write_timeouts"]
    assert closing < 3.0


def test_ack_retries_until_acknowledged_and_newer_frames_supersede(pty_pair) -> None:
    master, port = pty_pair
    seen: list[SerialFrame] = []
    silent: set[int] = set()
    stop = threading.Event()

    def actuator() -> None:   # acks every frame that asks, except the seqs in `silent`
        deframer = Deframer()
        while not stop.is_set():
            if not select.select([master], [], [], 0.02)[0]:
                continue
            for f in deframer.feed(os.read(master, 4096)):
                if f is None or f.type == HEARTBEAT:
                    continue
                seen.append(f)
                if f.flags & FLAG_ACK and f.seq not in silent and -1 not in silent:
                    os.write(master, encode(SerialFrame(ACK, f.seq, f.type)))

    thread = threading.Thread(target=actuator, daemon=True)
    thread.start()
    # The ack timeout is the only clock here; it must outlast a loaded machine's scheduling
    # delays, because both "the actuator acked in time" and "4 was queued before 3's timeout"
    # are races against it. At 40 ms, one late wake-up of the actuator thread (or of this one
    # between sending 3 and 4) turned into an extra retry; 400 ms costs under 3 s per run.
    cfg = serial_cfg(port, ack=True, ack_timeout_ms=400, ack_retries=2, heartbeat_ms=50_000)
    out = SerialOutput.open(cfg, "serial:test", "stop")

    def settle(check: Callable[[dict], bool]) -> dict:
        end = time.monotonic() + 30
        while not check(out.stats()):
            assert time.monotonic() < end, out.stats()
            time.sleep(0.01)
        return out.stats()

    try:
        out.send(record(1))
        retried = settle(lambda s: s["acked"] == 1)["retries"]
        silent.add(2)
        out.send(record(2))
        s = settle(lambda s: s["unacked"] == 1)
        assert [f.seq for f in seen if f.type == DECISION].count(2) == 3
        assert s["retries"] - retried == 2
        silent.add(-1)                     # the actuator stops acking altogether
        out.send(record(3))
        out.send(record(4))            # queued while 3 waits: 3 is not resent
        settle(lambda s: s["unacked"] == 3)
        counts = [f.seq for f in seen if f.type == DECISION]
        assert counts.count(3) == 1 and counts.count(4) == 3
        silent.clear()
    finally:
        out.close()
        stop.set()
        thread.join(2)
    assert seen[-1].type == SAFE_STATE and seen[-1].flags & FLAG_ACK
    assert out.stats()["acked"] == 2      # decision 1 and the shutdown frame


def test_publisher_safe_state_reaches_serial_outputs_once_per_outage(pty_pair, capfd) -> None:
    master, port = pty_pair
    wire = Wire(master)
    serial_out = SerialOutput.open(serial_cfg(port, heartbeat_ms=5000), "serial:test", "halt")
    publisher = Publisher([stdout_output(), serial_out])
    publisher.publish(record(1))
    publisher.safe_state("source_lost")
    publisher.safe_state("source_lost")   # still lost, nothing decided since: no new frame
    publisher.publish(record(2))
    publisher.safe_state("source_lost")   # a new outage after an ok decision
    publisher.close()
    wire.wait_for(lambda fs: len([f for f in fs if f is not None and f.type == SAFE_STATE]) == 3)
    got = [(f.type, f.seq, f.status, f.action) for f in wire.frames() if f is not None]
    assert got == [(DECISION, 1, 0, "reject"), (SAFE_STATE, 1, 3, "halt"),
                   (DECISION, 2, 0, "reject"), (SAFE_STATE, 2, 3, "halt"),
                   (SAFE_STATE, 2, 1, "halt")]
    assert publisher.failures == {"stdout": 0, "serial:test": 0}
    assert publisher.stats()["serial:test"]["sent"]["safe_state"] == 3
    assert len(capfd.readouterr().out.splitlines()) == 2   # stdout has no safe state


def sourced(seq: int, source: str, status: str = "ok") -> Post:
    line = json.dumps({"seq": seq, "status": status, "source_id": source}).encode()
    return Post("decision", line, seq, seq - 1, status, "reject", time.time(), source_id=source)


def test_an_output_routed_to_one_source_has_that_sources_streak_and_safe_states() -> None:
    """Three actuators: one for camera a, one for b, one for both. Each counts the misses of
    the records it is given, and a lost camera sends only its own actuators safe."""
    ptys = [pty.openpty() for _ in range(3)]
    try:
        wires = [Wire(master) for master, _ in ptys]
        outs = [SerialOutput.open(serial_cfg(os.ttyname(slave), heartbeat_ms=5000, miss_streak=3),
                                  f"serial:{name}", "halt")
                for (_, slave), name in zip(ptys, ("a", "b", "both"))]
        publisher = Publisher(outs, [("a",), ("b",), ()])
        publisher.publish(sourced(1, "a"))
        for seq, src in enumerate(["b", "a", "b", "a", "b"], start=2):
            publisher.publish(sourced(seq, src, "fail_safe"))
        publisher.safe_state("source_lost", "a")
        publisher.close()
        got = []
        for wire in wires:
            frames = wire.wait_for(lambda fs: any(f is not None and f.type == SAFE_STATE
                                                  and f.status == 1 for f in fs),
                                   what="the shutdown frame")
            got.append([(chr(f.type), f.seq, f.status) for f in frames
                        if f is not None and f.type != HEARTBEAT])
    finally:
        Wire.stop_all()
        for fd in (fd for pair in ptys for fd in pair):
            os.close(fd)
    # decision status 0 ok, 1 fail_safe; safe_state reason 1 shutdown, 2 misses, 3 source_lost
    assert got[0] == [("D", 1, 0), ("D", 3, 1), ("D", 5, 1), ("S", 5, 3), ("S", 5, 1)]
    assert got[1] == [("D", 2, 1), ("D", 4, 1), ("D", 6, 1), ("S", 6, 2), ("S", 6, 1)]
    assert got[2] == [("D", 1, 0), ("D", 2, 1), ("D", 3, 1), ("D", 4, 1), ("S", 4, 2),
                      ("D", 5, 1), ("D", 6, 1), ("S", 6, 3), ("S", 6, 1)]


def test_a_sources_safe_state_crosses_the_sender_process_to_its_outputs_only(
        tmp_path: Path, model, pty_pair) -> None:
    master, port = pty_pair
    wire = Wire(master)
    cfg = load_config(config(tmp_path, port))
    jsonl_out, serial_out = cfg.outputs
    cfg = dataclasses.replace(cfg, outputs=(dataclasses.replace(jsonl_out, sources=("b",)),
                                            dataclasses.replace(serial_out, sources=("a",))))
    sender = SenderProcess.spawn(cfg, "run1", realtime=False)
    sender.wait_ready()
    sender.safe_state("source_lost", "b")   # not the actuator's camera: nothing on the line
    for seq, src in enumerate(["a", "b"], start=1):
        sender.event(Event("serial-test", "run1", seq, "r", "new", f"e{seq}", 0, time.time(),
                           source_id=src))
    sender.safe_state("source_lost", "a")
    sender.safe_state("source_lost")       # every output; a repeat for the latched actuator
    sender.close()
    frames = wire.wait_for(lambda fs: sum(f is not None and f.type == SAFE_STATE
                                          for f in fs) >= 2, what="two safe_state frames")
    assert [(f.type, f.status) for f in frames if f is not None and f.type != HEARTBEAT] == \
           [(SAFE_STATE, 3), (SAFE_STATE, 1)]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [(e["source_id"], e["seq"]) for e in map(json.loads, lines)] == [("b", 2)]


def test_loop_url_runs_without_a_reader() -> None:
    """loop:// echoes every byte back; the writer drains it, so nothing ever fills up."""
    out = SerialOutput.open(serial_cfg("loop://", heartbeat_ms=5000, queue=10_000),
                            "serial:loop", "stop")
    for seq in range(1, 501):   # ~14 kB: three times the loop's 4 kB buffer
        out.send(record(seq))
    out.close()
    s = out.stats()
    assert s["sent"] == {"decision": 500, "heartbeat": 0, "safe_state": 1}, s
    assert s["dropped"] == s["write_timeouts"] == s["failures"] == 0, s
