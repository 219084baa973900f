"""`edgert check` opens what `run` will need, without side effects, so ExecStartPre catches it."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from conftest import edgert, write_config
from onnx_models import one_box_pred, yolo_constant
from test_mqtt import Broker, free_port

BASE = """
device_id = "check-test"
[source]
url = "pattern:"
[model]
path = "model.onnx"
[fail_safe]
action = "stop"
"""


def config(tmp: Path, outputs: str) -> Path:
    yolo_constant(tmp / "model.onnx", one_box_pred(), metadata={"names": "{0: 'a', 1: 'b'}"})
    return write_config(tmp / "device.toml", BASE + outputs)


def serial_out(port: str, on_missing: str) -> str:
    return f'[[outputs]]\ntype = "serial"\nport = "{port}"\non_missing = "{on_missing}"\n'


def mqtt_out(port: int, extra: str = "") -> str:
    return (f'[[outputs]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {port}\n'
            f'queue_path = "queue.sqlite"\n{extra}')


def test_a_missing_serial_port_with_on_missing_fail_fails_check(tmp_path: Path) -> None:
    proc = edgert("check", str(config(tmp_path, serial_out("/dev/ttyEDGERTNONE", "fail"))))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "outputs[0].port: is '/dev/ttyEDGERTNONE', which cannot be opened" in proc.stderr


def test_a_missing_serial_port_that_run_waits_for_is_a_warning(tmp_path: Path) -> None:
    proc = edgert("check", str(config(tmp_path, serial_out("/dev/ttyEDGERTNONE", "wait"))))
    assert proc.returncode == 0, proc.stderr
    assert "warning: serial /dev/ttyEDGERTNONE cannot be opened" in proc.stdout


def test_a_present_serial_port_is_opened_and_nothing_is_written(tmp_path: Path) -> None:
    controller, device = pty.openpty()
    os.set_blocking(controller, False)
    try:
        proc = edgert("check", str(config(tmp_path, serial_out(os.ttyname(device), "fail"))))
        assert proc.returncode == 0, proc.stderr
        assert f"ok serial {os.ttyname(device)} opens (nothing written)" in proc.stdout
        try:
            written = os.read(controller, 4096)
        except BlockingIOError:
            written = b""
        assert written == b""
    finally:
        os.close(controller)
        os.close(device)


def test_a_broker_that_is_down_is_a_warning(tmp_path: Path) -> None:
    proc = edgert("check", str(config(tmp_path, mqtt_out(free_port()))))
    assert proc.returncode == 0, proc.stderr
    assert "not reachable (Connection refused); run queues decisions" in proc.stdout
    assert not (tmp_path / "queue.sqlite").exists()


def test_a_broker_is_connected_to_and_left_without_a_last_will(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = Broker(broker_dir, free_port()).start()
    try:
        proc = edgert("check", str(config(tmp_path, mqtt_out(broker.port))))
        assert proc.returncode == 0, proc.stderr
        assert f"ok mqtt 127.0.0.1:{broker.port} connected and left cleanly" in proc.stdout
    finally:
        broker.kill()
    assert not (tmp_path / "queue.sqlite").exists()


def test_wrong_credentials_fail_check(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    passwords = broker_dir / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "right-one"],
                   check=True, capture_output=True)
    broker = Broker(broker_dir, free_port(), password_file=passwords).start()
    try:
        bad = mqtt_out(broker.port, 'username = "edge"\npassword = "wrong"\n')
        proc = edgert("check", str(config(tmp_path, bad)))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "outputs[0]: mqtt 127.0.0.1:" in proc.stderr and "refused the connection" in proc.stderr
        good = mqtt_out(broker.port, 'username = "edge"\npassword = "right-one"\n')
        proc = edgert("check", str(config(tmp_path, good)))
        assert proc.returncode == 0, proc.stderr
    finally:
        broker.kill()


def test_a_jsonl_path_is_checked_without_being_created(tmp_path: Path) -> None:
    proc = edgert("check", str(config(tmp_path, '[[outputs]]\ntype = "jsonl"\npath = "d.jsonl"\n')))
    assert proc.returncode == 0, proc.stderr
    assert "will be created" in proc.stdout
    assert not (tmp_path / "d.jsonl").exists()
