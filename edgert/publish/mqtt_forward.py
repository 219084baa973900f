"""The MQTT forwarder: live decisions at once, the backlog beside them at `max_rate`, rows deleted on PUBACK.

`put` runs on the publishing thread (the herald): it inserts a QoS>=1 message into the disk
queue (publish/mqtt_store.py) before returning, so a crash of any process after that loses
nothing, then hands it to this thread. While connected, a message handed over goes out at once
(live); rows that were not sent live (queued while disconnected, or by an earlier run) are the
backlog, sent in id order at most `max_rate` a second and `inflight` unacknowledged, and
dropped (counted `expired`) once older than `backlog_max_age_s`. A PUBACK deletes the row; an
MQTT 5 PUBACK with a failure reason (an ACL deny) is counted `refused`, logged, and the row is
dropped too: the broker would refuse it again. A full disk is counted and recovered from here
(log checkpoint, oldest rows dropped), while messages go out without the queue.
QoS 0 messages skip the disk: sent while connected, counted as `offline` otherwise.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from typing import Any, Callable

import paho.mqtt.client as mqtt

from edgert.clock import monotonic, wall
from edgert.config.types import MqttConfig
from edgert.publish.mqtt_store import Store

log = logging.getLogger("edgert.publish")

HANDOFF_MAX = 10_000     # live messages waiting for the thread; beyond, left to the backlog
FETCH_MAX = 256          # rows read from disk per wake-up
RESEND_GRACE_S = 5.0     # after a reconnect, paho resends what was in flight; the backlog waits
IDLE_WAKE_S = 1.0
DELETE_LINGER_S = 0.5    # acknowledged rows are deleted in batches, at most this late
DELETE_BATCH = 256
FULL_RETRY_S = (1.0, 30.0)   # a full disk is retried with backoff between these
ROOM_FRACTION = 0.1      # of the rows on disk, dropped to make room on a full disk

Live = tuple["int | None", str, bytes, int]   # row id (None: not on disk), topic, payload, qos


class Forwarder:
    """One thread between the disk queue and the paho client; see the module docstring."""

    def __init__(self, name: str, cfg: MqttConfig, client: mqtt.Client, store: Store,
                 tick: Callable[[], None]) -> None:
        self.name, self.cfg, self.client, self.store = name, cfg, client, store
        self._tick = tick
        self._cond = threading.Condition()
        self._live: deque[Live] = deque()
        self._acks: deque[tuple[int, str | None]] = deque()
        self._inflight: dict[int, tuple[int | None, bool]] = {}   # mid → row id, is backlog
        self._backlog_inflight = 0
        self._sent_live: set[int] = set()     # row ids sent live: the backlog skips them
        self._acked: list[int] = []           # row ids done with, not yet deleted
        self._acked_since = 0.0
        self._cursor = 0                      # the last backlog row id handed to paho
        self._connected = False
        self._connected_at = 0.0
        self._resending = False
        self._closing = False
        self._close_by = 0.0
        self._tokens = 1.0
        self._refilled = monotonic()
        self._synced_at = monotonic()
        self._full_since: float | None = None   # the disk refused a write: publish without it
        self._full_retry_at = 0.0
        self._full_wait = FULL_RETRY_S[0]
        self._recovered_at = -1e9
        self._thread: threading.Thread | None = None
        self._logged: dict[str, int] = {}
        self.sent = 0          # handed to the broker
        self.acked = 0         # acknowledged by the broker
        self.dropped = 0       # queue bound or full disk: the oldest made room
        self.offline = 0       # QoS 0 while disconnected
        self.unqueued = 0      # published without the queue while the disk was full
        self.lost = 0          # neither queued nor sent: the disk full and the broker away
        self.refused = 0       # PUBACK with a failure reason (MQTT 5): not a delivery
        self.expired = 0       # backlog older than backlog_max_age_s, dropped
        self.damaged = 0       # rows failing their integrity check, dropped unsent
        self.disk_full = 0     # writes the disk refused
        self.failures = 0      # other disk errors and refused publishes
        self.syncs = 0         # group commits (each fsyncs the log)
        self.left = 0          # rows still on disk at close, for the next run

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"edgert-{self.name}", daemon=True)
        self._thread.start()

    # From the publishing thread.

    def put(self, topic: str, payload: bytes, qos: int, captured_at: float) -> None:
        """Queue one message on disk (QoS>=1) and hand it over; never waits on the network,
        and on the disk only for its own insert."""
        if self._closing:
            raise ValueError(f"{self.name} is closed")
        row: int | None = None
        if qos >= 1 and self._full_since is None:
            try:
                row, dropped = self.store.insert(topic, payload, qos, captured_at)
                if dropped:
                    self._dropped(dropped, "the queue is full (%d messages)" % self.cfg.queue_max)
            except sqlite3.Error as e:
                self._disk_refused(e)
        with self._cond:
            if len(self._live) >= HANDOFF_MAX:   # the thread is stuck: disk rows wait as backlog
                old = self._live.popleft()
                if old[0] is None:
                    self.lost += 1
            self._live.append((row, topic, payload, qos))
            self._cond.notify()

    def _disk_refused(self, e: sqlite3.Error) -> None:
        with self._cond:
            self.disk_full += 1
            if self._full_since is None:
                now = self._full_since = monotonic()
                if now - self._recovered_at < 60.0:   # full again soon after: back off further
                    self._full_wait = min(FULL_RETRY_S[1], self._full_wait * 2)
                else:
                    self._full_wait = FULL_RETRY_S[0]
                # The first time, room is made at once; a disk that fills again waits longer.
                self._full_retry_at = now if self._full_wait == FULL_RETRY_S[0] else (
                    now + self._full_wait)
        self._say("full", "%s: cannot write the queue %s (%s): making room; meanwhile decisions "
                  "go to the broker without the queue (%d refused writes so far)",
                  self.name, self.store.path, e, self.disk_full)

    # From paho's network thread.

    def connected(self, up: bool) -> None:
        with self._cond:
            if up:
                self._connected, self._connected_at = True, monotonic()
            else:
                self._connected = False
                self._resending = bool(self._inflight)
            self._cond.notify()

    def acked_mid(self, mid: int, failure: str | None = None) -> None:
        with self._cond:
            self._acks.append((mid, failure))
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
            queued = max(0, self.store.count - len(self._acked))
            out = {"connected": self._connected, "queued": queued,
                   "inflight": len(self._inflight), "sent": self.sent, "acked": self.acked,
                   "dropped": self.dropped, "offline": self.offline, "refused": self.refused,
                   "expired": self.expired, "damaged": self.damaged, "unqueued": self.unqueued,
                   "lost": self.lost, "disk_full": self.disk_full, "failures": self.failures,
                   "syncs": self.syncs, "disk": "full" if self._full_since is not None else "ok"}
        if self.store.damage is not None:
            out["queue_damaged"] = self.store.damage.as_dict()
        return out

    # The thread from here on.

    def _run(self) -> None:
        closing = False
        try:
            while True:
                with self._cond:
                    while not self._ready():
                        self._cond.wait(self._wait_s())
                    live, acks = list(self._live), list(self._acks)
                    self._live.clear()
                    self._acks.clear()
                    closing = self._closing
                self._ack(acks)
                self._send_live(live)
                self._disk(closing)
                self._forward()
                self._tick()
                if closing and (self._drained() or monotonic() >= self._close_by):
                    break
        except Exception as e:  # noqa: BLE001 - must not kill the process silently
            self.failures += 1
            log.error("%s: the forwarder stopped (%s); queued decisions wait for the next run",
                      self.name, e)
        finally:
            try:
                self._delete(closing=True)
                if self.store.unsynced:
                    self.store.sync()
            except sqlite3.Error:
                pass
            finally:
                with self._cond:
                    self.left = self.store.count
                self.store.close()

    def _ready(self) -> bool:
        now = monotonic()
        if self._live or self._acks or self._closing and (self._drained() or now >= self._close_by):
            return True
        if self._full_since is not None:   # the disk waits for its retry, nothing else does
            if now >= self._full_retry_at:
                return True
        elif self._acked and now >= self._acked_since + DELETE_LINGER_S:
            return True
        elif self.store.unsynced and now >= self._synced_at + self.cfg.queue_sync:
            return True
        return self._can_send() and self._refill() >= 1.0

    def _wait_s(self) -> float:
        now = monotonic()
        wait = IDLE_WAKE_S
        if self._full_since is not None:
            wait = min(wait, self._full_retry_at - now)
        else:
            if self._acked:
                wait = min(wait, self._acked_since + DELETE_LINGER_S - now)
            if self.store.unsynced:
                wait = min(wait, self._synced_at + self.cfg.queue_sync - now)
        if self._closing:
            wait = min(wait, self._close_by - now)
        if self._can_send():
            wait = min(wait, (1.0 - self._tokens) / self.cfg.max_rate)
        return max(0.001, wait)

    def _drained(self) -> bool:
        return not self._live and self.store.last_id <= self._cursor and not self._inflight

    def _can_send(self) -> bool:
        """Whether a backlog row may go now."""
        if not self._connected or self._backlog_inflight >= self.cfg.inflight:
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

    def _send_live(self, live: list[Live]) -> None:
        """Live messages go out now, whatever the backlog; while disconnected a queued one is
        left to the backlog."""
        for row, topic, payload, qos in live:
            if not self._is_connected():
                if qos == 0:
                    self.offline += 1
                elif row is None:
                    self.lost += 1
                    self._say("lost", "%s: the disk is full and the broker away: %d decisions "
                              "could be neither queued nor sent", self.name, self.lost)
                continue
            if row is not None and row <= self._cursor:
                continue   # the backlog has sent it already
            with self._cond:
                if row is not None and row == self._cursor + 1:
                    self._cursor = row    # no backlog before it: the cursor follows live rows
                elif row is not None:
                    self._sent_live.add(row)
            info = self.client.publish(topic, payload, qos)
            self.sent += 1
            if row is None and qos >= 1:
                self.unqueued += 1
            if qos >= 1 and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                with self._cond:
                    self._inflight[info.mid] = (row, False)
            elif qos >= 1:   # the row stays on disk: the next run sends it
                self.failures += 1

    def _ack(self, acks: list[tuple[int, str | None]]) -> None:
        for mid, failure in acks:
            with self._cond:
                entry = self._inflight.pop(mid, None)
                if entry is None:
                    continue
                row, backlog = entry
                self._backlog_inflight -= backlog
                if failure is None:
                    self.acked += 1
                else:
                    self.refused += 1
                if row is not None:
                    if not self._acked:
                        self._acked_since = monotonic()
                    self._acked.append(row)
            if failure is not None:
                self._say("refused", "%s: the broker refused a message (%s): dropped, not "
                          "delivered (%d refused so far); check the broker's ACL for this "
                          "client and prefix", self.name, failure, self.refused)

    def _disk(self, closing: bool) -> None:
        """Deletions, group commits, checkpoints and recovery from a full disk; every failure
        here is counted and retried later, never at once."""
        now = monotonic()
        try:
            if self._full_since is not None:
                if now >= self._full_retry_at:
                    self._make_room()
                return
            if self._acked and (closing or len(self._acked) >= DELETE_BATCH
                                or now >= self._acked_since + DELETE_LINGER_S):
                self._delete(closing)
            if self.store.unsynced and now >= self._synced_at + self.cfg.queue_sync:
                self.store.sync()
                self.syncs += 1
                self._synced_at = now
            elif self.store.since_checkpoint >= self.store.checkpoint_every:
                self.store.sync()
                self.syncs += 1
        except sqlite3.Error as e:
            self._disk_refused(e)

    def _delete(self, closing: bool = False) -> None:
        with self._cond:
            ids, self._acked = self._acked, []
        if not ids:
            return
        try:
            self.store.delete(ids)
        except sqlite3.Error:
            with self._cond:
                self._acked = ids + self._acked
            raise
        with self._cond:
            self._sent_live.difference_update(ids)

    def _make_room(self) -> None:
        """The disk refused a write: truncate the log, drop acknowledged rows and the oldest
        ones, and try again later with backoff if that is not enough."""
        store = self.store
        try:
            store.free_reserve()
            store.checkpoint_every = max(8, min(store.checkpoint_every,
                                                store.since_checkpoint // 2))
            store.checkpoint()
            self._delete()
            n = store.drop_oldest(max(1, int(store.count * ROOM_FRACTION)))
            self._dropped(n, "the disk is full")
            store.checkpoint()
            store.make_reserve()
            with self._cond:
                self._full_since, self._recovered_at = None, monotonic()
            self._say("room", "%s: the queue %s has room again (%d messages on disk); decisions "
                      "are queued again", self.name, store.path, store.count)
        except sqlite3.Error as e:
            self.failures += 1
            with self._cond:
                self._full_retry_at = monotonic() + self._full_wait
                self._full_wait = min(FULL_RETRY_S[1], self._full_wait * 2)
            self._say("still-full", "%s: the disk under %s is still full (%s); retrying in "
                      "%.0f s", self.name, store.path, e, self._full_wait)

    def _dropped(self, n: int, why: str) -> None:
        if n <= 0:
            return
        with self._cond:
            self.dropped += n
        self._say("dropped", "%s: %s: dropped the oldest, %d so far", self.name, why, self.dropped)

    def _forward(self) -> None:
        """The backlog, in id order, rate-limited, skipping rows sent live or damaged, and
        dropping rows past their age."""
        with self._cond:
            if not self._can_send():
                return
            room = min(self.cfg.inflight - self._backlog_inflight, int(self._refill()), FETCH_MAX)
        if room <= 0:
            return
        try:
            rows, bad = self.store.after(self._cursor, room + len(self._sent_live))
        except sqlite3.Error as e:
            self.failures += 1
            self._say("read", "%s: cannot read the queue %s (%s)", self.name, self.store.path, e)
            return
        drop = list(bad)
        if bad:
            self.damaged += len(bad)
            self._say("damaged", "%s: %d queued messages failed their integrity check and were "
                      "dropped unsent (%d so far)", self.name, len(bad), self.damaged)
        max_age, now = self.cfg.backlog_max_age_s, wall()
        top = max([r[0] for r in rows] + bad, default=self._cursor)
        for row_id, topic, payload, qos, at in rows:
            if row_id in self._sent_live:
                continue
            if max_age and at and now - at > max_age:
                drop.append(row_id)
                self.expired += 1
                continue
            if room <= 0 or not self._is_connected():
                top = row_id - 1
                break
            info = self.client.publish(topic, payload, qos)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self.failures += 1
                self._say("publish", "%s: publish refused (%s); retrying", self.name,
                          mqtt.error_string(info.rc))
                top = row_id - 1
                break
            with self._cond:
                self._inflight[info.mid] = (row_id, True)
                self._backlog_inflight += 1
                self._tokens -= 1.0
                self.sent += 1
            room -= 1
        if self.expired and any(d not in bad for d in drop):
            self._say("expired", "%s: %d queued decisions were older than backlog_max_age_s "
                      "(%g s) and were dropped unsent", self.name, self.expired, max_age)
        with self._cond:
            self._cursor = max(self._cursor, top)
            if drop:
                if not self._acked:
                    self._acked_since = monotonic()
                self._acked.extend(drop)

    def _say(self, what: str, msg: str, *args: Any) -> None:
        """A warning the first time, then every 1000th time: counted always, never a flood."""
        n = self._logged[what] = self._logged.get(what, 0) + 1
        if n == 1 or n % 1000 == 0:
            log.warning(msg, *args)

    def _is_connected(self) -> bool:
        with self._cond:
            return self._connected
