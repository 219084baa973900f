"""Decisions and events to an MQTT broker, with a retained status and a Last Will (docs/mqtt.md).

`send` writes the record into the disk queue (no fsync: tens of microseconds) and hands it to the
forwarder (publish/mqtt_forward.py), so it is safe from a crash before any other output has it,
and never waits on the broker, up, down or half-open. paho's network loop runs on its
own thread (loop_start): it connects, reconnects with jittered exponential backoff, pings
through keepalive, and reports PUBACKs that let the forwarder delete rows from disk.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgert.config.types import MqttConfig
from edgert.records import Status
from edgert.clock import wall
from edgert.publish.base import Post
from edgert.publish.mqtt_forward import Forwarder
from edgert.publish.mqtt_store import Store, StoreLocked

log = logging.getLogger("edgert.publish")

STATUS_QOS = 1
METRICS_QOS = 0   # the contract: periodic, superseded by the next
STATUS_EVERY_S = 5.0       # a changed drop count is republished at most this often
OFFLINE_WAIT_S = 1.0       # at close, for the broker to take the offline status


class SetupError(Exception):
    """The output cannot start as configured: the dotted key (under the output), what, the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key} {problem}; {fix}")
        self.key, self.problem, self.fix = key, problem, fix


def make_client(cfg: MqttConfig, will: bytes) -> mqtt.Client:
    """A paho client configured but not connected; raises SetupError for unusable TLS files."""
    v5 = cfg.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         **({} if v5 else {"clean_session": True}))
    # The disk queue is the session state that matters; paho only holds what is in flight.
    client.max_inflight_messages_set(cfg.inflight + 8)   # + status messages
    client.will_set(cfg.prefix + "status", will, qos=STATUS_QOS, retain=True)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        _check_tls_files(cfg)
        client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                       certfile=str(cfg.cert_file) if cfg.cert_file else None,
                       keyfile=str(cfg.key_file) if cfg.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED if cfg.tls_verify else ssl.CERT_NONE)
        client.tls_insecure_set(not cfg.tls_verify)
    return client


def _check_tls_files(cfg: MqttConfig) -> None:
    """Load each file once here, so a bad one is named at start rather than at every reconnect."""
    ctx = ssl.create_default_context()
    fix = "give PEM files: the CA certificate, and the client certificate with its unencrypted key"
    if cfg.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(cfg.ca_file))
        except (OSError, ValueError) as e:   # ssl.SSLError is an OSError
            raise SetupError("ca_file", f"({cfg.ca_file}) cannot be used for TLS ({_why(e)})",
                             fix) from None
    if cfg.cert_file is not None:
        try:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None,
                                password=lambda: b"")   # an encrypted key fails, never prompts
        except (OSError, ValueError) as e:
            raise SetupError("cert_file", f"({cfg.cert_file}) and key_file ({cfg.key_file}) "
                             f"cannot be used for TLS ({_why(e)})", fix) from None


def _warn_plain_credentials(cfg: MqttConfig, name: str) -> None:
    """A password sent in clear text over a network anyone on the path can read."""
    if cfg.password is None or cfg.tls:
        return
    import ipaddress
    try:
        loopback = ipaddress.ip_address(cfg.host.strip("[]")).is_loopback
    except ValueError:
        loopback = cfg.host == "localhost"
    if not loopback:
        log.warning("%s: the password goes to %s in clear text (no TLS): set ca_file (or tls = "
                    "true) so it cannot be read on the way", name, cfg.host)


def _why(e: Exception) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e)


