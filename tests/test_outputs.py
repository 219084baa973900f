"""Outputs never make their publisher wait: a reader that stops reading, a full disk, a dead pipe
are counted and dropped per record, and a line in a file is whole or absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO_CONFIG, REPO

from edgert.clock import ManualClock
from edgert.publish import Post, Publisher
from edgert.publish.lines import LineWriter, jsonl_output

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def post(seq: int, size: int = 200, status: str = "ok", not_after: float = float("inf"),
         source: str | None = None, kind: str = "decision") -> Post:
    line = json.dumps({"seq": seq, "pad": "x" * size, "source_id": source, "kind": kind}).encode()
    return Post(kind, line, seq, seq, status if kind == "decision" else "", "none", time.time(),
                not_after, source)


def wait_until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.01)


def test_a_reader_that_stops_reading_never_holds_the_sender() -> None:
    import fcntl
    import struct
    import termios

    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)   # a small pipe: full after ~17 lines
    out = LineWriter("pipe", w, truncates=False, owns_fd=True, queue=64)
    done = threading.Event()

    def publish() -> None:
        for seq in range(1, 5001):   # ~1 MB: far more than the pipe and the queue hold
            out.send(post(seq))
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    # A condition, not a time: the sends all return although nobody reads.
    wait_until(done.is_set, what="return from 5,000 sends to a pipe nobody reads")
    s = out.stats()
    assert s["dropped"] > 4000 and s["written"] < 100

    def in_pipe() -> int:
        return struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))[0]

    wait_until(lambda: in_pipe() > 4096 - 300, what="a full pipe")   # the writer is stuck now
    os.close(r)   # the reader goes away: the writer's blocked write fails, the output is dead
    wait_until(lambda: out.stats()["dead"], what="dead output after the reader left")
    out.close(timeout=5)


def test_an_ok_that_waited_past_its_deadline_gives_way_to_the_policy_record(
        tmp_path: Path) -> None:
    clock = ManualClock()
    out = jsonl_output(tmp_path / "d.jsonl", clock)
    out.send(post(1, not_after=clock.now() + 0.05))
    wait_until(lambda: out.stats()["written"] == 1, what="the first line")
    clock.advance(0.1)
    stale = post(2, not_after=clock.now() - 0.001)
    instead = post(2, status="fail_safe")
    out.send(Post(**{**{f: getattr(stale, f) for f in stale.__slots__}, "fallback": instead}))
    out.send(post(3, not_after=clock.now() - 0.001))                       # stale, no fallback
    out.send(post(4, status="fail_safe", not_after=clock.now() - 0.001))   # not an ok: written
    out.close()
    lines = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 4]
    assert lines[1] == json.loads(instead.line)   # never the late ok itself
    assert out.stats()["stale"] == 2


def test_the_herald_gives_every_ok_its_policy_record_as_a_fallback() -> None:
    from test_herald import Collect, arm, make, offer

    clock, collected, herald = make()
    arm(herald, clock, 1)
    clock.advance(0.010)
    herald.offer(offer(1))
    fallback = collected.posts[0].fallback
    assert fallback is not None and fallback.seq == 1 and fallback.status == "fail_safe"
    rec = json.loads(fallback.line)
    assert rec["cause"] == "deadline" and rec["stage"] == "publish" and rec["action"] == "stop"
    del Collect


def test_a_full_disk_is_counted_per_record_and_the_file_holds_only_whole_lines(
        tmp_path: Path) -> None:
    """A file that can take 1,000 bytes more: the line that does not fit is cut back off."""
    import resource
    import signal

    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"seq":0}\n')
    code = f"""
import json, os, resource, signal, sys, time
sys.path.insert(0, {str(REPO)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize({str(path)!r}) + 1000,) * 2)
from edgert.publish import Post
from edgert.publish.lines import jsonl_output
out = jsonl_output({str(path)!r})
for seq in range(1, 21):
    line = json.dumps({{"seq": seq, "pad": "x" * 150}}).encode()
    out.send(Post("decision", line, seq, seq, "fail_safe", "stop", time.time()))
