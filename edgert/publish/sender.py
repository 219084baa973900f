"""The sender process: the herald and every output, out of reach of the loop's interpreter lock.

Why a process: at the deadline the record must go out even while the loop's threads hold the
GIL and the scheduler has preempted them for other work on the board. A real-time thread in
the same interpreter still needs that lock, and the GIL has no priority inheritance: measured
under two busy processes, fail-safes arrived up to 80 ms late and `ok` records that were
claimed in time finished their send after the deadline. Here the herald owns its own
interpreter; it and every output thread run at SCHED_FIFO where allowed, so nothing an
ordinary process does can delay them, and the loop only ever writes one small message per
event to a socket.

Protocol: pickled tuples over an AF_UNIX SOCK_SEQPACKET pair (one message each, in order).
The loop's side is `SenderProcess`; `LocalHerald` offers the same methods in-process, where
deadlines are not enforced (bench, fast replay).
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgert.clock import LIVE, Clock
from edgert.config.types import Config, OutputConfig
from edgert.errors import ConfigError, EdgertError
from edgert.publish.base import Output, Post, Publisher
from edgert.publish.herald import BOARD_SLOTS, Armed, Herald, Offer, Outcome, new_board
from edgert.codec import encode
from edgert.records import Event, Metrics, Status

if TYPE_CHECKING:
    from edgert.publish.swap import OutputSwap

log = logging.getLogger("edgert.publish")

RT_PRIORITY = 10          # the herald; above ordinary threads, below the kernel's helpers (50+)
RT_OUTPUTS = 8            # output threads: below the herald, above everything ordinary
SWITCH_S = 0.0002         # the sender's GIL hand-off: its threads are few and all real-time
START_S = 60.0            # opening outputs (a serial port, TLS files) before ready
SETTLE_S = 10.0           # at the end, how long an output swap in progress may take to finish
SOCK_BUF = 1 << 21
MAX_MSG = 1 << 21


class HeraldPort(Protocol):
    """What the loop sees of the herald, wherever it runs."""

    board: np.ndarray
    priority: str

    def arm(self, armed: Armed) -> None:
        """A frame has arrived; from any thread (grabbers arm their frames)."""

    def drop(self, uid: int) -> None:
        """A newer frame replaced this one before the loop took it; from any thread."""

    def offer(self, offer: Offer) -> None: ...

    def overrun(self, uid: int, cause: str, stage: str, latency_ms: dict[str, float],
                error: str | None = None) -> None: ...

    def event(self, event: Event) -> None:
        """A rule's event (new / update / end), published in order with the decisions."""

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        """The outputs routed to `source_id` (None: every output) command their safe state."""

    def set_state(self, status: Status) -> None: ...

    def metrics(self, m: Metrics) -> None:
        """A metrics record; the output counters are added where the outputs live."""

    def take_outcomes(self) -> list[Outcome]: ...

    def prepare(self, cfg: Config) -> None:
        """A reload: open the outputs `cfg` adds or changes beside the running ones."""

    def prepared(self) -> str | None | bool:
        """False while preparing; then None (ready to commit) or why the outputs failed (the
        old ones are back)."""

    def commit(self, cfg: Config) -> None:
        """From the next record on, `cfg` is in force: its outputs, its fail-safe action."""

    @property
    def dead(self) -> bool: ...

    def close(self) -> dict[str, Any]: ...


def event_post(event: Event) -> Post:
    """An event as outputs receive it (serial, which carries decisions only, ignores it)."""
    return Post("event", encode(event), event.seq, event.frame_id, "", event.kind, event.at,
                source_id=event.source_id)


