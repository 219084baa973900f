"""Every class of bad config gives one sentence naming the file and key, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import edgert, write_config
from onnx_models import one_box_pred, yolo_constant

from edgert.config import load_config
from edgert.errors import ConfigError
from edgert.kernel_cache import NOTICE

GOOD = """
device_id = "test-cam"

[source]
url = "pattern:"
fps = 30

[model]
path = "model.onnx"
labels = "labels.txt"

[runtime]
budget_ms = 200

[[zones]]
name = "gate"
polygon = [[0.3, 0.5], [0.7, 0.5], [0.7, 1.0], [0.3, 1.0]]

[[rules]]
name = "defect-in-gate"
labels = ["defect"]
min_score = 0.5
zone = "gate"
action = "reject"

[fail_safe]
action = "stop"

[[outputs]]
type = "stdout"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    yolo_constant(tmp_path / "model.onnx", one_box_pred())
    (tmp_path / "labels.txt").write_text("part\ndefect\n")
    (tmp_path / "latin1.txt").write_bytes("pièce\ndéfaut\n".encode("latin-1"))
    return tmp_path


def test_good_config_loads_into_frozen_values(workdir: Path) -> None:
    cfg = load_config(write_config(workdir / "good.toml", GOOD))
    assert cfg.device_id == "test-cam"
    assert cfg.source.kind == "pattern" and cfg.source.mode == "latest"
    assert cfg.model.labels == ("part", "defect")
    assert cfg.model.path == (workdir / "model.onnx").resolve()
    assert cfg.zones[0].fractional and cfg.rules[0].zone == "gate"
    with pytest.raises(AttributeError):
        cfg.device_id = "other"  # type: ignore[misc]


SERIAL = '\n[[outputs]]\ntype = "serial"\nport = "loop://"\n'
MQTT = '\n[[outputs]]\ntype = "mqtt"\nhost = "127.0.0.1"\nqueue_path = "q.sqlite"\n'