out.close()
print(json.dumps(out.stats()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    text = path.read_text()
    assert text.endswith("\n")
    seqs = [json.loads(x)["seq"] for x in text.splitlines()]   # every line parses
    assert seqs == list(range(0, len(seqs)))
    assert stats["written"] == len(seqs) - 1 and stats["failed"] == 20 - stats["written"] > 0
    assert "File too large" in proc.stderr or "full" in proc.stderr
    del resource, signal


def test_dev_full_fails_every_line_without_stalling() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    out = jsonl_output(Path("/dev/full"))
    for seq in range(1, 101):
        out.send(post(seq))
    wait_until(lambda: out.stats()["failed"] == 100, what="100 counted failures")
    out.close()


def test_run_piped_into_head_ends_cleanly() -> None:
    proc = subprocess.run(f"set -o pipefail; {sys.executable} -m edgert run {DEMO_CONFIG} | head -3",
                          shell=True, executable="/bin/bash", capture_output=True, text=True,
                          env=ENV, timeout=120, cwd=REPO)
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr
    assert "lost its reader" in proc.stderr   # it ended because nobody listens, not at the end
    assert proc.returncode == 0, proc.stderr[-2000:]


FULL_DISK_CONFIG = """
device_id = "full-disk-test"

[source]
url = "pattern:"
fps = 60

[model]
path = "model.onnx"

[runtime]
budget_ms = {budget:.3f}

[fail_safe]
action = "stop"

[[outputs]]
type = "stdout"

[[outputs]]
type = "jsonl"
path = "out.jsonl"
"""


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) is not installed")
def test_a_full_disk_under_jsonl_holds_up_neither_stdout_nor_the_deadline(tmp_path: Path) -> None:
    """The jsonl file may not grow past 20 kB (RLIMIT_FSIZE: what a full disk looks like to
    the writer): stdout, watched from outside, goes on with every record, the deadline's
    records on time, and the file keeps whole lines only."""
    sys.path.insert(0, str(REPO / "tools"))
    from observe import observe
    from onnx_models import matmul_chain
    from test_deadline import median_inference_ms

    model = matmul_chain(tmp_path / "model.onnx", size=512, depth=10)
    budget = 0.9 * median_inference_ms(model)
    cfg = tmp_path / "device.toml"
    cfg.write_text(FULL_DISK_CONFIG.format(budget=budget))
    obs = observe(["prlimit", "--fsize=20000", sys.executable, "-m", "edgert", "run", str(cfg)],
                  records=600, timeout=120, cwd=str(tmp_path), env=ENV)
    assert obs.returncode == 0 and "Traceback" not in obs.stderr, obs.stderr[-2000:]
    assert len(obs.records) >= 600
    seqs = [r["seq"] for r in obs.records]
    assert seqs == list(range(1, len(seqs) + 1))
    assert obs.late("ok") == 0, obs.report()
    fired = np.array([got - (r["captured_at"] + r["deadline_ms"] / 1e3)
                      for r, got in zip(obs.records, obs.received) if r.get("cause") == "deadline"])
    if fired.size >= 20:   # how many frames the deadline takes depends on the machine's mood
        realtime = "sender realtime" in obs.stderr
        assert np.percentile(fired * 1e3, 99) <= (2.0 if realtime else 20.0), fired.max()
    text = (tmp_path / "out.jsonl").read_text()
    assert len(text) <= 20000 and (not text or text.endswith("\n"))
    assert all(json.loads(x)["schema"] == "edgert.decision/1" for x in text.splitlines())
    warned = [ln for ln in obs.stderr.splitlines()
              if ln.startswith("edgert: WARNING") and "File too large" in ln]
    assert len(warned) == 1, warned   # reported once per streak, not once per record


# Routing: several sources, each output carrying the sources its `sources` names


def lines_of(path: Path) -> list[tuple[str | None, str, int]]:
    return [(r["source_id"], r["kind"], r["seq"]) for r in map(json.loads, path.read_text().splitlines())]


def test_an_output_routed_to_a_source_gets_only_its_decisions_and_events(tmp_path: Path) -> None:
    only_a, every = jsonl_output(tmp_path / "a.jsonl"), jsonl_output(tmp_path / "all.jsonl")
    pub = Publisher([only_a, every], [("a",), ()])
    sent = [(src, kind, seq) for seq in range(1, 4) for src in ("a", "b") for kind in
            ("decision", "event")]
    for src, kind, seq in sent:
        pub.publish(post(seq, size=10, source=src, kind=kind))
    pub.publish(post(9, size=10))   # a record of no named source: only unrouted outputs
    pub.close()
    assert lines_of(tmp_path / "a.jsonl") == [r for r in sent if r[0] == "a"]
    assert lines_of(tmp_path / "all.jsonl") == sent + [(None, "decision", 9)]
    assert pub.failures == {only_a.name: 0, every.name: 0}


def test_without_routes_a_post_reaches_every_output_unlooked_at(tmp_path: Path) -> None:
    outs = [jsonl_output(tmp_path / "x.jsonl")]
    for routes in ((), [()]):   # none given, or all empty: the source is never looked at
        pub = Publisher(outs, routes)
        assert pub.routed("a") is pub.outputs and pub.routed(None) is pub.outputs
    with pytest.raises(ValueError, match="1 routes for 2 outputs"):
        Publisher(outs * 2, [("a",)])
    outs[0].close()