class LocalHerald:
    """The herald on the loop's own thread, for runs whose deadlines are measured, not enforced."""

    priority = "in-process"

    def __init__(self, cfg: Config, run_id: str, outputs: list[Output], clock: Clock = LIVE) -> None:
        self.board = new_board()
        self.publisher = Publisher(outputs)
        self.herald = Herald(cfg, run_id, self.publisher, clock, self.board)
        self._prepared: str | None | bool = False

    def arm(self, armed: Armed) -> None:
        self.herald.arm(armed)   # only the loop's thread arms here: deadlines are not enforced

    def drop(self, uid: int) -> None:
        self.herald.drop(uid)

    def offer(self, offer: Offer) -> None:
        self.herald.offer(offer)

    def overrun(self, uid: int, cause: str, stage: str, latency_ms: dict[str, float],
                error: str | None = None) -> None:
        self.herald.overrun(uid, cause, stage, latency_ms, error)

    def event(self, event: Event) -> None:
        self.publisher.publish(event_post(event))

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        self.publisher.safe_state(reason, source_id)

    def set_state(self, status: Status) -> None:
        self.publisher.set_state(status)

    def metrics(self, m: Metrics) -> None:
        self.publisher.metrics(encode(dataclasses.replace(m, outputs=self.publisher.stats())))

    def take_outcomes(self) -> list[Outcome]:
        return self.herald.take_outcomes()

    def prepare(self, cfg: Config) -> None:
        self._prepared = (None if cfg.outputs == self.herald.cfg.outputs else
                          "outputs cannot change in a run without the sender process")

    def prepared(self) -> str | None | bool:
        return self._prepared

    def commit(self, cfg: Config) -> None:
        self.herald.configure(cfg)

    @property
    def output_stats(self) -> dict[str, Any]:
        return self.publisher.stats()

    @property
    def dead(self) -> bool:
        return self.publisher.dead

    def close(self) -> dict[str, Any]:
        self.herald.fire()
        self.herald.abandon("error", "no record was offered")   # a loop that said nothing
        self.publisher.close()
        return {"outputs": self.publisher.stats(), "fired": self.herald.fired,
                "late_ok": self.herald.late_ok, "priority": self.priority}


