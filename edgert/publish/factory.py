"""Outputs from config: the one place that knows the concrete output classes."""

from __future__ import annotations

from edgert.clock import LIVE, Clock
from edgert.config.types import Config
from edgert.errors import ConfigError
from edgert.publish.base import Output, Publisher
from edgert.publish.lines import jsonl_output, stdout_output


def make_output(cfg: Config, index: int, clock: Clock = LIVE) -> Output:
    out = cfg.outputs[index]
    if out.type == "jsonl" and out.path is not None:
        try:
            return jsonl_output(out.path, clock)
        except OSError as e:
            raise ConfigError(str(cfg.file), f"outputs[{index}].path", f"cannot be opened for "
                              f"appending ({e.strerror})", "point it at a writable file") from None
    if out.type == "serial" and out.serial is not None:
        from edgert.publish.serial import SerialOutput, open_failure   # loads pyserial
        try:
            return SerialOutput.open(out.serial, f"serial:{out.serial.port}", cfg.fail_safe.action)
        except (OSError, ValueError) as e:   # serial.SerialException is an OSError
            problem, fix = open_failure(out.serial, e)
            raise ConfigError(str(cfg.file), f"outputs[{index}].port", problem, fix) from None
    if out.type == "mqtt" and out.mqtt is not None:
        from edgert.publish.mqtt import MqttOutput, SetupError   # loads paho and sqlite3
        try:
            return MqttOutput.open(out.mqtt, f"mqtt:{out.mqtt.host}:{out.mqtt.port}", cfg.device_id)
        except SetupError as e:
            raise ConfigError(str(cfg.file), f"outputs[{index}].{e.key}", e.problem, e.fix) from None
    return stdout_output(clock)   # validation admits only stdout, jsonl, serial and mqtt


def make_outputs(cfg: Config, clock: Clock = LIVE) -> list[Output]:
    """Every configured output, or none: if one cannot open, those already open are closed
    (a serial output sends its shutdown frame) before the error goes up."""
    made: list[Output] = []
    try:
        for i in range(len(cfg.outputs)):
            made.append(make_output(cfg, i, clock))
    except BaseException:
        Publisher(made).close()
        raise
    return made
