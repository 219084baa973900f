"""The serial writer thread: the frame loop only queues, so a dead or slow line never holds it up.

The thread owns the port: it writes queued frames in order, waits for acks and resends,
sends a heartbeat when the line has been idle, and reopens the port with backoff when it
fails (a USB adapter unplugged, a pty whose other end went away). Nothing is lost silently:
every frame that does not go out is counted under the reason why.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from serial import PortNotOpenError, SerialBase, SerialTimeoutException

from edgert.config.types import SerialConfig
from edgert.clock import monotonic
from edgert.publish.serial_frame import (ACK, DECISION, HEARTBEAT, SAFE_STATE, TYPE_NAMES,
                                         Deframer)

log = logging.getLogger("edgert.publish")

READ_POLL_S = 0.01   # the longest a read for acks blocks, so a newer frame is noticed soon


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded frame waiting for the line."""

    type: int        # frame type code
    seq: int
    data: bytes      # encoded, delimiter included
    ack: bool        # wait for the actuator's ack, resend without one
    not_after: float = float("inf")   # an `ok` decision is not sent once this instant passed …
    fallback: bytes | None = None     # … but this frame (the policy's decision) instead


class Link:
    """A bounded queue drained by one thread that owns the port."""

    def __init__(self, name: str, cfg: SerialConfig, opener: Callable[[], SerialBase],
                 port: SerialBase | None, heartbeat: Callable[[], bytes]) -> None:
        self.name, self.cfg = name, cfg
        self._open, self._port, self._heartbeat = opener, port, heartbeat
        self._queue: deque[Outgoing] = deque(maxlen=cfg.queue)
        self._cond = threading.Condition()
        self._closing = False
        self._final: Outgoing | None = None     # the shutdown frame, sent after the queue
        self._thread: threading.Thread | None = None
        self._deframer = Deframer()
        self._resync = port is not None     # 0x00 first: ends whatever half frame preceded us
        self._backoff = cfg.reopen_initial_s
        self._last_write = monotonic()
        self._timing_out = False
        self._logged_drops = 0
        self.state = "open" if port is not None else "waiting"
        self.sent = {TYPE_NAMES[t]: 0 for t in (DECISION, HEARTBEAT, SAFE_STATE)}
        self.dropped = 0          # the queue was full: the oldest frame made room
        self.offline = 0          # discarded or lost while the port was down
        self.write_timeouts = 0   # a write not done within write_timeout_ms: that frame is lost
        self.failures = 0         # failed opens and writes
        self.reopens = 0          # the port came back after failures
        self.retries = self.acked = self.unacked = 0
        self.stale = 0            # an `ok` decision that waited in the queue past its deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"edgert-{self.name}", daemon=True)
        self._thread.start()

    def put(self, item: Outgoing) -> None:
        """Queue a frame; never blocks. When full, the oldest frame is dropped (and counted)."""
        with self._cond:
            if self._closing:
                raise ValueError(f"{self.name} is closed")
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(item)
            self._cond.notify()

    def close(self, final: Outgoing | None, timeout: float) -> None:
        """Send what is queued, then `final`; give up after `timeout` seconds."""
        with self._cond:
            if self._closing:
                return
            self._closing, self._final = True, final
            self._cond.notify()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():   # stuck in a write the device does not take: abort it
            port = self._port
            try:
                if port is not None:
                    port.cancel_write()
                    port.cancel_read()
            except Exception:   # noqa: BLE001 - best effort on a port that is failing anyway
                pass
            thread.join(1.0)
            log.warning("%s: gave up on the line while closing; the shutdown frame may not "
                        "have gone out", self.name)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"state": self.state, "sent": dict(self.sent), "dropped": self.dropped,
                    "offline": self.offline, "write_timeouts": self.write_timeouts,
                    "failures": self.failures, "reopens": self.reopens,
                    "retries": self.retries, "acked": self.acked, "unacked": self.unacked,
                    "stale": self.stale,
                    "queued": len(self._queue)}

    # The writer thread from here on.

    def _run(self) -> None:
        try:
            while True:
                if self._port is None:
                    if not self._reopen():
                        break
                    continue
                item = self._next()
                if item is None:
                    break
                try:
                    self._deliver(item)
                except Exception as e:  # noqa: BLE001 - any handler's failure is an outage
                    self._lost(item, e)  # (loop:// raises queue.Full, socket:// OSErrors …)
        finally:
            with self._cond:
                self.offline += len(self._queue) + (self._final is not None)
                self._queue.clear()
                self._final = None
                self.state = "closed"
            self._close_port()

    def _next(self) -> Outgoing | None:
        """The next frame to write: queued, else the final one when closing, else a heartbeat."""
        self._log_drops()
        with self._cond:
            while True:
                if self._queue:
                    return self._queue.popleft()
                if self._closing:
                    final, self._final = self._final, None
                    return final
                wait = self._last_write + self.cfg.heartbeat_ms / 1e3 - monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
        return Outgoing(HEARTBEAT, 0, self._heartbeat(), False)

    def _deliver(self, item: Outgoing) -> None:
        if monotonic() >= item.not_after:   # an `ok` that waited past its deadline: not sent
            self.stale += 1
            if item.fallback is None:
                return
            item = Outgoing(item.type, item.seq, item.fallback, item.ack)
        attempts = 1 + (self.cfg.ack_retries if item.ack else 0)
        written = False
        for attempt in range(attempts):
            if attempt:
                if self._superseded():
                    break   # a newer command is waiting: resending this one would only delay it
                self.retries += 1
            if not self._write(item.data):
                continue
            if not written:
                written = True
                self.sent[TYPE_NAMES[item.type]] += 1
            if not item.ack:
                self._drain()
                return
            if self._await_ack(item):
                self.acked += 1
                return
        if written and item.ack:
            self.unacked += 1
            if self.unacked == 1 or self.unacked % 1000 == 0:
                log.warning("%s: %s seq %d not acknowledged (%d so far)", self.name,
                            TYPE_NAMES[item.type], item.seq, self.unacked)

    def _write(self, data: bytes) -> bool:
        """Write one frame; False after a write timeout (counted), raise when the port failed."""
        port = self._open_port()
        try:
            port.write(b"\x00" + data if self._resync else data)
        except SerialTimeoutException:
            self.write_timeouts += 1
            self._resync = True   # part of the frame may be out: end it before the next
            if not self._timing_out:
                self._timing_out = True
                log.warning("%s: a write timed out after %g ms: the device is not reading "
                            "(flow control, or nothing at the other end); frames are lost "
                            "until it does", self.name, self.cfg.write_timeout_ms)
            if self._closing:   # everything still queued is stale; make way for the final frame
                with self._cond:
                    self.offline += len(self._queue)
                    self._queue.clear()
            return False
        self._resync = False
        self._last_write = monotonic()
        if self._timing_out:
            self._timing_out = False
            log.info("%s: the device is reading again (%d write timeouts so far)", self.name,
                     self.write_timeouts)
        return True

    def _await_ack(self, item: Outgoing) -> bool:
        port = self._open_port()
        until = monotonic() + self.cfg.ack_timeout_ms / 1e3
        while monotonic() < until:
            data = port.read(max(1, port.in_waiting))   # returns within READ_POLL_S
            for frame in self._deframer.feed(data):
                if (frame is not None and frame.type == ACK and frame.seq == item.seq
                        and frame.status == item.type):
                    return True
        return False

    def _drain(self) -> None:
        """Read what the device sent (loop:// echoes every byte): unread, it would fill a buffer."""
        port = self._open_port()
        waiting = port.in_waiting
        if waiting:
            for _ in self._deframer.feed(port.read(waiting)):
                pass

    def _superseded(self) -> bool:
        with self._cond:
            return self._final is not None or any(
                i.type in (DECISION, SAFE_STATE) for i in self._queue)

    def _lost(self, item: Outgoing, error: Exception) -> None:
        """The port failed: count it, log the outage once, and let the thread reopen it."""
        self.failures += 1
        self._close_port()
        with self._cond:
            self.offline += 1
            self.state = "reopening"
        self._backoff = self.cfg.reopen_initial_s
        log.warning("%s: %s; reopening with backoff until it comes back (frames are dropped "
                    "meanwhile)", self.name, str(error) or type(error).__name__)

    def _reopen(self) -> bool:
        """Wait out the backoff and try the port once; False when closing and it is still down."""
        until = monotonic() + self._backoff
        with self._cond:
            while not self._closing:   # every send notifies: wait out the whole backoff
                left = until - monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            closing = self._closing
            # Frames that queued while the port was down are stale by now: an actuator must
            # not act on them late. The final frame (closing) is kept apart and still tried.
            self.offline += len(self._queue)
            self._queue.clear()
        try:
            port = self._open()
        except Exception as e:  # noqa: BLE001 - SerialException, OSError, ValueError from handlers
            self.failures += 1
            self._backoff = min(self._backoff * 2, self.cfg.reopen_max_s)
            log.debug("%s: reopen failed: %s", self.name, e)
            return not closing
        self._port, self._resync = port, True
        self._backoff = self.cfg.reopen_initial_s
        self._last_write = monotonic()
        self._deframer = Deframer()
        with self._cond:
            self.reopens += 1
            self.state = "open"
        log.info("%s: port open, frames flow again (%d failures so far)", self.name, self.failures)
        return True

    def _open_port(self) -> SerialBase:
        if self._port is None:   # never while delivering: narrows the type, unlike assert under -O
            raise PortNotOpenError()
        return self._port

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a port that already failed
                pass

    def _log_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._logged_drops and (self._logged_drops == 0
                                             or dropped // 1000 > self._logged_drops // 1000):
            log.warning("%s: %d frame(s) dropped so far: the queue of %d was full (the line is "
                        "slower than the decisions)", self.name, dropped, self.cfg.queue)
            self._logged_drops = dropped
