"""MQTT output figures against a local mosquitto it starts itself.

    python tools/bench_mqtt.py [--n 20000] [--backlog 10000] [--rate 1e6] [--sync full]

Prints: send() latency on the calling thread (the frame loop's cost) with the broker up and
down; sustained QoS 1 decisions/s acknowledged by the broker; time to drain a backlog that
was queued on disk while the broker was down (at --rate; the shipped max_rate is 200/s).
"""

from __future__ import annotations

import argparse
import getpass
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgert.config.types import MqttConfig  # noqa: E402
from edgert.publish.mqtt import MqttOutput  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(folder: Path, port: int) -> subprocess.Popen:
    conf = folder / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\n"
                    "allow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.01)
    raise SystemExit("mosquitto did not start")


def cfg(folder: Path, port: int, rate: float, sync: str, name: str) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, client_id=f"bench-{name}", prefix="bench/",
                      queue_path=folder / f"{name}.sqlite", max_rate=rate, queue_sync=sync,
                      queue_max=1_000_000, close_timeout_s=0.0, inflight=256)


def line(seq: int) -> tuple[str, dict]:
    r = {"schema": "edgert.decision/1", "device_id": "bench", "run_id": "b", "seq": seq,
         "frame_id": seq, "captured_at": time.time(), "decided_at": time.time(),
         "deadline_ms": 50.0, "status": "ok", "action": "none",
         "latency_ms": {"total": 12.5}, "detections": []}
    return json.dumps(r, separators=(",", ":")), r


def wait(out: MqttOutput, key: str, n: int, timeout: float) -> float:
    t0 = time.perf_counter()
    while out.stats()[key] < n:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"timed out: {out.stats()}")
        time.sleep(0.002)
    return time.perf_counter() - t0


def send_latencies(out: MqttOutput, n: int, pace: bool) -> list[float]:
    times = []
    for seq in range(1, n + 1):
        ln, rec = line(seq)
        t0 = time.perf_counter()
        out.send(ln, rec)
        times.append(time.perf_counter() - t0)
        while pace and len(out.forwarder._handoff) > 1000:   # a producer the writer keeps up with
            time.sleep(0.0005)
    return sorted(times)


def pct(times: list[float], q: float) -> float:
    return times[min(len(times) - 1, int(len(times) * q))] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--backlog", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=1e6)
    ap.add_argument("--sync", choices=("full", "normal"), default="full")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_mqtt_"))
    port = free_port()

    down = MqttOutput.open(cfg(folder, port, a.rate, a.sync, "down"), "down", "bench")
    t = send_latencies(down, a.n, True)
    wait(down, "queued", a.n, 60)
    down.close()
    print(f"send() broker down: p50 {pct(t, .5):.1f} us, p99 {pct(t, .99):.1f} us, "
          f"max {t[-1] * 1e6:.0f} us over {a.n}")

    broker = start_broker(folder, port)
    try:
        up = MqttOutput.open(cfg(folder, port, a.rate, a.sync, "up"), "up", "bench")
        wait(up, "connects", 1, 10)
        t0 = time.perf_counter()
        t = send_latencies(up, a.n, True)
        wait(up, "acked", a.n, 300)
        elapsed = time.perf_counter() - t0
        print(f"send() broker up:   p50 {pct(t, .5):.1f} us, p99 {pct(t, .99):.1f} us, "
              f"max {t[-1] * 1e6:.0f} us over {a.n}")
        print(f"sustained QoS 1: {a.n / elapsed:.0f} decisions/s acknowledged "
              f"(synchronous={a.sync}, inflight 256, max_rate {a.rate:g})")
        up.close()

        broker.kill()
        broker.wait()
        q = MqttOutput.open(cfg(folder, port, a.rate, a.sync, "backlog"), "backlog", "bench")
        send_latencies(q, a.backlog, True)
        wait(q, "queued", a.backlog, 60)
        q.close()
        broker = start_broker(folder, port)
        t0 = time.perf_counter()
        q = MqttOutput.open(cfg(folder, port, a.rate, a.sync, "backlog"), "backlog", "bench")
        wait(q, "acked", a.backlog, 600)
        print(f"drain {a.backlog} queued on disk: {time.perf_counter() - t0:.2f} s from open "
              f"to the last PUBACK (max_rate {a.rate:g}/s)")
        q.close()
    finally:
        broker.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