class SenderProcess:
    """The loop's side of the sender process: starts it, talks to it, never waits on it."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, board: np.ndarray,
                 shm: mmap.mmap, priority: str) -> None:
        self._proc, self._sock, self.board, self._shm = proc, sock, board, shm
        self.priority = priority
        # Grabber threads arm frames beside the loop: one message must not cut into another.
        self._send_lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._dead = False
        self._lost = False
        self._closed: dict[str, Any] | None = None
        self._prepared: str | None | bool = False
        self.output_stats: dict[str, Any] = {}   # the outputs' counters at the last metrics

    @classmethod
    def spawn(cls, cfg: Config, run_id: str, realtime: bool) -> SenderProcess:
        """Start the process; it opens the outputs while the loop loads its model. Call
        `wait_ready` before the first frame, or `close` to give up on it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
        memfd = os.memfd_create("edgert-board", os.MFD_CLOEXEC)
        os.ftruncate(memfd, BOARD_SLOTS * 8)
        shm = mmap.mmap(memfd, BOARD_SLOTS * 8)
        board = np.ndarray((BOARD_SLOTS,), np.float64, buffer=shm)
        board[:] = new_board()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgert.publish.sender", str(theirs.fileno()), str(memfd)],
                pass_fds=(theirs.fileno(), memfd), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
            os.close(memfd)
        ours.sendall(pickle.dumps((cfg, run_id, realtime, logging.getLogger().level)))
        return cls(proc, ours, board, shm, "starting")

    def wait_ready(self, timeout: float = START_S) -> None:
        """Until the outputs are open; a ConfigError from opening one (a missing serial port, a
        bad TLS file) comes back here as it would in-process."""
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(MAX_MSG)
            reply = pickle.loads(data) if data else ("fatal", "it exited")
        except (socket.timeout, OSError, EOFError) as e:
            reply = ("fatal", f"no answer ({e})")
        self._sock.settimeout(None)
        if reply[0] == "ready":
            self.priority = reply[1]
            return
        self._lost = True
        self._sock.close()
        self._proc.wait(10)
        if reply[0] == "error":
            raise ConfigError(*reply[1:])
        raise EdgertError(f"the sender process could not start: {reply[1]}")

    def _send(self, msg: tuple) -> None:
        if self._lost:
            return
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self._lost = True
            log.error("the sender process is gone (%s): no record can be published", e)

    def arm(self, armed: Armed) -> None:
        self._send(("arm", armed))

    def drop(self, uid: int) -> None:
        self._send(("drop", uid))

    def offer(self, offer: Offer) -> None:
        self._send(("offer", offer))

    def overrun(self, uid: int, cause: str, stage: str, latency_ms: dict[str, float],
                error: str | None = None) -> None:
        self._send(("overrun", uid, cause, stage, latency_ms, error))

    def event(self, event: Event) -> None:
        self._send(("event", event))

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        self._send(("safe", reason, source_id))

    def set_state(self, status: Status) -> None:
        self._send(("state", status))

    def metrics(self, m: Metrics) -> None:
        self._send(("metrics", m))

    def prepare(self, cfg: Config) -> None:
        self._prepared = False
        self._send(("prepare", cfg))

    def prepared(self) -> str | None | bool:
        self._receive()
        if self._lost and self._prepared is False:
            return "the sender process is gone"
        return self._prepared

    def commit(self, cfg: Config) -> None:
        self._send(("commit", cfg))

    def _receive(self, block: bool = False, timeout: float | None = None) -> bool:
        """Read what the sender said; True once it has closed."""
        while self._closed is None:
            try:
                if block:
                    self._sock.settimeout(timeout)
                    data = self._sock.recv(MAX_MSG)
                else:
                    data = self._sock.recv(MAX_MSG, socket.MSG_DONTWAIT)
            except (BlockingIOError, socket.timeout):
                return False
            except OSError:
                data = b""
            if not data:
                self._lost = True
                self._closed = {}
                break
            msg = pickle.loads(data)
            if msg[0] == "outcomes":
                self._outcomes.extend(msg[1])
            elif msg[0] == "stats":
                self.output_stats = msg[1]
            elif msg[0] == "dead":
                self._dead = True
            elif msg[0] == "prepared":
                self._prepared = msg[1]
            elif msg[0] == "closed":
                self._outcomes.extend(msg[2])
                self._closed = msg[1]
        return self._closed is not None

    def take_outcomes(self) -> list[Outcome]:
        self._receive()
        out, self._outcomes = self._outcomes, []
        return out

    @property
    def dead(self) -> bool:
        self._receive()
        return self._dead or self._lost

    def close(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the sender to finish: it sends what is owed, closes every output (each within
        its own limit) and answers with its counts."""
        self._send(("close",))
        if not self._lost:
            self._receive(block=True, timeout=timeout)
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        stats = self._closed or {}
        stats.setdefault("priority", self.priority)
        return stats


# The sender process itself.

def _realtime(priority: int) -> bool:
    try:   # pid 0: the calling thread; threads it starts later inherit the policy
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (AttributeError, PermissionError, OSError):
        return False


class _Sender:
    """The process's one dispatching thread: messages in, records out, `fire` at deadlines."""

    def __init__(self, sock: socket.socket, herald: Herald, publisher: Publisher,
                 bound: list[tuple[OutputConfig, Output]], realtime: bool = False) -> None:
        self.sock, self.herald, self.publisher = sock, herald, publisher
        self.bound, self.realtime = bound, realtime   # each output with the config it came from
        self._pending: list[tuple] = []   # replies the loop has not taken yet
        self._told_dead = False
        self._swap: OutputSwap | None = None

    def run(self) -> int:
        herald, clock = self.herald, self.herald.clock
        while True:
            due = herald.due()
            wait = None if due == float("inf") else max(0.0, due - clock.now())
            if self._pending or self._swap is not None:
                wait = 0.05 if wait is None else min(wait, 0.05)
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                try:
                    data = self.sock.recv(MAX_MSG)
                except OSError:
                    data = b""
                if not data:
                    return self._orphaned()
                msg = pickle.loads(data)
                if msg[0] == "close":
                    return self._close()
                self._handle(msg)
            herald.fire()
            self._swapped()
            self._reply()

    def _handle(self, msg: tuple) -> None:
        kind, herald = msg[0], self.herald
        if kind == "arm":
            herald.arm(msg[1])
        elif kind == "drop":
            herald.drop(msg[1])
        elif kind == "offer":
            herald.offer(msg[1])
        elif kind == "overrun":
            herald.overrun(*msg[1:])
        elif kind == "event":
            self.publisher.publish(event_post(msg[1]))
        elif kind == "safe":
            self.publisher.safe_state(*msg[1:])
        elif kind == "state":
            self.publisher.set_state(msg[1])
        elif kind == "metrics":
            m = dataclasses.replace(msg[1], outputs=self.publisher.stats())
            self.publisher.metrics(encode(m))
            self._pending.append(("stats", m.outputs))   # the same figures, for /metrics
        elif kind == "prepare":
            self._prepare(msg[1])
        elif kind == "commit":
            herald.configure(msg[1])
            if self._swap is not None:
                self.bound = self._swap.commit()
                self._swap = None

    def _prepare(self, cfg: Config) -> None:
        if cfg.outputs == self.herald.cfg.outputs or self._swap is not None:
            # A second prepare before the first's commit cannot happen: the loop waits.
            self._pending.append(("prepared", None))
            return
        from edgert.publish.factory import make_output
        from edgert.publish.swap import OutputSwap
        on_thread = (lambda: _realtime(RT_OUTPUTS)) if self.realtime else (lambda: None)
        self._swap = OutputSwap(self.bound, self.herald.cfg, cfg, self.publisher, make_output,
                                on_thread)

    def _swapped(self) -> None:
        swap = self._swap
        if swap is None or not swap.done.is_set() or swap.reported:
            return
        swap.reported = True
        if swap.error is not None:
            log.error("reload: the new outputs could not open, the old ones stay: %s", swap.error)
            self.bound = swap.restore()
            self._swap = None
        self._pending.append(("prepared", swap.error))

    def _reply(self) -> None:
        outcomes = self.herald.take_outcomes()
        if outcomes:
            self._pending.append(("outcomes", outcomes))
        if not self._told_dead and self.publisher.dead:
            self._told_dead = True
            self._pending.append(("dead",))
        while self._pending:
            try:
                self.sock.send(pickle.dumps(self._pending[0]), socket.MSG_DONTWAIT)
            except BlockingIOError:   # the loop reads at its next frame; never wait for it
                return
            except OSError:
                self._pending.clear()
                return
            self._pending.pop(0)

    def _settle(self) -> None:
        """Ending during a reload's output swap: it finishes, so nothing it held is lost."""
        swap, self._swap = self._swap, None
        if swap is None or not swap.done.wait(SETTLE_S):
            return
        self.bound = swap.restore() if swap.error is not None else swap.commit()

    def _close(self) -> int:
        self.herald.fire()
        # The loop drops what its sources still held before it closes: anything owed now is
        # a frame it took and said nothing of.
        self.herald.abandon("error", "no record was offered")
        self._settle()
        self.publisher.close()
        stats = {"outputs": self.publisher.stats(), "fired": self.herald.fired,
                 "late_ok": self.herald.late_ok}
        rest = [o for m in self._pending if m[0] == "outcomes" for o in m[1]]
        self.sock.setblocking(True)
        try:
            self.sock.sendall(pickle.dumps(("closed", stats, rest + self.herald.take_outcomes())))
        except OSError:
            pass
        return 0

    def _orphaned(self) -> int:
        """The loop died (a crash, SIGKILL): what it had armed will never be offered, so it
        gets the policy's record now; then every output is closed as after a crash (MQTT
        leaves without its goodbye, so the broker publishes the Last Will)."""
        self.herald.abandon("error", "the loop has stopped")
        self._settle()
        for out in self.publisher.outputs:
            abandon = getattr(out, "abandon", None)
            try:
                abandon() if abandon is not None else out.close()
            except (OSError, ValueError) as e:
                log.warning("output %s failed to close: %s", out.name, e)
        return 0


def main(argv: list[str]) -> int:
    # The loop's process decides when to stop: Ctrl-C and systemd's SIGTERM reach the whole
    # group, and the sender must outlive the loop long enough to send what it is owed.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    shm = mmap.mmap(int(argv[1]), BOARD_SLOTS * 8)
    board = np.ndarray((BOARD_SLOTS,), np.float64, buffer=shm)
    cfg, run_id, realtime, level = pickle.loads(sock.recv(MAX_MSG))
    logging.basicConfig(level=level or logging.INFO, stream=sys.stderr,
                        format="edgert: %(levelname)s: %(message)s")
    rt = realtime and _realtime(RT_OUTPUTS)   # before the outputs start their threads
    sys.setswitchinterval(SWITCH_S)
    from edgert.publish.factory import make_outputs
    try:
        outputs = make_outputs(cfg)
    except ConfigError as e:
        sock.sendall(pickle.dumps(("error", e.file, e.key, e.problem, e.fix)))
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the loop, which exits 1
        sock.sendall(pickle.dumps(("fatal", f"{type(e).__name__}: {e}")))
        return 1
    rt = rt and _realtime(RT_PRIORITY)
    publisher = Publisher(outputs, [oc.sources for oc in cfg.outputs])
    herald = Herald(cfg, run_id, publisher, LIVE, board)
    sock.sendall(pickle.dumps(("ready", "realtime" if rt else "normal")))
    code = _Sender(sock, herald, publisher, list(zip(cfg.outputs, outputs)), rt).run()
    sys.stderr.flush()
    os._exit(code)   # output threads blocked on a reader that stopped must not hold the exit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
