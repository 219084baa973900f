"""Watch `edgert run` from outside: stamp each record as it arrives and judge it against its deadline.

    python tools/observe.py [--seconds S] [--records N] -- edgert run CONFIG

The records are read from the child's stdout (configure a `stdout` output) and stamped by a
process of their own that does nothing else, at real-time priority where allowed. Stamped by
a thread of the observing process (a test's), a record could wait for that interpreter's lock
while another of its threads, at normal priority, held it and the board's real-time work kept
that thread off the CPU: in CI, records the writer sent in time were seen up to 116 ms late.
A record is late when it arrives after `captured_at + deadline_ms`; the report gives, per
status, how many arrived late and the lateness past the deadline (p50, p99, max: negative
means early). Exit status 1 if any `ok` record arrived late.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Observed:
    """Records as they arrived, with the observer's receive time (Unix seconds)."""

    records: list[dict] = field(default_factory=list)   # decisions only
    received: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None
    realtime: bool = False

    def lateness_ms(self, status: str | None = None) -> np.ndarray:
        """Receive time minus deadline per record (of `status`, or all), in ms."""
        return np.array([(got - (r["captured_at"] + r["deadline_ms"] / 1e3)) * 1e3
                         for r, got in zip(self.records, self.received)
                         if status is None or r["status"] == status])

    def late(self, status: str) -> int:
        return int((self.lateness_ms(status) > 0).sum())

    def report(self) -> dict:
        out: dict = {"records": len(self.records), "observer_realtime": self.realtime}
        for status in sorted({r["status"] for r in self.records}):
            lat = self.lateness_ms(status)
            out[status] = {"n": int(lat.size), "late": int((lat > 0).sum()),
                           "lateness_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                                           "p99": round(float(np.percentile(lat, 99)), 3),
                                           "max": round(float(lat.max()), 3)}}
        return out


def _realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
        return True
    except (AttributeError, PermissionError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, up to 60 s to finish, then SIGKILL (at once if the wait is interrupted)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


# The stamper: one thread, one job. Each chunk read from the pipe is stamped as it arrives
# and passed on as "<unix time> <line>" lines; its first line says whether it got real-time.
STAMPER = """
import os, sys, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
    rt = b"1"
except (AttributeError, PermissionError, OSError):
    rt = b"0"
try:   # room for seconds of records, should the observing process be slow to read them
    import fcntl
    fcntl.fcntl(1, 1031, 1 << 20)   # F_SETPIPE_SZ
except OSError:
    pass
out = sys.stdout.buffer
out.write(b"realtime " + rt + b"\\n")
out.flush()
rest = b""
while True:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    got = b"%.6f " % time.time()
    *lines, rest = (rest + chunk).split(b"\\n")
    out.write(b"".join(got + line + b"\\n" for line in lines))
    out.flush()
"""


def observe(cmd: list[str], *, seconds: float | None = None, records: int | None = None,
            cwd: str | None = None, env: dict | None = None, timeout: float = 600,
            on_record: Callable[[dict, float], bool] | None = None) -> Observed:
    """Run `cmd` until it exits, `seconds` pass or `records` arrive (then SIGTERM it).

    `on_record(record, received)` is called on the reader thread as each record arrives, so
    a test can act on what the run does; returning True ends the run like `records` does."""
    obs = Observed()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stamper = subprocess.Popen([sys.executable, "-c", STAMPER], stdin=proc.stdout,
                               stdout=subprocess.PIPE)
    proc.stdout.close()   # type: ignore[union-attr]  (the stamper's now)
    done = threading.Event()

    def read() -> None:
        _realtime()   # the stamps are taken; this only keeps the stamper from waiting on us
        first = stamper.stdout.readline()   # type: ignore[union-attr]
        obs.realtime = first.strip() == b"realtime 1"
        for stamped in stamper.stdout:   # type: ignore[union-attr]
            at, _, line = stamped.partition(b" ")
            got = float(at)
            if line.startswith(b"{"):
                rec = json.loads(line)
                if rec.get("schema") != "edgert.decision/1":
                    obs.events.append(rec)   # rule events interleave; they carry no deadline
                    continue
                obs.records.append(rec)
                obs.received.append(got)
                if records is not None and len(obs.records) >= records:
                    done.set()
                if on_record is not None and on_record(obs.records[-1], got):
                    done.set()
        done.set()

    err: list[bytes] = []
    reader = threading.Thread(target=read, daemon=True)
    err_reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    err_reader.start()
    try:
        done.wait(seconds if seconds is not None else timeout)
    finally:   # also on Ctrl-C or an exception: the child never outlives the observer
        _stop(proc)
        try:
            stamper.wait(timeout=10)   # it ends at the child's end of output
        except subprocess.TimeoutExpired:
            stamper.kill()
            stamper.wait()
    reader.join(10)
    err_reader.join(10)
    obs.returncode = proc.returncode
    obs.stderr = b"".join(err).decode(errors="replace")
    return obs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--records", type=int)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the command to observe after --")
    obs = observe(cmd, seconds=args.seconds, records=args.records)
    print(json.dumps(obs.report(), indent=2))
    return 1 if obs.late("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
