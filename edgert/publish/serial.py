"""Decisions to an actuator over a serial line, with a safe state it can rely on (docs/serial.md).

`send` turns a record into a compact frame and queues it for the writer thread (serial_link),
so it returns in microseconds whatever the line does. Safe-state frames go out on shutdown,
after `miss_streak` non-ok records in a row, and when the loop reports the source lost.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
from typing import Any

import serial

from edgert.config.types import SerialConfig
from edgert.clock import wall
from edgert.publish.serial_frame import (DECISION, FLAG_ACK, HEARTBEAT, OTHER_STATUS,
                                         REASON_CODES, SAFE_STATE, STATUS_CODES, SerialFrame,
                                         encode)
from edgert.publish.base import Post
from edgert.publish.serial_link import READ_POLL_S, Link, Outgoing

log = logging.getLogger("edgert.publish")

# Opening failures that waiting cannot fix: edgert refuses to start whatever on_missing says.
REFUSED = {errno.EACCES: "give the service user access to it (usually: add it to the dialout group)",
           errno.EPERM: "give the service user access to it (usually: add it to the dialout group)",
           errno.EAGAIN: "another process holds it; stop that process or use another port",
           errno.EBUSY: "another process holds it; stop that process or use another port"}
CLOSE_MARGIN_S = 1.0   # on top of one write (and its ack retries) for the shutdown frame


def open_port(cfg: SerialConfig) -> serial.SerialBase:
    """The port, configured; raises serial.SerialException (an OSError) when it cannot open."""
    # exclusive: a second edgert on the same device would interleave frames on the wire.
    return serial.serial_for_url(cfg.port, baudrate=cfg.baudrate, timeout=READ_POLL_S,
                                 write_timeout=cfg.write_timeout_ms / 1e3, exclusive=True)


def open_failure(cfg: SerialConfig, error: OSError) -> tuple[str, str]:
    """What went wrong opening the port and what to do, for the one-sentence start-up error."""
    fix = REFUSED.get(getattr(error, "errno", None) or 0, 'plug the device in or fix the port, '
                      'or set on_missing = "wait" to start without it')
    return f"is {cfg.port!r}, which cannot be opened ({_reason(error)})", fix


def _reason(error: OSError) -> str:
    code = getattr(error, "errno", None)
    # pyserial's socket:// handler puts the cause last in its message and sets no errno.
    return os.strerror(code) if code else str(error).rsplit(": ", 1)[-1]


class SerialOutput:
    """Decision records as frames on a serial line; see docs/serial.md for the wire format."""

    def __init__(self, cfg: SerialConfig, name: str, safe_action: str,
                 port: serial.SerialBase | None) -> None:
        self.cfg, self.name, self.safe_action = cfg, name, safe_action
        self.link = Link(name, cfg, functools.partial(open_port, cfg), port, self._heartbeat)
        self._lock = threading.Lock()
        self._flags = FLAG_ACK if cfg.ack else 0
        self._last = (0, 0)     # seq and frame_id of the last decision, for the other frames
        self._streak = 0        # non-ok records in a row
        self._latched = 0       # the reason code of the safe state in force; 0: none
        self._closed = False

    @classmethod
    def open(cls, cfg: SerialConfig, name: str, safe_action: str) -> SerialOutput:
        """Open the port and start the writer; a device missing now is waited for, or refused
        (serial.SerialException) as `on_missing` says."""
        try:
            port = open_port(cfg)
        except serial.SerialException as e:
            if cfg.on_missing == "fail" or getattr(e, "errno", None) in REFUSED:
                raise
            log.warning("%s: cannot open it (%s); waiting for it (on_missing = \"wait\"), "
                        "frames are dropped until it appears", name, _reason(e))
            port = None
        out = cls(cfg, name, safe_action, port)
        out.link.start()
        return out

    def send(self, post: Post) -> None:
        if post.kind != "decision":   # the serial frame carries decisions only
            return
        status, seq, frame_id = post.status, post.seq, post.frame_id
        data = self._decision_frame(post)
        fallback = self._decision_frame(post.fallback) if post.fallback is not None else None
        with self._lock:
            self._last = (seq, frame_id)
            self.link.put(Outgoing(DECISION, seq, data, self.cfg.ack, post.not_after, fallback))
            if status == "ok":
                self._streak, self._latched = 0, 0
                return
            self._streak += 1
            if self._streak == self.cfg.miss_streak:
                self.link.put(self._safe_frame("misses"))

    def _decision_frame(self, post: Post) -> bytes:
        return encode(SerialFrame(DECISION, post.seq, STATUS_CODES.get(post.status, OTHER_STATUS),
                                  post.action, post.frame_id, round(post.captured_at * 1e3),
                                  self._flags))

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        """Tell the actuator to go to its safe state (`reason`: source_lost, …). A repeat with
        no `ok` decision in between sends nothing: heartbeats keep repeating the state. The
        publisher asks only outputs routed to `source_id`, so the frame does not name it."""
        with self._lock:
            if self._latched != REASON_CODES.get(reason, REASON_CODES["other"]):
                self.link.put(self._safe_frame(reason))

    def close(self) -> None:
        """Send what is queued and a final safe_state frame, then close the port (bounded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            final = self._safe_frame("shutdown")
        cfg = self.cfg
        one = (cfg.write_timeout_ms + (cfg.ack_timeout_ms if cfg.ack else 0.0)) / 1e3
        self.link.close(final, CLOSE_MARGIN_S + one * (1 + (cfg.ack_retries if cfg.ack else 0)))
        s = self.link.stats()
        log.info("%s: %s frames sent (%s); dropped %d (queue full), %d (port down); %d write "
                 "timeouts, %d failures, %d reopens%s", self.name, sum(s["sent"].values()),
                 ", ".join(f"{n} {k}" for k, n in s["sent"].items()), s["dropped"], s["offline"],
                 s["write_timeouts"], s["failures"], s["reopens"],
                 f"; acked {s['acked']}, unacked {s['unacked']}, retries {s['retries']}"
                 if cfg.ack else "")

    def stats(self) -> dict[str, Any]:
        return {"port": self.cfg.port, **self.link.stats()}

    def _safe_frame(self, reason: str) -> Outgoing:
        """A safe_state frame carrying the configured safe action; latches until an `ok`."""
        code = REASON_CODES.get(reason, REASON_CODES["other"])
        seq, frame_id = self._last
        self._latched = code
        data = encode(SerialFrame(SAFE_STATE, seq, code, self.safe_action, frame_id,
                                  round(wall() * 1e3), self._flags))
        return Outgoing(SAFE_STATE, seq, data, self.cfg.ack)

    def _heartbeat(self) -> bytes:
        """Called by the writer thread when the line has been idle for heartbeat_ms."""
        seq, frame_id = self._last
        return encode(SerialFrame(HEARTBEAT, seq, self._latched, "", frame_id, round(wall() * 1e3)))