# (name, edit to GOOD, the dotted key the message must name, a word of the fix)
BAD = [
    ("unknown top key", lambda t: t + '\ncolour = "red"\n', "colour", "spelling"),
    ("unknown nested key", lambda t: t.replace("budget_ms = 200", "budget_ms = 200\nbudgte = 1"),
     "runtime.budgte", "spelling"),
    ("wrong type", lambda t: t.replace("budget_ms = 200", 'budget_ms = "fast"'),
     "runtime.budget_ms", "number"),
    ("out of range", lambda t: t.replace("min_score = 0.5", "min_score = 1.5"),
     "rules[0].min_score", "at most 1"),
    ("negative budget", lambda t: t.replace("budget_ms = 200", "budget_ms = -5"),
     "runtime.budget_ms", "above 0"),
    ("bad choice", lambda t: t.replace('fps = 30', 'fps = 30\nmode = "newest"'),
     "source.mode", "'latest'"),
    ("missing model file", lambda t: t.replace('path = "model.onnx"', 'path = "nope.onnx"'),
     "model.path", "existing .onnx"),
    ("missing video file", lambda t: t.replace('url = "pattern:"', 'url = "file:gone.mp4"'),
     "source.url", "fix the path"),
    ("missing required key", lambda t: t.replace('device_id = "test-cam"', ""),
     "device_id", "add"),
    ("missing safe action", lambda t: t.replace('[fail_safe]\naction = "stop"', ""),
     "fail_safe.action", "actuator"),
    ("unknown url scheme", lambda t: t.replace('url = "pattern:"', 'url = "ftp://x"'),
     "source.url", "rtsp"),
    ("zone not defined", lambda t: t.replace('zone = "gate"', 'zone = "exit"'),
     "rules[0].zone", "[[zones]]"),
    ("loop on a live source", lambda t: t.replace("fps = 30", "fps = 30\nloop = true"),
     "source.loop", "file:"),
    ("debounce k > n", lambda t: t.replace('action = "reject"', 'action = "reject"\ndebounce = [3, 2]'),
     "rules[0].debounce", "k ≤ n"),
    ("bad polygon", lambda t: t.replace("polygon = [[0.3, 0.5], [0.7, 0.5], [0.7, 1.0], [0.3, 1.0]]",
                                        "polygon = [[0.3, 0.5], [0.7]]"), "zones[0].polygon", "points"),
    ("unknown output", lambda t: t.replace('type = "stdout"', 'type = "kafka"'),
     "outputs[0].type", "'jsonl'"),
    ("unknown family", lambda t: t.replace('labels = "labels.txt"', 'labels = "labels.txt"\nfamily = "yolov9"'),
     "model.family", "package.module:function"),
    ("decoder does not import", lambda t: t.replace('labels = "labels.txt"',
     'labels = "labels.txt"\nfamily = "no_such_module_x:decode"'), "model.family", "PYTHONPATH"),
    ("labels not UTF-8", lambda t: t.replace('labels = "labels.txt"', 'labels = "latin1.txt"'),
     "model.labels", "UTF-8"),
    ("jsonl path is a folder", lambda t: t + '\n[[outputs]]\ntype = "jsonl"\npath = "."\n',
     "outputs[1].path", "folder"),
    ("huge size", lambda t: t.replace("fps = 30", "fps = 30\nsize = [100000, 100000]"),
     "source.size", "at most 8192"),
    ("not TOML", lambda t: t + "\n[[[broken\n", "", "syntax"),
    ("unknown provider", lambda t: t.replace("budget_ms = 200", 'budget_ms = 200\nproviders = ["gpu"]'),
     "runtime.providers", "cuda"),
    ("unknown overrun policy", lambda t: t.replace("budget_ms = 200", 'budget_ms = 200\non_overrun = "retry"'),
     "runtime.on_overrun", "hold_last"),
    ("rung without size or model", lambda t: t.replace(
        "budget_ms = 200", 'budget_ms = 200\n[[runtime.ladder.rungs]]\nname = "small"'),
     "runtime.ladder.rungs[0].size", "smaller size"),
    ("rung model missing", lambda t: t.replace(
        "budget_ms = 200", 'budget_ms = 200\n[[runtime.ladder.rungs]]\nname = "s"\npath = "s.onnx"'),
     "runtime.ladder.rungs[0].path", "fix the path"),
    ("rung named main", lambda t: t.replace(
        "budget_ms = 200", 'budget_ms = 200\n[[runtime.ladder.rungs]]\nname = "main"\nsize = [32, 32]'),
     "runtime.ladder.rungs[0].name", "its own name"),
    ("ladder headroom", lambda t: t.replace(
        "budget_ms = 200", 'budget_ms = 200\n[runtime.ladder]\nheadroom = 1.5'),
     "runtime.ladder.headroom", "at most 1"),
    ("mqtt without host", lambda t: t + MQTT.replace('host = "127.0.0.1"\n', ""),
     "outputs[1].host", "add host"),
    ("mqtt host with port", lambda t: t + MQTT.replace("127.0.0.1", "broker:1883"),
     "outputs[1].host", "goes in port"),
    ("mqtt unknown key", lambda t: t + MQTT + "qos = 1\n", "outputs[1].qos", "spelling"),
    ("mqtt port", lambda t: t + MQTT + "port = 70000\n", "outputs[1].port", "at most 65535"),
    ("mqtt qos", lambda t: t + MQTT + "decision_qos = 3\n", "outputs[1].decision_qos", "at most 2"),
    ("mqtt protocol", lambda t: t + MQTT + 'protocol = "3.1"\n', "outputs[1].protocol", "'5'"),
    ("mqtt keepalive", lambda t: t + MQTT + "keepalive = 0\n", "outputs[1].keepalive", "at least 5"),
    ("mqtt prefix wildcard", lambda t: t + MQTT + 'prefix = "plant/#"\n', "outputs[1].prefix",
     "wildcards"),
    ("mqtt queue folder", lambda t: t + MQTT.replace('"q.sqlite"', '"nowhere/q.sqlite"'),
     "outputs[1].queue_path", "create the folder"),
    ("mqtt queue_max", lambda t: t + MQTT + "queue_max = 0\n", "outputs[1].queue_max", "at least 1"),
    ("mqtt max_rate", lambda t: t + MQTT + "max_rate = 0\n", "outputs[1].max_rate", "at least 1"),
    ("mqtt backoff", lambda t: t + MQTT + "reconnect_min_s = 5\nreconnect_max_s = 1\n",
     "outputs[1].reconnect_max_s", "raise it"),
    ("mqtt ca missing", lambda t: t + MQTT + 'ca_file = "ca.pem"\n', "outputs[1].ca_file",
     "fix the path"),
    ("mqtt tls key without tls", lambda t: t + MQTT + "tls_verify = false\n",
     "outputs[1].tls_verify", "tls = true"),
    ("mqtt cert without key", lambda t: t + MQTT + 'cert_file = "labels.txt"\n',
     "outputs[1].key_file", "both"),
    ("mqtt password without user", lambda t: t + MQTT + 'password = "s3cret"\n',
     "outputs[1].password", "add username"),
    ("mqtt two passwords", lambda t: t + MQTT + 'username = "u"\npassword = "p"\n'
     'password_env = "X"\n', "outputs[1].password_env", "only one"),
    ("mqtt password env unset", lambda t: t + MQTT + 'username = "u"\n'
     'password_env = "EDGERT_TEST_UNSET_VAR"\n', "outputs[1].password_env", "Environment="),
    ("mqtt password file missing", lambda t: t + MQTT + 'username = "u"\n'
     'password_file = "secret.txt"\n', "outputs[1].password_file", "fix the path"),
    ("mqtt prefix under $", lambda t: t + MQTT + 'prefix = "$SYS/edgert/"\n', "outputs[1].prefix",
     "reserved for the broker"),
    ("mqtt client_id with NUL", lambda t: t + MQTT + 'client_id = "cam\\u0000one"\n',
     "outputs[1].client_id", "NUL"),
    ("mqtt queue_sync", lambda t: t + MQTT + 'queue_sync = "sometimes"\n', "outputs[1].queue_sync",
     "number"),
    ("serial without port", lambda t: t + SERIAL.replace('port = "loop://"\n', ""),
     "outputs[1].port", "/dev/ttyUSB0"),
    ("serial unknown key", lambda t: t + SERIAL + "baud = 9600\n", "outputs[1].baud", "spelling"),
    ("serial jsonl key", lambda t: t + SERIAL + 'path = "x.jsonl"\n', "outputs[1].path", "spelling"),
    ("serial unknown url", lambda t: t + SERIAL.replace("loop://", "ftp://host"),
     "outputs[1].port", "socket://host:port"),
    ("serial socket without port", lambda t: t + SERIAL.replace("loop://", "socket://plc"),
     "outputs[1].port", "socket://HOST:PORT"),
    ("serial baudrate", lambda t: t + SERIAL + "baudrate = 0\n", "outputs[1].baudrate", "at least 50"),
    ("serial baudrate too high", lambda t: t + SERIAL + "baudrate = 5000000\n", "outputs[1].baudrate",
     "at most 4000000"),
    ("serial baudrate type", lambda t: t + SERIAL + 'baudrate = "fast"\n', "outputs[1].baudrate",
     "whole number"),
    ("serial on_missing", lambda t: t + SERIAL + 'on_missing = "retry"\n', "outputs[1].on_missing",
     "'wait'"),
    ("serial heartbeat too fast", lambda t: t + SERIAL + "heartbeat_ms = 1\n",
     "outputs[1].heartbeat_ms", "at least 10"),
    ("serial write timeout", lambda t: t + SERIAL + "write_timeout_ms = 0\n",
     "outputs[1].write_timeout_ms", "at least 1"),
    ("serial ack not bool", lambda t: t + SERIAL + 'ack = "yes"\n', "outputs[1].ack", "true or false"),
    ("serial retries without ack", lambda t: t + SERIAL + "ack_retries = 3\n",
     "outputs[1].ack_retries", "ack = true"),
    ("serial negative retries", lambda t: t + SERIAL + "ack = true\nack_retries = -1\n",
     "outputs[1].ack_retries", "at least 0"),
    ("serial miss streak", lambda t: t + SERIAL + "miss_streak = 1.5\n", "outputs[1].miss_streak",
     "whole number"),
    ("serial queue", lambda t: t + SERIAL + "queue = 0\n", "outputs[1].queue", "at least 1"),
    ("serial reopen backoff", lambda t: t + SERIAL + "reopen_initial_s = 5\nreopen_max_s = 1\n",
     "outputs[1].reopen_max_s", "raise it"),
    ("serial port twice", lambda t: t + SERIAL.replace("loop://", "/dev/ttyS0")
     + SERIAL.replace("loop://", "/dev/ttyS0"), "outputs[2].port", "its own port"),
    ("serial action too long", lambda t: t.replace('action = "reject"', 'action = "' + "r" * 33 + '"')
     + SERIAL, "rules[0].action", "at most 32"),
    ("serial safe action too long", lambda t: t.replace('action = "stop"', 'action = "' + "é" * 17 + '"')
     + SERIAL, "fail_safe.action", "at most 32"),
]


