"""The MQTT output against a real mosquitto on a loopback port and a real paho subscriber."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import REPO, edgert, write_config
from onnx_models import one_box_pred, yolo_constant

from edgert.config.types import MqttConfig
from edgert.publish import Post
from edgert.publish.mqtt import MqttOutput
from edgert.records import Status

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed "
                                     "(apt-get install mosquitto)")
pytestmark = needs_mosquitto

CONFIG = """
device_id = "{device}"

[source]
url = "pattern:"
fps = {fps}

[model]
path = "model.onnx"

[runtime]
budget_ms = 500

[[rules]]
name = "defect"
labels = ["defect"]
action = "reject"

[fail_safe]
action = "stop"

[[outputs]]
type = "jsonl"
path = "out.jsonl"

[[outputs]]
type = "mqtt"
host = "127.0.0.1"
port = {port}
queue_path = "queue.sqlite"
reconnect_min_s = 0.1
reconnect_max_s = 1
{extra}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto on 127.0.0.1:port that a test can kill and start again on the same port."""

    def __init__(self, folder: Path, port: int, persistence: bool = False,
                 password_file: Path | None = None) -> None:
        self.folder, self.port = folder, port
        self.conf = folder / "mosquitto.conf"
        # As root, mosquitto would drop to a user that cannot read the test's private folder.
        lines = [f"user {getpass.getuser()}", f"listener {port} 127.0.0.1"]
        if password_file is None:
            lines += ["allow_anonymous true"]
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}",
                      "log_type all", f"log_dest file {folder}/broker.log"]
        if persistence:   # keeps a persistent subscriber's session across a kill
            lines += ["persistence true", f"persistence_location {folder}/",
                      "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "mosquitto.log", "a"))
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text()
                assert time.monotonic() < end, "mosquitto did not listen"
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def broker_dir(tmp_path: Path) -> Path:
    d = tmp_path / "broker"
    d.mkdir()
    return d


@pytest.fixture
def broker(broker_dir: Path):
    b = Broker(broker_dir, free_port()).start()
    yield b
    b.kill()


class Subscriber:
    """A real paho subscriber collecting (topic, payload, retain) on a topic filter."""

    def __init__(self, port: int, topic: str, client_id: str = "", persistent: bool = False) -> None:
        self.topic, self.messages, self.lock = topic, [], threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def got(self, topic_end: str) -> list[tuple[dict, bool]]:
        with self.lock:
            return [(json.loads(p), r) for t, p, r in self.messages if t.endswith(topic_end)]

    def wait(self, done: Callable[[Subscriber], bool], timeout: float = 30, what: str = "") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if done(self):
                return
            time.sleep(0.02)
        pytest.fail(f"no {what} within {timeout} s; got {self.messages[-5:]}")

    def decisions(self, run_id: str | None = None) -> list[int]:
        return [d["seq"] for d, _ in self.got("/decision")
                if run_id is None or d["run_id"] == run_id]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return yolo_constant(tmp_path / "model.onnx", one_box_pred(),
                         metadata={"names": "{0: 'part', 1: 'defect'}"})


def config(tmp: Path, port: int, device: str = "mqtt-test", fps: int = 30, extra: str = "") -> Path:
    return write_config(tmp / "device.toml", CONFIG.format(device=device, port=port, fps=fps,
                                                           extra=extra))


def start_edgert(cfg: Path, cwd: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg), *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(cwd / "stderr.txt", "a"),
                            env=env)


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.endswith("}")]
    return [r for r in recs if r.get("schema") != "edgert.event/1"]   # events: their own seq


def wait_records(path: Path, n: int, timeout: float = 30) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        recs = records(path)
        if len(recs) >= n:
            return recs
        time.sleep(0.02)
    pytest.fail(f"fewer than {n} records in {path} within {timeout} s")


def in_order_without_gaps(seqs: list[int], n: int) -> bool:
    """Every seq 1..n arrived, first arrivals in order (a QoS 1 resend may repeat one)."""
    first: list[int] = []
    for s in seqs:
        if s not in first:
            first.append(s)
    return first[:n] == list(range(1, n + 1))


def mqtt_cfg(tmp: Path, port: int, **kw) -> MqttConfig:
    kw.setdefault("queue_path", tmp / "queue.sqlite")
    return MqttConfig(host="127.0.0.1", port=port, client_id=kw.pop("client_id", "edgert-t"),
                      prefix=kw.pop("prefix", "edgert/t/"), **kw)


def record(seq: int, source: str | None = None, kind: str = "decision") -> Post:
    r = {"run_id": "r", "seq": seq, "status": "ok", "action": "none", "source_id": source}
    return Post(kind, json.dumps(r).encode(), seq, seq, "ok" if kind == "decision" else "",
                "none", time.time(), source_id=source)


def by_topic(sub: Subscriber) -> dict[str, list[int | str]]:
    """What arrived on each topic: a record's seq (first arrival), a status's state."""
    got: dict[str, list[int | str]] = {}
    with sub.lock:
        for topic, payload, _ in sub.messages:
            p = json.loads(payload)
            v = p.get("seq", p.get("state", p.get("schema")))
            if v not in got.setdefault(topic, []):
                got[topic].append(v)
    return got


SOURCES = [(seq, src, kind) for seq in (1, 2) for src in ("cam1", "cam2", None)
           for kind in ("decision", "event")]
SOURCE_TOPICS = {"edgert/t/cam1/decision": [1, 2], "edgert/t/cam1/event": [1, 2],
                 "edgert/t/cam2/decision": [1, 2], "edgert/t/cam2/event": [1, 2],
                 "edgert/t/decision": [1, 2], "edgert/t/event": [1, 2]}


# The run against a live broker


def test_decisions_arrive_in_order_with_status_and_last_will(tmp_path: Path, model, broker) -> None:
    sub = Subscriber(broker.port, "edgert/mqtt-test/#")
    proc = start_edgert(config(tmp_path, broker.port), tmp_path)
    try:
        sub.wait(lambda s: len(s.decisions()) >= 20, what="20 decisions")
        status = sub.got("/status")
        assert status and status[0][0]["state"] == "online"
        # A late subscriber gets the online status as a retained message.
        late = Subscriber(broker.port, "edgert/mqtt-test/status")
        late.wait(lambda s: bool(s.got("/status")), what="retained status")
        first, retained = late.got("/status")[0]
        assert first["state"] == "online" and retained and first["device_id"] == "mqtt-test"
        late.stop()
        proc.kill()   # SIGKILL: no goodbye, so the broker publishes the Last Will
        proc.wait(10)
        sub.wait(lambda s: s.got("/status")[-1][0]["state"] == "offline", timeout=15,
                 what="the Last Will")
    finally:
        proc.kill()
        sub.stop()
    seqs = sub.decisions()
    assert in_order_without_gaps(seqs, len(set(seqs))), seqs
    recs = {r["seq"]: r for r in records(tmp_path / "out.jsonl")}
    d = sub.got("/decision")[0][0]
    assert d == recs[d["seq"]]   # the payload is the decision record, the same as on jsonl
    assert sub.got("/status")[-1][0]["reason"] == "lost"


def test_metrics_and_a_degraded_status_reach_their_topics(tmp_path: Path, model, broker) -> None:
    """A provider this machine lacks (CUDA) falls back to the CPU: the retained status says
    degraded, and metrics records arrive on their topic at the configured interval."""
    cfg = config(tmp_path, broker.port)
    cfg.write_text(cfg.read_text().replace(
        "budget_ms = 500", 'budget_ms = 500\nmetrics_interval_s = 0.5\nproviders = ["cuda", "cpu"]'))
    sub = Subscriber(broker.port, "edgert/mqtt-test/#")
    proc = start_edgert(cfg, tmp_path)
    try:
        sub.wait(lambda s: len(s.got("/metrics")) >= 3, what="3 metrics records")
        sub.wait(lambda s: any(m["state"] == "degraded" for m, _ in s.got("/status")),
                 what="a degraded status")
    finally:
        proc.kill()
        sub.stop()
    metrics = [m for m, _ in sub.got("/metrics")]
    assert all(m["schema"] == "edgert.metrics/1" and m["device_id"] == "mqtt-test" for m in metrics)
    assert metrics[-1]["records"] > metrics[0]["records"] > 0
    assert "total" in metrics[-1]["latency_ms"] and "source" in metrics[-1]
    assert any(k.startswith("mqtt:") for k in metrics[-1]["outputs"])
    degraded = [m for m, _ in sub.got("/status") if m["state"] == "degraded"][-1]
    assert "cuda" in " ".join(degraded["providers_not_bound"]).lower()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_clean_shutdown_delivers_everything_and_publishes_offline(tmp_path: Path, model, broker,
                                                                    protocol: str) -> None:
    sub = Subscriber(broker.port, "edgert/mqtt-test/#")
    sub.wait(lambda s: s.client.is_connected(), what="subscription")
    time.sleep(0.2)
    proc = edgert("run", str(config(tmp_path, broker.port, extra=f'protocol = "{protocol}"')),
                  "--frames", "60", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sub.wait(lambda s: len(set(s.decisions())) >= 60 and s.got("/status")[-1][0]["state"]
             == "offline", what="60 decisions and offline")
    sub.stop()
    assert in_order_without_gaps(sub.decisions(), 60)
    assert sub.got("/status")[-1][0]["reason"] == "shutdown"
    assert "Traceback" not in proc.stderr
    rows = sqlite3.connect(tmp_path / "queue.sqlite").execute("SELECT COUNT(*) FROM queue")
    assert rows.fetchone()[0] == 0   # every acknowledged row was deleted


@pytest.mark.slow
def test_broker_killed_mid_run_loses_no_decision(tmp_path: Path, model, broker_dir) -> None:
    broker = Broker(broker_dir, free_port(), persistence=True).start()
    sub = Subscriber(broker.port, "edgert/mqtt-test/decision", client_id="sub-b", persistent=True)
    proc = None
    try:
        sub.wait(lambda s: s.client.is_connected(), what="subscription")
        time.sleep(1.5)   # the broker saves the subscriber's session (autosave_interval 1)
        # 1,000 decisions at 100 a second, the broker gone for 5 s from about the 300th.
        proc = start_edgert(config(tmp_path, broker.port, fps=100), tmp_path, "--frames", "1000")
        sub.wait(lambda s: len(s.decisions()) >= 300, what="decisions before the outage")
        broker.kill()
        time.sleep(5)
        broker.start()
        n = 1000
        sub.wait(lambda s: len(set(s.decisions())) >= n, timeout=60, what=f"{n} decisions")
    finally:
        if proc is not None:
            proc.kill()
        sub.stop()
        broker.kill()
    assert in_order_without_gaps(sub.decisions(), n), sub.decisions()


def test_queue_survives_a_crash_while_the_broker_is_down(tmp_path: Path, model,
                                                          broker_dir) -> None:
    port = free_port()
    cfg = config(tmp_path, port)
    proc = start_edgert(cfg, tmp_path)
    try:
        wait_records(tmp_path / "out.jsonl", 20)
        made = records(tmp_path / "out.jsonl")
        time.sleep(1.0)   # the forwarder commits each batch within milliseconds
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    run_id = made[0]["run_id"]
    broker = Broker(broker_dir, port).start()
    sub = Subscriber(broker.port, "edgert/mqtt-test/decision")
    try:
        sub.wait(lambda s: s.client.is_connected(), what="subscription")
        time.sleep(0.2)
        again = edgert("run", str(cfg), "--frames", "5", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "queued by an earlier run" in again.stderr
        sub.wait(lambda s: len(s.decisions(run_id)) >= len(made), what="the first run's decisions")
    finally:
        sub.stop()
        broker.kill()
    assert in_order_without_gaps(sub.decisions(run_id), len(made))
    # The first run's backlog goes out before the second run's decisions.
    runs = [d["run_id"] for d, _ in sub.got("/decision")]
    assert runs.index(run_id) < min(i for i, r in enumerate(runs) if r != run_id)


def test_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path, model) -> None:
    port = free_port()   # nothing listens: every decision waits on disk
    proc = edgert("run", str(config(tmp_path, port, fps=200, extra="queue_max = 10\n"
                                    "close_timeout_s = 0")), "--frames", "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(next(ln for ln in proc.stderr.splitlines()
                              if "summary:" in ln).split("summary: ", 1)[1])
    mqtt_stats = next(v for k, v in summary["outputs"].items() if k.startswith("mqtt:"))
    sent = summary["records"] + summary["events"]   # the rule's events queue beside decisions
    assert mqtt_stats["dropped"] == sent - 10 and mqtt_stats["queued"] == 10, mqtt_stats
    assert "dropped the oldest" in proc.stderr
    rows = sqlite3.connect(tmp_path / "queue.sqlite").execute(
        "SELECT payload FROM queue WHERE topic LIKE '%/decision' ORDER BY id")
    seqs = [json.loads(p)["seq"] for (p,) in rows]   # the newest decisions, events among them
    assert len(seqs) >= 10 - summary["events"] and seqs == list(range(31 - len(seqs), 31))


def test_dropped_count_reaches_the_status_topic(tmp_path: Path, broker) -> None:
    sub = Subscriber(broker.port, "edgert/t/#")
    sub.wait(lambda s: s.client.is_connected(), what="subscription")
    out = MqttOutput.open(mqtt_cfg(tmp_path, broker.port, queue_max=5, max_rate=2.0,
                                   close_timeout_s=0.0), "mqtt", "t")
    try:
        sub.wait(lambda s: bool(s.got("/status")), what="online status")
        for seq in range(1, 101):
            out.send(record(seq))
        sub.wait(lambda s: s.got("/status")[-1][0]["dropped"] > 0, what="a status with drops")
        assert out.stats()["dropped"] >= 90
    finally:
        out.close()
    sub.wait(lambda s: s.got("/status")[-1][0]["state"] == "offline", what="offline status")
    sub.stop()


def test_records_of_several_sources_go_to_their_own_topics(tmp_path: Path, broker) -> None:
    """Decisions and events under `<prefix><source_id>/`; a record of no named source, the
    status and metrics where they always were."""
    sub = Subscriber(broker.port, "edgert/t/#")
    out = MqttOutput.open(mqtt_cfg(tmp_path, broker.port), "mqtt", "t")
    try:
        sub.wait(lambda s: bool(s.got("/status")), what="online status")
        for seq, src, kind in SOURCES:
            out.send(record(seq, src, kind))
        out.set_state(Status("degraded", "t", time.time(), {"rung": "light"}))
        out.metrics(json.dumps({"schema": "edgert.metrics/1"}).encode())
        sub.wait(lambda s: len(s.messages) >= len(SOURCES) + 3, what="records, status, metrics")
        assert out.topics("cam1") is out.topics("cam1")   # made once, not per record
        with pytest.raises(ValueError, match="topic level"):
            out.send(record(3, "cam/+"))
    finally:
        out.close()
    sub.wait(lambda s: s.got("/status")[-1][0]["state"] == "offline", what="offline status")
    sub.stop()
    assert by_topic(sub) == {**SOURCE_TOPICS, "edgert/t/status": ["online", "degraded", "offline"],
                             "edgert/t/metrics": ["edgert.metrics/1"]}


def test_records_of_several_sources_queued_in_an_outage_reach_their_topics(tmp_path: Path,
                                                                            broker) -> None:
    """The queue keeps each row's topic: after the reconnect the backlog goes where each
    record was meant to go."""
    proxy = FreezableProxy(broker.port)
    sub = Subscriber(broker.port, "edgert/t/#")   # straight to the broker: it never misses
    out = MqttOutput.open(mqtt_cfg(tmp_path, proxy.port, reconnect_min_s=0.1,
                                   reconnect_max_s=0.5), "mqtt", "t")
    try:
        sub.wait(lambda s: bool(s.got("/status")), what="online status")
        proxy.cut()
        end = time.monotonic() + 10
        while out.stats()["connected"]:
            assert time.monotonic() < end, "the cut went unnoticed"
            time.sleep(0.01)
        for seq, src, kind in SOURCES:
            out.send(record(seq, src, kind))
        assert out.stats()["queued"] == len(SOURCES)
        proxy.resume()
        sub.wait(lambda s: all(by_topic(s).get(t) == v for t, v in SOURCE_TOPICS.items()),
                 what="every queued record on its topic")
    finally:
        out.close()
        sub.stop()
        proxy.close()
    assert {t: v for t, v in by_topic(sub).items() if t in SOURCE_TOPICS} == SOURCE_TOPICS
    assert set(by_topic(sub)) == set(SOURCE_TOPICS) | {"edgert/t/status"}


def test_send_never_blocks_with_the_broker_down(tmp_path: Path) -> None:
    out = MqttOutput.open(mqtt_cfg(tmp_path, free_port(), close_timeout_s=0.0), "mqtt", "t")
    try:
        times = []
        for seq in range(1, 5001):
            t0 = time.perf_counter()
            out.send(record(seq))
            times.append(time.perf_counter() - t0)
        times.sort()
        assert sum(times) < 2.0 and times[int(len(times) * 0.99)] < 0.01, times[-5:]
        # send returned once each row was in the file: another process reads all of them now.
        assert out.stats()["queued"] == 5000
        assert sqlite3.connect(tmp_path / "queue.sqlite").execute(
            "SELECT COUNT(*) FROM queue").fetchone()[0] == 5000
        assert out.stats()["dropped"] == 0 and not out.stats()["connected"]
    finally:
        out.close()
    assert sqlite3.connect(tmp_path / "queue.sqlite").execute(
        "SELECT COUNT(*) FROM queue").fetchone()[0] == 5000


def test_unreachable_broker_at_start_is_not_fatal(tmp_path: Path, model) -> None:
    proc = edgert("run", str(config(tmp_path, free_port(), extra="close_timeout_s = 0")),
                  "--frames", "10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cannot reach the broker" in proc.stderr
    assert len(records(tmp_path / "out.jsonl")) == 10


def test_a_second_edgert_on_the_same_queue_is_refused(tmp_path: Path, model) -> None:
    cfg = config(tmp_path, free_port())
    proc = start_edgert(cfg, tmp_path)
    try:
        wait_records(tmp_path / "out.jsonl", 1)
        second = edgert("run", str(cfg), "--frames", "1", cwd=tmp_path)
    finally:
        proc.kill()
    assert second.returncode == 2
    assert "outputs[1].queue_path" in second.stderr and "another edgert" in second.stderr


# TLS


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name: str, key, issuer_name, issuer_key, ca: bool, san=None):  # noqa: ANN001
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, name)])).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(name: str, key, crt) -> None:  # noqa: ANN001
        files[name + "_key"] = folder / f"{name}.key"
        files[name + "_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        files[name] = folder / f"{name}.crt"
        files[name].write_bytes(crt.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgert test CA")])
    write("ca", ca_key, cert("edgert test CA", ca_key, ca_name, ca_key, True))
    for name, san in (("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                      ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, key, cert(name, key, ca_name, ca_key, False, san))
    return files


@pytest.fixture
def tls_broker(broker_dir: Path):
    pytest.importorskip("cryptography")
    pki = make_pki(broker_dir)
    b = Broker(broker_dir, free_port())
    b.conf.write_text(b.conf.read_text() + f"cafile {pki['ca']}\ncertfile {pki['server']}\n"
                      f"keyfile {pki['server_key']}\nrequire_certificate true\n")
    b.start()
    yield b, pki
    b.kill()


def test_tls_with_a_client_certificate_delivers_decisions(tmp_path: Path, model,
                                                          tls_broker) -> None:
    broker, pki = tls_broker
    extra = (f'ca_file = "{pki["ca"]}"\ncert_file = "{pki["client"]}"\n'
             f'key_file = "{pki["client_key"]}"\n')
    received: list[dict] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.tls_set(ca_certs=str(pki["ca"]), certfile=str(pki["client"]), keyfile=str(pki["client_key"]))
    sub.on_connect = lambda c, u, f, r, p: c.subscribe("edgert/mqtt-test/decision", qos=1)
    sub.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        time.sleep(0.5)
        proc = edgert("run", str(config(tmp_path, broker.port, extra=extra)), "--frames", "10",
                      cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        end = time.monotonic() + 15
        while len(received) < 10 and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [r["seq"] for r in received][:10] == list(range(1, 11))


def test_unusable_tls_file_is_one_sentence_and_exit_2(tmp_path: Path, model) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    proc = edgert("run", str(config(tmp_path, free_port(), extra='ca_file = "ca.pem"')),
                  "--frames", "1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert "outputs[1].ca_file" in lines[-1] and "cannot be used for TLS" in lines[-1], lines


def test_wrong_credentials_are_reported_once_and_retried_at_a_pace(tmp_path: Path, model,
                                                                  broker_dir: Path) -> None:
    """A refused login is the world's answer, not a config typo edgert can see: the run goes on,
    queues, says so once, and retries with backoff — not in a busy loop."""
    passwords = broker_dir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "right-one"],
                   check=True, capture_output=True)
    broker = Broker(broker_dir, free_port(), password_file=passwords).start()
    cfg = config(tmp_path, broker.port, extra='username = "edge"\npassword = "wrong-one"')
    text = cfg.read_text().replace("reconnect_min_s = 0.1", "reconnect_min_s = 0.5")
    cfg.write_text(text.replace("reconnect_max_s = 1\n", "reconnect_max_s = 30\n"))
    assert "reconnect_max_s = 30" in cfg.read_text()
    proc = start_edgert(cfg, tmp_path)
    try:
        time.sleep(6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        broker.kill()
    err = (tmp_path / "stderr.txt").read_text()
    assert err.count("refused the connection") == 1, err
    assert "wrong-one" not in err
    log = (broker_dir / "broker.log").read_text()
    # Backoff from 0.5 s doubling: a handful of tries in 6 s, where a busy loop makes thousands.
    assert 2 <= log.count("New connection from") <= 8, log[-2000:]
    assert len(wait_records(tmp_path / "out.jsonl", 10)) >= 10   # the loop ran on


def test_password_is_never_logged(tmp_path: Path, model, broker) -> None:
    (tmp_path / "pw.txt").write_text("hunter2-secret\n")
    proc = edgert("-v", "run", str(config(tmp_path, broker.port, extra='username = "edge"\n'
                                          'password_file = "pw.txt"')), "--frames", "3",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stderr


class FreezableProxy:
    """TCP relay to the broker; `freeze()` stops relaying the open connections without closing
    them (a half-open link: a dead NAT entry, a pulled cable beyond the switch); new
    connections are relayed again. `cut()` closes them and turns new ones away (the broker
    unreachable, while it and its subscribers stay up) until `resume()`."""

    def __init__(self, target: int) -> None:
        self.target, self.frozen = target, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.generation = 0
        self.cut_off = False
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off:
                conn.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            self.open += [conn, up]
            gen = self.generation
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b, gen), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gen: int) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if gen != self.generation:   # frozen: swallow, never answer, never close
                self.frozen.append(src)
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.generation += 1

    def cut(self) -> None:
        self.cut_off = True
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def resume(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self.listener.close()


@pytest.mark.slow
def test_half_open_connection_is_noticed_by_keepalive(tmp_path: Path, model, broker) -> None:
    proxy = FreezableProxy(broker.port)
    sub = Subscriber(broker.port, "edgert/mqtt-test/decision")
    sub.wait(lambda s: s.client.is_connected(), what="subscription")
    time.sleep(0.2)
    proc = start_edgert(config(tmp_path, proxy.port, extra="keepalive = 5"), tmp_path)
    try:
        sub.wait(lambda s: len(s.decisions()) >= 10, what="decisions before the freeze")
        proxy.freeze()
        n = len(records(tmp_path / "out.jsonl")) + 30
        sub.wait(lambda s: len(set(s.decisions())) >= n, timeout=40, what=f"{n} decisions")
    finally:
        proc.kill()
        proc.wait(10)
        sub.stop()
        proxy.close()
    assert in_order_without_gaps(sub.decisions(), n), sub.decisions()
    assert "lost the broker" in (tmp_path / "stderr.txt").read_text()


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, model,
                                                         tls_broker) -> None:
    broker, pki = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    wrong = make_pki(other)   # verification is on by default: this CA did not sign the broker
    extra = (f'ca_file = "{wrong["ca"]}"\ncert_file = "{pki["client"]}"\n'
             f'key_file = "{pki["client_key"]}"\nclose_timeout_s = 0\n')
    proc = edgert("run", str(config(tmp_path, broker.port, extra=extra)), "--frames", "5",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cannot reach the broker" in proc.stderr and ": connected" not in proc.stderr
    rows = sqlite3.connect(tmp_path / "queue.sqlite").execute(
        "SELECT COUNT(*) FROM queue WHERE topic LIKE '%/decision'")
    assert rows.fetchone()[0] == 5   # kept for when the configuration is fixed


# Outputs that stop taking records hold nothing up


STUCK_CONFIG = """
device_id = "stuck-test"

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

