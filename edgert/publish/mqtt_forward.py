"""The MQTT forwarder thread: disk queue → broker, in order, rate-limited, deleted on PUBACK.

The frame loop only appends to an in-memory hand-off; this thread writes QoS>=1 messages to
the SQLite store (publish/mqtt_store.py) in batches, sends them in id order while connected,
at most `inflight` unacknowledged and at most `max_rate` a second, and deletes a row once the
broker's PUBACK arrived (paho's on_publish, on its network thread, queues the mid here), in the
same transaction as the next insert so that a steady stream costs one fsync per record.
QoS 0 messages skip the disk: sent while connected, counted as `offline` otherwise.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from typing import Any, Callable

import paho.mqtt.client as mqtt

from edgert.config.types import MqttConfig
from edgert.clock import monotonic
from edgert.publish.mqtt_store import Store

log = logging.getLogger("edgert.publish")

HANDOFF_MAX = 10_000     # messages waiting for the thread; the oldest make room (counted)
FETCH_MAX = 256          # rows read from disk per wake-up
RESEND_GRACE_S = 5.0     # after a reconnect, paho resends what was in flight; new rows wait for it
IDLE_WAKE_S = 1.0
DELETE_LINGER_S = 0.5    # acknowledged rows are deleted with the next insert, or after this:
DELETE_BATCH = 512       # one fsync for both. A crash meanwhile only means a QoS 1 duplicate.


class Forwarder:
    """One thread between the hand-off queue, the disk queue and the paho client."""

    def __init__(self, name: str, cfg: MqttConfig, client: mqtt.Client, store: Store,
                 tick: Callable[[], None]) -> None:
        self.name, self.cfg, self.client, self.store = name, cfg, client, store
        self._tick = tick                             # at every wake-up: status with new drops
        self._cond = threading.Condition()
        self._handoff: deque[tuple[str, bytes, int]] = deque()
        self._acks: deque[int] = deque()
        self._inflight: dict[int, int] = {}           # paho mid → row id
        self._acked: list[int] = []                   # row ids acknowledged, not yet deleted
        self._acked_since = 0.0
        self._cursor = 0                              # the last row id handed to paho
        self._connected = False
        self._connected_at = 0.0
        self._resending = False                       # paho owns older unacked rows: let it go first
        self._closing = False
        self._close_by = 0.0
        self._tokens = 1.0
        self._refilled = monotonic()
        self._thread: threading.Thread | None = None
        self._logged_drops = 0
        self.sent = 0          # handed to the broker (QoS>=1 rows and QoS 0 messages)
        self.acked = 0         # QoS>=1 rows the broker acknowledged, deleted from disk
        self.dropped = 0       # queue full (disk bound or hand-off): the oldest made room
        self.offline = 0       # QoS 0 messages while disconnected
        self.failures = 0      # disk errors and refused publishes
        self.left = 0          # rows still on disk at close, for the next run

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"edgert-{self.name}", daemon=True)
        self._thread.start()

    def put(self, topic: str, payload: bytes, qos: int) -> None:
        """From the frame loop: queue one message; never blocks, never touches disk or socket."""
        with self._cond:
            if self._closing:
                raise ValueError(f"{self.name} is closed")
            if len(self._handoff) >= HANDOFF_MAX:
                self._handoff.popleft()
                self.dropped += 1
            self._handoff.append((topic, payload, qos))
            self._cond.notify()

    # From paho's network thread.

    def connected(self, up: bool) -> None:
        with self._cond:
            if up:
                self._connected, self._connected_at = True, monotonic()
            else:
                self._connected = False
                self._resending = bool(self._inflight)
            self._cond.notify()

    def acked_mid(self, mid: int) -> None:
        with self._cond:
            self._acks.append(mid)
            self._cond.notify()

    # From the caller of close.

    def close(self, timeout: float) -> None:
        """Deliver what is queued for up to `timeout` seconds; the rest stays on disk."""
        with self._cond:
            if self._closing:
                return
            self._closing, self._close_by = True, monotonic() + timeout
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout + 5.0)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = max(0, self.store.count - len(self._acked)) + len(self._handoff)
            return {"connected": self._connected, "queued": queued,
                    "inflight": len(self._inflight), "sent": self.sent, "acked": self.acked,
                    "dropped": self.dropped, "offline": self.offline, "failures": self.failures}

    # The thread from here on.

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._ready():
                        self._cond.wait(self._wait_s())
                    batch, acks = list(self._handoff), list(self._acks)
                    self._handoff.clear()
                    self._acks.clear()
                    closing = self._closing
                self._ack(acks)
                self._store(batch, closing)
                self._forward()
                self._tick()
                if closing and (self._drained() or monotonic() >= self._close_by):
                    break
        except Exception as e:  # noqa: BLE001 - a broken disk must not kill the process silently
            self.failures += 1
            log.error("%s: the forwarder stopped (%s); decisions are no longer queued", self.name, e)
        finally:
            try:
                self._store([], True)
            finally:
                with self._cond:
                    self.left = self.store.count
                self.store.close()

    def _ready(self) -> bool:
        if self._acked and monotonic() >= self._acked_since + DELETE_LINGER_S:
            return True
        if self._handoff or self._acks or self._closing and (
                self._drained() or monotonic() >= self._close_by):
            return True
        return self._can_send() and self._refill() >= 1.0

    def _wait_s(self) -> float:
        wait = IDLE_WAKE_S
        if self._acked:
            wait = min(wait, max(0.001, self._acked_since + DELETE_LINGER_S - monotonic()))
        if self._closing:
            wait = min(wait, max(0.0, self._close_by - monotonic()))
        if self._can_send():
            wait = min(wait, max(0.001, (1.0 - self._tokens) / self.cfg.max_rate))
        return wait

    def _drained(self) -> bool:
        return not self._handoff and self.store.last_id <= self._cursor and not self._inflight

    def _can_send(self) -> bool:
        if not self._connected or len(self._inflight) >= self.cfg.inflight:
            return False
        if self._resending:
            if self._inflight and monotonic() < self._connected_at + RESEND_GRACE_S:
                return False
            self._resending = False
        return self.store.last_id > self._cursor

    def _refill(self) -> float:
        now = monotonic()
        burst = max(1.0, self.cfg.max_rate / 10)   # at most 100 ms worth at once
        self._tokens = min(burst, self._tokens + (now - self._refilled) * self.cfg.max_rate)
        self._refilled = now
        return self._tokens

    def _store(self, batch: list[tuple[str, bytes, int]], closing: bool) -> None:
        """QoS>=1 messages to disk, together with the deletion of acknowledged rows."""
        rows = []
        for topic, payload, qos in batch:
            if qos >= 1:
                rows.append((topic, payload, qos))
            elif self._is_connected():
                self.client.publish(topic, payload, 0)
                self.sent += 1
            else:
                self.offline += 1
        acked = self._acked if (rows or closing or len(self._acked) >= DELETE_BATCH or (
            self._acked and monotonic() >= self._acked_since + DELETE_LINGER_S)) else []
        if not rows and not acked:
            return
        try:
            dropped = self.store.write(rows, acked)
        except sqlite3.Error as e:   # disk full, I/O error: these messages are lost, counted
            with self._cond:
                self.failures += 1
                self.dropped += len(rows)
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning("%s: cannot write the queue %s (%s): %d messages dropped so far",
                            self.name, self.store.path, e, self.dropped)
            return
        with self._cond:
            if acked:
                self._acked = []
            self.dropped += dropped
        if dropped and (self._logged_drops == 0
                        or self.dropped // 10_000 > self._logged_drops // 10_000):
            log.warning("%s: the queue is full (%d messages at %s): dropped the oldest, %d "
                        "so far", self.name, self.cfg.queue_max, self.store.path, self.dropped)
            self._logged_drops = self.dropped

    def _ack(self, mids: list[int]) -> None:
        with self._cond:
            ids = [self._inflight.pop(m) for m in mids if m in self._inflight]
            if ids and not self._acked:
                self._acked_since = monotonic()
            self._acked.extend(ids)
            self.acked += len(ids)

    def _forward(self) -> None:
        with self._cond:
            if not self._can_send():
                return
            room = min(self.cfg.inflight - len(self._inflight), int(self._refill()), FETCH_MAX)
        if room <= 0:
            return
        # paho is called without our lock: its network thread holds paho's own lock while it
        # calls on_publish (acked_mid), which takes ours.
        for row_id, topic, payload, qos in self.store.after(self._cursor, room):
            if not self._is_connected():
                return   # rows from the cursor on wait for the next connection
            info = self.client.publish(topic, payload, qos)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # MQTT_ERR_NO_CONN: paho keeps a QoS>=1 message and sends it on reconnect.
                self.failures += 1
                log.warning("%s: publish refused (%s); retrying", self.name,
                            mqtt.error_string(info.rc))
                return
            with self._cond:
                self._inflight[info.mid] = row_id
                self._cursor = row_id
                self._tokens -= 1.0
                self.sent += 1

    def _is_connected(self) -> bool:
        with self._cond:
            return self._connected
