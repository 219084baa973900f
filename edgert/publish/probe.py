"""What `edgert check` can learn about the outputs without side effects: a serial port opened
and closed without a byte written, the MQTT broker connected to and left cleanly under a client
id of its own (and without a Last Will), a jsonl path tested for writing without creating it.

A failure `run` would refuse to start with raises ConfigError (exit 2); one `run` waits for (a
broker that is down, a serial port that may come, with on_missing = "wait") is a warning line."""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from edgert.config.types import Config, MqttConfig, OutputConfig, SerialConfig
from edgert.errors import ConfigError

MQTT_TIMEOUT_S = 5.0


def probe_outputs(cfg: Config) -> list[str]:
    """One line per output (and the metrics address), "ok …" or "warning: …"."""
    lines = []
    for i, out in enumerate(cfg.outputs):
        key = f"outputs[{i}]"
        if out.type == "serial" and out.serial is not None:
            lines.append(_serial(cfg, key, out.serial))
        elif out.type == "mqtt" and out.mqtt is not None:
            lines.append(_mqtt(cfg, key, out.mqtt))
        elif out.type == "jsonl" and out.path is not None:
            lines.append(_jsonl(cfg, key, out))
        else:
            lines.append("ok stdout")
    if cfg.service.metrics_listen is not None:
        lines.append(_listen(*cfg.service.metrics_listen))
    return lines


def _serial(cfg: Config, key: str, s: SerialConfig) -> str:
    import serial

    from edgert.publish.serial import REFUSED, open_failure

    port = serial.serial_for_url(s.port, baudrate=s.baudrate, do_not_open=True, exclusive=True)
    # Asked for low before opening: fewer boards reset on check (the kernel may still pulse DTR).
    port.dtr = port.rts = False
    try:
        port.open()
    except (OSError, ValueError) as e:   # serial.SerialException is an OSError
        problem, fix = open_failure(s, e)
        if s.on_missing == "fail" or getattr(e, "errno", None) in REFUSED:
            raise ConfigError(str(cfg.file), f"{key}.port", problem, fix) from None
        return f"warning: serial {s.port} {problem.split(', which ', 1)[-1]}; run waits for it " \
               f"(on_missing = \"wait\")"
    port.close()
    return f"ok serial {s.port} opens (nothing written)"


def _mqtt(cfg: Config, key: str, m: MqttConfig) -> str:
    import ssl

    from edgert.publish.mqtt import SetupError, make_client

    where = f"mqtt {m.host}:{m.port}"
    probe_cfg = dataclasses.replace(m, client_id=f"{m.client_id}-check")
    try:
        client = make_client(probe_cfg, b"")
    except SetupError as e:
        raise ConfigError(str(cfg.file), f"{key}.{e.key}", e.problem, e.fix) from None
    client.will_clear()   # a check that dies must not mark the device offline
    answer: list = []
    client.on_connect = lambda c, u, flags, reason, props: answer.append(reason)
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except ssl.SSLError as e:
        raise ConfigError(str(cfg.file), key, f"{where}: TLS failed ({e.reason or e})",
                          "check ca_file, cert_file, key_file and tls_verify") from None
    except (OSError, ValueError) as e:
        return f"warning: {where} not reachable ({getattr(e, 'strerror', None) or e}); run " \
               "queues decisions on disk and keeps trying"
    end = time.monotonic() + MQTT_TIMEOUT_S
    while not answer and time.monotonic() < end:
        client.loop(timeout=0.1)
    if not answer:
        client.socket() and client.socket().close()
        return f"warning: {where} accepted the connection but did not answer in " \
               f"{MQTT_TIMEOUT_S:g} s; run keeps trying"
    reason = answer[0]
    client.disconnect()
    client.loop(timeout=0.1)
    if reason.is_failure:
        raise ConfigError(str(cfg.file), key, f"{where} refused the connection ({reason})",
                          "check username, password and client_id against the broker's settings")
    return f"ok {where} connected{' with TLS' if m.tls else ''} and left cleanly"


def _jsonl(cfg: Config, key: str, out: OutputConfig) -> str:
    path = out.path
    assert path is not None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK | (0 if target is path else os.X_OK)):
        raise ConfigError(str(cfg.file), f"{key}.path", f"names {path}, which the service user "
                          f"cannot write", "let it write there (chown the folder)")
    return f"ok jsonl {path} writable ({'appends' if path.exists() else 'will be created'})"


def _listen(host: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return f"warning: metrics {host}:{port} cannot be listened on ({e.strerror}); run " \
                   "exits 1 (and systemd retries) while it is taken"
    return f"ok metrics http://{host}:{port}/metrics and /healthz"