[[outputs]]
type = "mqtt"
host = "127.0.0.1"
port = {port}
queue_path = "queue.sqlite"
"""


def past_deadline_ms(r: dict) -> float:
    return (r["decided_at"] - r["captured_at"]) * 1e3 - r["deadline_ms"]


def test_a_stdout_nobody_reads_holds_up_neither_mqtt_nor_the_deadline(tmp_path: Path,
                                                                       broker) -> None:
    """`edgert run … | sleep 600`: the pipe fills after a few hundred records; MQTT must go on
    receiving every record, the records sent at the deadline must still be sent at it, and
    SIGTERM must still end the run."""
    from onnx_models import matmul_chain
    from test_deadline import median_inference_ms

    model = matmul_chain(tmp_path / "model.onnx", size=512, depth=10)
    budget = 0.6 * median_inference_ms(model)   # most frames miss: the deadline fires often
    cfg = write_config(tmp_path / "device.toml", STUCK_CONFIG.format(budget=budget,
                                                                     port=broker.port))
    sub = Subscriber(broker.port, "edgert/stuck-test/#")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.txt", "w"),
                            env=env)   # stdout is never read
    try:
        # ~400 bytes a record: 64 KiB of pipe is full after ~160; wait for four times that.
        sub.wait(lambda s: len(s.decisions()) >= 700, timeout=120, what="700 decisions")
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    sub.wait(lambda s: "shutdown" in str(s.got("/status")[-1:]), what="the offline status")
    sub.stop()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    # The sender's limits: 2 s for the stuck stdout, close_timeout_s for MQTT, and margin.
    assert stopped_s < 15, stopped_s
    decisions = [d for d, _ in sub.got("/decision")]
    assert [d["seq"] for d in decisions] == list(range(1, len(decisions) + 1))
    fired = [d for d in decisions if d.get("cause") == "deadline"]
    assert len(fired) >= 20   # the rest were given up on before their deadline (predicted)
    late = sorted(past_deadline_ms(d) for d in fired)
    realtime = "sender realtime" in stderr
    # At real-time priority the herald sends at the deadline whatever else the machine does;
    # without it (no CAP_SYS_NICE) an ordinary process can delay it by a time slice.
    assert late[int(0.99 * (len(late) - 1))] <= (2.0 if realtime else 20.0), late[-10:]
    summary = json.loads(stderr.split("summary: ", 1)[1].splitlines()[0])
    assert summary["late_ok"] == 0
    stdout = summary["outputs"]["stdout"]
    assert stdout["written"] < len(decisions) - 300      # the stuck reader held lines there …
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) >= len(decisions) - 5             # … and nowhere else
    assert all(json.loads(x)["seq"] for x in lines)