@pytest.mark.parametrize("name,edit,key,fix", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_sentence_with_file_and_key(workdir: Path, name, edit, key, fix) -> None:
    path = write_config(workdir / "device.toml", edit(GOOD))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert key in msg, msg
    assert fix in msg, msg
    assert "\n" not in msg


def test_cli_reports_bad_config_with_exit_2_and_no_traceback(workdir: Path) -> None:
    path = write_config(workdir / "device.toml", GOOD.replace("budget_ms = 200", "budget_ms = 0"))
    for verb in ("check", "run"):
        proc = edgert(verb, str(path))
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "runtime.budget_ms" in lines[0] and str(path) in lines[0]


@pytest.mark.parametrize("case", ["size contradicts model", "labels count", "not onnx",
                                  "truncated", "dynamic without size", "rule label unknown",
                                  "rule label not in metadata names", "rung labels differ"])
def test_model_contradictions_are_user_errors(workdir: Path, case: str) -> None:
    text = GOOD
    if case == "size contradicts model":   # a model that holds its size in a Reshape
        yolo_constant(workdir / "model.onnx", one_box_pred(), reshape=(1, 3, 64, 64))
        text = text.replace('labels = "labels.txt"', 'labels = "labels.txt"\n\n[model.input]\nsize = [32, 32]')
    elif case == "labels count":
        (workdir / "labels.txt").write_text("a\nb\nc\n")
        text = text.replace('labels = ["defect"]', 'labels = ["a"]')
    elif case == "not onnx":
        (workdir / "model.onnx").write_text("this is not a model")
    elif case == "truncated":
        data = (workdir / "model.onnx").read_bytes()
        (workdir / "model.onnx").write_bytes(data[: len(data) // 2])
    elif case == "dynamic without size":
        yolo_constant(workdir / "model.onnx", one_box_pred(), dynamic=True)
    elif case == "rule label unknown":
        text = text.replace('labels = ["defect"]', 'labels = ["dog"]')
    elif case == "rule label not in metadata names":
        yolo_constant(workdir / "model.onnx", one_box_pred(),
                      metadata={"names": "{0: 'part', 1: 'defect'}"})
        text = text.replace('labels = "labels.txt"\n', "").replace('labels = ["defect"]',
                                                                       'labels = ["defct"]')
    elif case == "rung labels differ":
        yolo_constant(workdir / "other.onnx", one_box_pred(classes=3))
        text = text.replace("budget_ms = 200", 'budget_ms = 200\n[[runtime.ladder.rungs]]\n'
                            'name = "small"\npath = "other.onnx"')
    path = write_config(workdir / "device.toml", text)
    proc = edgert("check", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # One sentence (after the first-start notice on a cold kernel cache, as in CI).
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln != NOTICE]
    assert len(lines) == 1, proc.stderr
    assert any(f in proc.stderr for f in ("model.onnx", "device.toml", "other.onnx"))
    if case.startswith("rule label"):
        assert "rules[0].labels" in proc.stderr and "defect" in proc.stderr
    if case == "rung labels differ":   # the rung's 3 classes against the config's 2 labels
        assert "other.onnx" in proc.stderr and "labels" in proc.stderr
    if case == "size contradicts model":
        assert ("model.input.size: onnxruntime cannot run" in proc.stderr
                and "[1, 3, 32, 32] instead of the [1, 3, 64, 64] its file declares" in proc.stderr
                and "remove model.input.size" in proc.stderr), proc.stderr


def test_check_prints_summary_of_what_bound(workdir: Path) -> None:
    proc = edgert("check", str(write_config(workdir / "device.toml", GOOD)))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "CPUExecutionProvider" in out
    assert "images [1, 3, 64, 64]" in out
    assert "200 ms" in out and "'stop'" in out


@pytest.mark.parametrize("policy", ["fallback", "fail"])
def test_missing_provider_falls_back_or_refuses_as_configured(workdir: Path, policy: str) -> None:
    text = GOOD.replace("budget_ms = 200", f'budget_ms = 200\nproviders = ["cuda", "cpu"]\n'
                        f'provider_policy = "{policy}"\n\n[runtime.provider_options.cuda]\n'
                        "device_id = 0")
    proc = edgert("check", str(write_config(workdir / "device.toml", text)))
    if policy == "fallback":
        assert proc.returncode == 0, proc.stderr
        assert "bound CPUExecutionProvider; not bound: cuda (degraded" in proc.stdout
        assert proc.stderr.count("degraded") == 1          # warned once
    else:
        assert proc.returncode == 2
        assert "runtime.providers asks for cuda" in proc.stderr and "fallback" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_provider_options_for_an_unlisted_provider_are_rejected(workdir: Path) -> None:
    text = GOOD.replace("budget_ms = 200", "budget_ms = 200\n\n[runtime.provider_options.openvino]\n"
                        'device_type = "CPU"')
    with pytest.raises(ConfigError, match=r"runtime\.provider_options\.openvino.*add 'openvino'"):
        load_config(write_config(workdir / "device.toml", text))


def test_model_toml_beside_the_model_gives_defaults_the_config_overrides(workdir: Path) -> None:
    (workdir / "names.txt").write_text("part\ndefect\n")
    (workdir / "model.toml").write_text(
        '[model]\nlabels = "names.txt"\nconf = 0.6\n\n[model.input]\ncolor = "rgb"\nscale = 0.5\n')
    text = GOOD.replace('labels = "labels.txt"', "iou = 0.3\n\n[model.input]\nscale = 0.25")
    cfg = load_config(write_config(workdir / "device.toml", text))
    assert cfg.model.labels == ("part", "defect") and cfg.model.conf == 0.6
    assert cfg.model.iou == 0.3
    assert cfg.model.input.color == "rgb" and cfg.model.input.scale == 0.25


def test_model_toml_beside_a_symlinked_model_is_read(tmp_path: Path, material: Path) -> None:
    """A device folder of links to shared models keeps its own model.toml beside each link."""
    shared = material / "models/yolox_nano_coco_416.onnx"
    (tmp_path / "yolox.onnx").symlink_to(shared)
    (tmp_path / "model.toml").write_text(
        f'[model]\nfamily = "yolox"\nlabels = "{material / "models/coco80.names"}"\n\n'
        '[model.input]\nalign = "top_left"\n')
    text = GOOD.replace('path = "model.onnx"\nlabels = "labels.txt"', 'path = "yolox.onnx"')
    text = text.replace('labels = ["defect"]', 'labels = ["person"]')
    cfg = load_config(write_config(tmp_path / "device.toml", text))
    assert cfg.model.path == shared.resolve()
    assert cfg.model.family == "yolox" and cfg.model.input.align == "top_left"
    assert cfg.model.labels is not None and len(cfg.model.labels) == 80


def test_model_toml_beside_the_link_wins_over_the_one_beside_its_target(workdir: Path) -> None:
    store, device = workdir / "store", workdir / "device"
    store.mkdir(), device.mkdir()
    yolo_constant(store / "model.onnx", one_box_pred())
    (store / "model.toml").write_text("[model]\nconf = 0.6\niou = 0.3\n")
    (device / "model.onnx").symlink_to(store / "model.onnx")
    text = GOOD.replace('labels = "labels.txt"', f'labels = "{workdir / "labels.txt"}"')
    cfg = load_config(write_config(device / "device.toml", text))
    assert (cfg.model.conf, cfg.model.iou) == (0.6, 0.3)        # the target's card, no other
    (device / "model.toml").write_text("[model]\nconf = 0.7\n")
    cfg = load_config(device / "device.toml")
    assert (cfg.model.conf, cfg.model.iou) == (0.7, 0.45)       # the link's card, alone


def test_a_fault_in_model_toml_names_model_toml(workdir: Path) -> None:
    (workdir / "model.toml").write_text('[model]\nconf = "high"\n')
    with pytest.raises(ConfigError) as err:
        load_config(write_config(workdir / "device.toml", GOOD))
    assert str(workdir / "model.toml") in str(err.value) and "model.conf" in str(err.value)


def test_an_onnxruntime_failure_keeps_the_part_that_explains_it(workdir: Path) -> None:
    """The model reshapes its input to [1, 7, -1], which a 64x64 input cannot fill; the reason
    comes after a C++ source location, well past the first 200 characters of ORT's message."""
    yolo_constant(workdir / "model.onnx", one_box_pred(), dynamic=True, reshape=(1, 7, -1))
    text = GOOD.replace('labels = "labels.txt"',
                        'labels = "labels.txt"\n\n[model.input]\nsize = [64, 64]')
    proc = edgert("check", str(write_config(workdir / "device.toml", text)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]   # a cold start says "compiling kernels" first
    assert line.startswith(f"edgert: {workdir / 'device.toml'}: model.input: "), line
    assert "cannot be reshaped to the requested shape" in line and "{1,3,64,64}" in line, line
    assert "[ONNXRuntimeError]" not in line and "onnxruntime_src" not in line, line


def test_mqtt_defaults_follow_the_device_id_and_hide_the_password(workdir: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(workdir))
    monkeypatch.setenv("EDGERT_TEST_MQTT_PW", "s3cret-from-env")
    text = GOOD + MQTT.replace('queue_path = "q.sqlite"\n', "") + (
        'username = "edge"\npassword_env = "EDGERT_TEST_MQTT_PW"\n')
    cfg = load_config(write_config(workdir / "device.toml", text)).outputs[1].mqtt
    assert cfg is not None
    assert cfg.client_id == "edgert-test-cam" and cfg.prefix == "edgert/test-cam/"
    assert cfg.queue_path == workdir.resolve() / "mqtt-test-cam.sqlite"
    assert (cfg.port, cfg.decision_qos, cfg.protocol, cfg.tls) == (1883, 1, "3.1.1", False)
    assert cfg.password == "s3cret-from-env" and "s3cret" not in repr(cfg)
    (workdir / "pw.txt").write_text("from-file\n")
    text = GOOD + MQTT + 'prefix = "plant/a"\nusername = "u"\npassword_file = "pw.txt"\ntls = true\n'
    cfg = load_config(write_config(workdir / "device.toml", text)).outputs[1].mqtt
    assert cfg.prefix == "plant/a/" and cfg.password == "from-file" and cfg.port == 8883


def test_a_password_of_the_wrong_type_is_never_echoed(workdir: Path) -> None:
    text = GOOD + MQTT + 'username = "u"\npassword = 73310042\n'
    with pytest.raises(ConfigError) as err:
        load_config(write_config(workdir / "device.toml", text))
    assert "outputs[1].password" in str(err.value) and "73310042" not in str(err.value)


def test_a_world_readable_password_file_is_a_warning(workdir: Path, caplog) -> None:
    (workdir / "pw.txt").write_text("from-file\n")
    (workdir / "pw.txt").chmod(0o644)
    text = GOOD + MQTT + 'username = "u"\npassword_file = "pw.txt"\n'
    cfg = load_config(write_config(workdir / "device.toml", text)).outputs[1].mqtt
    assert cfg is not None and cfg.password == "from-file"
    assert "every user can read" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    (workdir / "pw.txt").chmod(0o600)
    load_config(write_config(workdir / "device.toml", text))
    assert "every user can read" not in caplog.text


def test_queue_sync_is_seconds_and_the_old_words_keep_their_promise(workdir: Path) -> None:
    for given, seconds in (("0.25", 0.25), ('"full"', 0.0), ('"normal"', 1.0)):
        text = GOOD + MQTT + f"queue_sync = {given}\n"
        cfg = load_config(write_config(workdir / "device.toml", text)).outputs[1].mqtt
        assert cfg is not None and cfg.queue_sync == seconds


LINES = """
[[lines]]
name = "door"
p1 = [320, 0]
p2 = [320, 480]
"""
POLY = "polygon = [[0.3, 0.5], [0.7, 0.5], [0.7, 1.0], [0.3, 1.0]]"


@pytest.mark.parametrize("name, edit, key, fix", [
    ("fraction above 1", lambda t: t.replace(POLY, "polygon = [[0, 0], [10, 0], [10, 10]]"),
     "zones[0].units", 'units = "pixels"'),
    ("pixel zone outside the frame", lambda t: t.replace(POLY, 'units = "pixels"\n'
     "polygon = [[0, 0], [900, 0], [900, 100]]"), "zones[0].polygon", "within 640x480"),
    ("pixel line outside the frame", lambda t: t + LINES.replace("480]", "900]"),
     "lines[0].p1/p2", "within 640x480"),
    ("empty polygon", lambda t: t.replace(POLY, "polygon = []"), "zones[0].polygon", "points"),
    ("polygon on one line", lambda t: t.replace(POLY, "polygon = [[0.1, 0.1], [0.2, 0.2], "
     "[0.3, 0.3]]"), "zones[0].polygon", "not on one line"),
    ("self-intersecting polygon", lambda t: t.replace(POLY, "polygon = [[0.1, 0.1], [0.9, 0.9], "
     "[0.9, 0.1], [0.1, 0.9]]"), "zones[0].polygon", "in order around"),
    ("zero-length line", lambda t: t + LINES.replace("p2 = [320, 480]", "p2 = [320, 0]"),
     "lines[0].p2", "two different end points"),
    ("direction without a line", lambda t: t.replace('action = "reject"',
     'action = "reject"\ndirection = "left_to_right"'), "rules[0].direction", "crosses"),
    ("line that does not exist", lambda t: t.replace('zone = "gate"', 'crosses = "door"'),
     "rules[0].crosses", "[[lines]]"),
    ("direction that never happens", lambda t: t.replace('zone = "gate"', 'crosses = "door"\n'
     'direction = "top_to_bottom"') + LINES, "rules[0].direction", "left_to_right"),
    ("label the model lacks", lambda t: t.replace('labels = ["defect"]', 'labels = ["person"]'),
     "rules[0].labels", "defect"),
    ("dwell without a zone", lambda t: t.replace('zone = "gate"', "dwell_s = 5"),
     "rules[0].dwell_s", "zone"),
    ("both debounces", lambda t: t.replace('action = "reject"', 'action = "reject"\n'
     "debounce = [2, 3]\ndebounce_s = 0.5"), "rules[0].debounce_s", "keep one"),
])
def test_decide_mistakes_name_the_rule_and_the_fix(workdir: Path, name, edit, key, fix) -> None:
    proc = edgert("check", str(write_config(workdir / "device.toml", edit(GOOD))))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and key in err and fix in err, err


def test_rules_with_lines_counts_and_dwell_load(workdir: Path) -> None:
    text = GOOD.replace('zone = "gate"', 'crosses = "door"\ndirection = "left_to_right"') + LINES
    text += '[[rules]]\nname = "crowd"\nzone = "gate"\nmin_count = 3\naction = "slow"\n'
    cfg = load_config(write_config(workdir / "ok.toml", text))
    assert cfg.rules[0].tracked and cfg.lines[0].units == "pixels"
    assert cfg.rules[1].min_count == 3 and not cfg.rules[1].tracked


ONE_SOURCE = '[source]\nurl = "pattern:"\nfps = 30\n'
TWO = GOOD.replace(ONE_SOURCE, """
[[sources]]
id = "cam1"
url = "pattern:"
fps = 30

[[sources]]
id = "cam2"
url = "pattern:"
size = [240, 320]
fail_safe = "halt"
""").replace("""zone = "gate"
action = "reject"
""", """zone = "gate"
action = "reject"
sources = ["cam1"]

[[rules]]
name = "anything"
action = "look"
""").replace("[[zones]]\nname = \"gate\"\n", '[[zones]]\nname = "gate"\nsources = ["cam1"]\n') + LINES


def test_several_sources_load_with_ids_and_their_own_fail_safe(workdir: Path) -> None:
    cfg = load_config(write_config(workdir / "two.toml", TWO))
    assert cfg.named_sources and [s.id for s in cfg.sources] == ["cam1", "cam2"]
    assert cfg.source is cfg.sources[0] and cfg.sources[1].size == (240, 320)
    assert (cfg.sources[0].fail_safe, cfg.sources[1].fail_safe) == (None, "halt")
    one, two = cfg.for_source("cam1"), cfg.for_source("cam2")
    assert [r.name for r in one.rules] == ["defect-in-gate", "anything"]
    assert [r.name for r in two.rules] == ["anything"]
    assert [z.name for z in one.zones] == ["gate"] and two.zones == ()
    assert one.lines == two.lines == cfg.lines                  # no sources: every source
    assert (one.fail_safe.action, two.fail_safe.action) == ("stop", "halt")
    assert two.source.id == "cam2" and two.sources == (two.source,)
    assert cfg.runtime.batching == "deadline" and cfg.runtime.max_batch == 4
    single = load_config(write_config(workdir / "one.toml", GOOD))
    assert not single.named_sources and single.sources == (single.source,)
    assert single.source.id == "main" and single.source.fail_safe is None


def test_runtime_batching_keys_load(workdir: Path) -> None:
    text = TWO.replace("budget_ms = 200", 'budget_ms = 200\nbatching = "fixed"\nmax_batch = 8\n'
                       "batch_timeout_ms = 20")
    rt = load_config(write_config(workdir / "two.toml", text)).runtime
    assert (rt.batching, rt.max_batch, rt.batch_timeout_ms) == ("fixed", 8, 20.0)


def _outputs_for(t: str, ids: str) -> str:
    return t.replace('type = "stdout"', f'type = "stdout"\nsources = {ids}')


SOURCES_BAD = [
    ("both source and sources", lambda t: t + '\n[source]\nurl = "pattern:"\n', "sources",
     "keep one"),
    ("neither source nor sources", lambda t: GOOD.replace(ONE_SOURCE, ""), "source.url",
     "or [[sources]]"),
    ("id missing", lambda t: t.replace('id = "cam2"\n', ""), "sources[1].id", "add id"),
    ("id not a topic level", lambda t: t.replace('id = "cam2"', 'id = "cam/2"'),
     "sources[1].id", "MQTT topic"),
    ("id twice", lambda t: t.replace('id = "cam2"', 'id = "cam1"'), "sources[1].id",
     "its own id"),
    ("sources empty", lambda t: GOOD.replace(ONE_SOURCE, "").replace(
        'device_id = "test-cam"', 'device_id = "test-cam"\nsources = []'), "sources",
     "add a [[sources]]"),
    ("too many sources", lambda t: t + "".join(f'\n[[sources]]\nid = "c{i}"\nurl = "pattern:"\n'
                                                for i in range(15)), "sources", "own edgert process"),
    ("fail_safe not a string", lambda t: t.replace('fail_safe = "halt"', "fail_safe = 1"),
     "sources[1].fail_safe", "string"),
    ("fail_safe empty", lambda t: t.replace('fail_safe = "halt"', 'fail_safe = ""'),
     "sources[1].fail_safe", "[fail_safe] action"),
    ("id on [source]", lambda t: GOOD.replace('fps = 30', 'fps = 30\nid = "cam1"'), "source.id",
     "spelling"),
    ("unknown id on a rule", lambda t: t.replace('sources = ["cam1"]\n\n[[rules]]',
                                                 'sources = ["cam3"]\n\n[[rules]]'),
     "rules[0].sources", "cam1, cam2"),
    ("unknown id on a zone", lambda t: t.replace('name = "gate"\nsources = ["cam1"]',
                                                 'name = "gate"\nsources = ["cam9"]'),
     "zones[0].sources", "cam1, cam2"),
    ("unknown id on a line", lambda t: t.replace('p2 = [320, 480]', 'p2 = [320, 480]\n'
                                                 'sources = ["x"]'), "lines[0].sources", "cam1"),
    ("unknown id on an output", lambda t: _outputs_for(t, '["cam1", "cam7"]'),
     "outputs[0].sources", "'cam7'"),
    ("empty sources on a rule", lambda t: t.replace('action = "look"', 'action = "look"\n'
                                                    "sources = []"), "rules[1].sources", "remove it"),
    ("sources not a list", lambda t: t.replace('action = "look"', 'action = "look"\n'
                                               'sources = "cam1"'), "rules[1].sources", "list"),
    ("sources without [[sources]]", lambda t: _outputs_for(GOOD, '["main"]'),
     "outputs[0].sources", "use [[sources]] with ids, or remove it"),
    ("rule beyond its zone", lambda t: t.replace('sources = ["cam1"]\n\n[[rules]]', "\n[[rules]]"),
     "rules[0].sources", 'cam2 (every source, as it sets no sources), but zone \'gate\' does not (it '
     'applies to cam1); set sources = ["cam1"] on the rule'),
    ("rule beyond its line", lambda t: t.replace('action = "look"', 'action = "look"\n'
                                                 'crosses = "door"').replace(
        "p2 = [320, 480]", 'p2 = [320, 480]\nsources = ["cam2"]'), "rules[1].sources",
     "but line 'door' does not"),
    ("zones_only, a source without rules", lambda t: t.replace(
        'action = "look"\n', 'action = "look"\nzone = "gate"\nsources = ["cam1"]\n')
     + "\n[motion]\nzones_only = true\n", "motion.zones_only", "'cam2'"),
    ("serial: a source's fail_safe too long", lambda t: t.replace(
        'fail_safe = "halt"', 'fail_safe = "' + "h" * 33 + '"') + SERIAL,
     "sources[1].fail_safe", "at most 32"),
    ("batching", lambda t: t.replace("budget_ms = 200", 'budget_ms = 200\nbatching = "auto"'),
     "runtime.batching", "'deadline'"),
    ("max_batch", lambda t: t.replace("budget_ms = 200", "budget_ms = 200\nmax_batch = 65"),
     "runtime.max_batch", "at most 64"),
    ("max_batch whole", lambda t: t.replace("budget_ms = 200", "budget_ms = 200\nmax_batch = 2.5"),
     "runtime.max_batch", "whole number"),
    ("batch_timeout_ms", lambda t: t.replace("budget_ms = 200", "budget_ms = 200\n"
                                             "batch_timeout_ms = 0"), "runtime.batch_timeout_ms",
     "above 0"),
    ("batch_timeout_ms too long", lambda t: t.replace("budget_ms = 200", "budget_ms = 200\n"
                                                      "batch_timeout_ms = 20000"),
     "runtime.batch_timeout_ms", "at most 10000"),
]


@pytest.mark.parametrize("name,edit,key,fix", SOURCES_BAD, ids=[b[0] for b in SOURCES_BAD])
def test_bad_sources_name_the_key_and_the_fix(workdir: Path, name, edit, key, fix) -> None:
    test_bad_config_is_one_sentence_with_file_and_key(workdir, name, lambda _: edit(TWO), key, fix)


def test_check_runs_on_several_sources(workdir: Path) -> None:
    """`check` on [[sources]] runs (it warms up at the first source's frame size and names only
    that source), and a mistake in a `sources` key is exit 2 like any other."""
    proc = edgert("check", str(write_config(workdir / "two.toml", TWO)))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    bad = TWO.replace('sources = ["cam1"]\n\n[[rules]]', 'sources = ["cam3"]\n\n[[rules]]')
    proc = edgert("check", str(write_config(workdir / "two.toml", bad)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "rules[0].sources" in proc.stderr.strip().splitlines()[-1]
