"""MQTT output figures against a local mosquitto it starts itself.

    python tools/bench_mqtt.py [--n 3000] [--fps 200] [--backlog 10000] [--sync 1.0]

Prints: the cost of send() on the calling thread (the herald's: it inserts the row into the
disk queue) at --fps, broker up and down, and the fsyncs a second at queue_sync = --sync; then
the age on arrival of live decisions (at 30 a second) while a --backlog queued during an outage
drains at the default max_rate. Records lost across SIGKILLs: `pytest -m slow -k sigkills`.
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
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edgert.publish import Post  # noqa: E402
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


def cfg(folder: Path, port: int, sync: float, name: str) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, client_id=f"bench-{name}", prefix="bench/",
                      queue_path=folder / f"{name}.sqlite", queue_sync=sync,
                      queue_max=1_000_000, close_timeout_s=0.0, reconnect_min_s=0.1,
                      reconnect_max_s=0.2)


def post(seq: int) -> Post:
    now = time.time()
    r = {"schema": "edgert.decision/1", "device_id": "bench", "run_id": "b", "seq": seq,
         "frame_id": seq, "captured_at": now, "decided_at": now, "deadline_ms": 50.0,
         "status": "ok", "action": "none", "latency_ms": {"total": 12.5}, "detections": []}
    return Post("decision", json.dumps(r, separators=(",", ":")).encode(), seq, seq, "ok",
                "none", now)


def wait(out: MqttOutput, key: str, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while out.stats()[key] < n:
        if time.monotonic() > end:
            raise SystemExit(f"timed out: {out.stats()}")
        time.sleep(0.005)


def paced(out: MqttOutput, first: int, n: int, fps: float) -> tuple[list[float], float]:
    """send() at `fps`, as the herald would; its costs (s), and the seconds it took."""
    times, t_start = [], time.monotonic()
    for i in range(n):
        due = t_start + i / fps
        while time.monotonic() < due:
            time.sleep(max(0.0, due - time.monotonic()))
        t0 = time.perf_counter()
        out.send(post(first + i))
        times.append(time.perf_counter() - t0)
    return sorted(times), time.monotonic() - t_start


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--fps", type=float, default=200.0)
    ap.add_argument("--backlog", type=int, default=10000)
    ap.add_argument("--sync", type=float, default=1.0)
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_mqtt_"))
    port = free_port()
    broker = None
    try:
        down = MqttOutput.open(cfg(folder, port, a.sync, "down"), "down", "bench")
        t, _ = paced(down, 1, a.n, a.fps)
        down.close()
        print(f"send() broker down at {a.fps:g}/s: p50 {pct(t, .5) * 1e6:.0f} us, "
              f"p99 {pct(t, .99) * 1e6:.0f} us, max {t[-1] * 1e6:.0f} us over {a.n}")
        broker = start_broker(folder, port)
        up = MqttOutput.open(cfg(folder, port, a.sync, "up"), "up", "bench")
        wait(up, "connects", 1, 10)
        t, elapsed = paced(up, 1, a.n, a.fps)
        wait(up, "acked", a.n, 60)
        syncs = up.stats()["syncs"]
        up.close()
        print(f"send() broker up at {a.fps:g}/s:   p50 {pct(t, .5) * 1e6:.0f} us, "
              f"p99 {pct(t, .99) * 1e6:.0f} us, max {t[-1] * 1e6:.0f} us over {a.n}")
        print(f"group commits (each an fsync of the log and a checkpoint) at queue_sync "
              f"{a.sync:g}: {syncs / elapsed:.2f}/s over {elapsed:.1f} s")

        broker.kill()
        broker.wait()
        q = MqttOutput.open(cfg(folder, port, a.sync, "backlog"), "backlog", "bench")
        for seq in range(1, a.backlog + 1):
            q.send(post(seq))
        broker = start_broker(folder, port)
        arrivals: dict[int, float] = {}
        sub = mqtt.Client(CallbackAPIVersion.VERSION2)
        sub.on_connect = lambda c, u, f, r, p: c.subscribe("bench/decision", qos=1)
        sub.on_message = lambda c, u, m: arrivals.setdefault(json.loads(m.payload)["seq"],
                                                               time.time())
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        wait(q, "connects", 1, 10)
        while len(arrivals) < 100:
            time.sleep(0.01)
        live: dict[int, float] = {}
        first = 1_000_000
        _, _ = paced_live(q, first, 300, 30.0, live)   # 10 s of live decisions beside the drain
        end = time.monotonic() + 10
        while not all(s in arrivals for s in live) and time.monotonic() < end:
            time.sleep(0.01)
        drained = sum(1 for s in arrivals if s <= a.backlog)
        ages = sorted(arrivals[s] - live[s] for s in live if s in arrivals)
        sub.loop_stop()
        q.close()
        print(f"live decisions while a {a.backlog}-record backlog drains at max_rate 200/s: "
              f"age on arrival p50 {pct(ages, .5) * 1e3:.1f} ms, p99 {pct(ages, .99) * 1e3:.1f} "
              f"ms, max {ages[-1] * 1e3:.1f} ms over {len(ages)} of {len(live)}; {drained} of "
              f"the backlog delivered meanwhile")
    finally:
        if broker is not None:
            broker.kill()
        shutil.rmtree(folder, ignore_errors=True)


def paced_live(out: MqttOutput, first: int, n: int, fps: float,
               sent: dict[int, float]) -> tuple[list[float], float]:
    """Live decisions at `fps`, recording when each was made (its captured_at)."""
    t_start = time.monotonic()
    for i in range(n):
        due = t_start + i / fps
        while time.monotonic() < due:
            time.sleep(max(0.0, due - time.monotonic()))
        p = post(first + i)
        sent[first + i] = p.captured_at
        out.send(p)
    return [], time.monotonic() - t_start


if __name__ == "__main__":
    main()