class MqttOutput:
    """Records on `<prefix>decision` and `<prefix>event` (a source's: `<prefix><source_id>/…`);
    `<prefix>status` online/offline."""

    first = True   # the Publisher gives it each post before any other output (durable first)

    def __init__(self, cfg: MqttConfig, name: str, device_id: str, client: mqtt.Client,
                 store: Store) -> None:
        self.cfg, self.name, self.device_id, self.client = cfg, name, device_id, client
        self.forwarder = Forwarder(name, cfg, client, store, self._tick)
        # (decision, event) topics per source id, each made once: None is a run without
        # [[sources]]. The queue keeps each row's topic, so a backlog goes where it was meant.
        self._topics: dict[str | None, tuple[str, str]] = {
            None: (cfg.prefix + "decision", cfg.prefix + "event")}
        self._status, self._metrics = cfg.prefix + "status", cfg.prefix + "metrics"
        self._state = "online"      # or "degraded", as the loop says (set_state)
        self._state_detail: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._attempts = 0          # failed connection attempts in a row, for the backoff
        self._connects = 0
        self._down_logged = False
        self._since = wall()
        self._status_at = 0.0
        self._status_drops = 0
        self._closed = False
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._next_delay()

    @classmethod
    def open(cls, cfg: MqttConfig, name: str, device_id: str) -> MqttOutput:
        """Open the disk queue, start the forwarder and paho's loop; an unreachable broker is
        not an error (it is retried). Raises SetupError for what retrying cannot fix."""
        will = json.dumps({"state": "offline", "device_id": device_id, "reason": "lost"}).encode()
        client = make_client(cfg, will)
        try:
            store = Store.open(cfg.queue_path, cfg.queue_max, cfg.queue_sync)
        except StoreLocked:
            raise SetupError("queue_path", f"is {cfg.queue_path}, which another edgert uses",
                             "give each edgert its own queue_path") from None
        except Exception as e:  # noqa: BLE001 - OSError, sqlite3.Error (a damaged file)
            raise SetupError("queue_path", f"is {cfg.queue_path}, which cannot be used as the "
                             f"queue ({e})", "make its folder writable, or move a damaged "
                             "file away") from None
        _warn_plain_credentials(cfg, name)
        if store.count:
            log.info("%s: %d messages queued by an earlier run go out first", name, store.count)
        out = cls(cfg, name, device_id, client, store)
        out.forwarder.start()
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()
        return out

    def send(self, post: Post) -> None:
        decision, event = self._topics.get(post.source_id) or self.topics(post.source_id)
        if post.kind == "decision":
            self.forwarder.put(decision, post.line, self.cfg.decision_qos, post.captured_at)
        else:
            self.forwarder.put(event, post.line, self.cfg.event_qos, post.captured_at)

    def topics(self, source_id: str | None) -> tuple[str, str]:
        """The decision and event topics of `source_id`'s records, made on its first record.
        Raises ValueError for an id no topic can carry (the config's mistake)."""
        got = self._topics.get(source_id)
        if got is not None:
            return got
        if not source_id or any(c in source_id for c in "+#/\0"):
            raise ValueError(f"source id {source_id!r} cannot be an MQTT topic level")
        base = f"{self.cfg.prefix}{source_id}/"
        got = self._topics[source_id] = (base + "decision", base + "event")
        return got

    def close(self) -> None:
        """Deliver the queue for up to close_timeout_s (the rest stays on disk for the next run),
        then publish the offline status and disconnect."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.forwarder.close(self.cfg.close_timeout_s)
        if self.client.is_connected():
            info = self.client.publish(self._status, self._payload("offline", reason="shutdown"),
                                       STATUS_QOS, retain=True)
            try:
                info.wait_for_publish(OFFLINE_WAIT_S)
            except (RuntimeError, ValueError):   # the connection went meanwhile
                pass
        self.client.disconnect()
        self.client.loop_stop()
        s = self.forwarder.stats()
        log.info("%s: %d messages sent, %d acknowledged, %d refused by the broker; dropped %d "
                 "(queue or disk full), %d (QoS 0 while offline), %d expired, %d damaged; %d "
                 "left queued in %s", self.name, s["sent"], s["acked"], s["refused"],
                 s["dropped"], s["offline"], s["expired"], s["damaged"], self.forwarder.left,
                 self.cfg.queue_path)

    def abandon(self) -> None:
        """After the loop crashed: what was handed over goes to disk, and the connection is
        dropped without a goodbye, so the broker publishes the Last Will (offline, lost)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.forwarder.close(0.0)
        self.client.loop_stop()

    def set_state(self, status: Status) -> None:
        """The loop's health for the retained status: "online", or "degraded" (a lighter ladder
        rung, a fallback provider) with what degraded it."""
        self._state, self._state_detail = status.state, dict(status.detail)
        if self.client.is_connected():
            self._publish_status()

    def metrics(self, line: bytes) -> None:
        """A periodic metrics record, QoS 0 and not queued: the next one supersedes it."""
        if self.client.is_connected():
            self.client.publish(self._metrics, line, METRICS_QOS)

    def stats(self) -> dict[str, Any]:
        return {"broker": f"{self.cfg.host}:{self.cfg.port}", "connects": self._connects,
                **self.forwarder.stats()}

    def _payload(self, state: str, **extra: Any) -> bytes:
        s = self.forwarder.stats()
        losses = {k: s[k] for k in ("refused", "expired", "damaged", "lost") if s[k]}
        if s["disk"] != "ok":
            losses["disk"] = s["disk"]
        if "queue_damaged" in s:
            losses["queue_damaged"] = s["queue_damaged"]
        return json.dumps({"state": state, "device_id": self.device_id,
                           "client_id": self.cfg.client_id, "since": round(self._since, 3),
                           "at": round(wall(), 3), "queued": s["queued"], "dropped": s["dropped"],
                           **losses, **extra}, separators=(",", ":")).encode()

    def _publish_status(self) -> None:
        self._status_at = wall()
        self._status_drops = self._losses()
        self.client.publish(self._status, self._payload(self._state, **self._state_detail),
                            STATUS_QOS, retain=True)

    def _tick(self) -> None:
        """From the forwarder thread: when rows were dropped since the last status, tell the
        subscribers (the first drop at once, later ones at most every STATUS_EVERY_S)."""
        dropped = self._losses()
        if dropped != self._status_drops and self.client.is_connected() and (
                self._status_drops == 0 or wall() - self._status_at >= STATUS_EVERY_S):
            self._publish_status()

    def _losses(self) -> int:
        f = self.forwarder
        return f.dropped + f.refused + f.expired + f.damaged + f.lost + (f._full_since is not None)

    def _next_delay(self) -> None:
        """Exponential backoff with jitter: paho waits the delay set here before its next try,
        so a fleet that lost one broker does not come back in lockstep."""
        cfg = self.cfg
        base = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(self._attempts, 30))
        delay = base * random.uniform(0.5, 1.0)
        self.client.reconnect_delay_set(delay, delay)   # type: ignore[arg-type]

    # paho's network thread from here on.

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
        if reason.is_failure:   # bad credentials, client id refused …
            self._failed(f"the broker refused the connection ({reason})")
            return
        self._attempts, self._down_logged = 0, False
        self._connects += 1
        self._next_delay()
        log.info("%s: connected%s", self.name, " again" if self._connects > 1 else "")
        self._publish_status()
        self.forwarder.connected(True)

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        self._failed("cannot reach the broker")

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
        self.forwarder.connected(False)
        if not self._closed:
            self._failed(f"lost the broker ({reason})")

    def _failed(self, what: str) -> None:
        """One failed attempt: back off further, and say so once per outage."""
        self._attempts += 1
        self._next_delay()
        if not self._down_logged:
            self._down_logged = True
            log.warning("%s: %s; decisions are queued on disk and the connection retried with "
                        "backoff", self.name, what)

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:  # noqa: ANN001
        # MQTT 5: a PUBACK may carry a failure (0x87 Not authorized: an ACL deny). Not a delivery.
        self.forwarder.acked_mid(mid, str(reason) if reason.is_failure else None)
