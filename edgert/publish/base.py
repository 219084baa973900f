"""The output interface and the fan-out that isolates outputs from each other and from the loop."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol, Sequence

log = logging.getLogger("edgert.publish")


class Output(Protocol):
    name: str

    def send(self, line: str, record: dict) -> None:
        """Deliver one record (already serialised as `line`, no newline); raise OSError on failure."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class SafeStateOutput(Output, Protocol):
    """An output that can command a safe state (serial); `Publisher.safe_state` finds it."""

    def safe_state(self, reason: str) -> None:
        """Send the configured safe action now (`reason`: "source_lost", …); never blocks."""


class Publisher:
    """Serialises a record once and hands it to every output; counts failures per output."""

    def __init__(self, outputs: Sequence[Output]) -> None:
        self.outputs = list(outputs)
        self.failures = {o.name: 0 for o in self.outputs}

    @staticmethod
    def serialize(record: dict) -> str:
        """One compact JSON line; NaN is refused, since JSON readers on the floor reject it."""
        return json.dumps(record, separators=(",", ":"), allow_nan=False)

    def publish(self, record: dict, line: str | None = None) -> None:
        if line is None:
            line = self.serialize(record)
        for out in self.outputs:
            try:
                out.send(line, record)
            except (OSError, ValueError) as e:
                self.failures[out.name] += 1
                if self.failures[out.name] == 1 or self.failures[out.name] % 1000 == 0:
                    log.warning("output %s failed (%d so far): %s", out.name,
                                self.failures[out.name], e)

    def safe_state(self, reason: str) -> None:
        """Ask every output that has a safe state (serial) to command it; the others carry
        only records. Failures are counted and logged like a failed publish."""
        for out in self.outputs:
            command = getattr(out, "safe_state", None)
            if command is None:
                continue
            try:
                command(reason)
            except (OSError, ValueError) as e:
                self.failures[out.name] += 1
                log.warning("output %s failed to send a safe state (%s): %s", out.name, reason, e)

    def set_state(self, state: str, **detail: Any) -> None:
        """Tell outputs that report health (MQTT's retained status) how the loop is doing."""
        self._each("set_state", state, **detail)

    def metrics(self, line: str) -> None:
        """A metrics record (JSON line) to the outputs that carry metrics (MQTT)."""
        self._each("metrics", line)

    def _each(self, method: str, *args: Any, **kw: Any) -> None:
        for out in self.outputs:
            call = getattr(out, method, None)
            if call is None:
                continue
            try:
                call(*args, **kw)
            except (OSError, ValueError) as e:
                self.failures[out.name] += 1
                log.warning("output %s failed (%s): %s", out.name, method, e)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per output: failed sends, and the output's own counters where it keeps some."""
        out: dict[str, dict[str, Any]] = {}
        for o in self.outputs:
            own = getattr(o, "stats", None)
            out[o.name] = {"failures": self.failures[o.name], **(own() if own else {})}
        return out

    def flush(self) -> None:
        for out in self.outputs:
            try:
                out.flush()
            except (OSError, ValueError) as e:
                log.warning("output %s failed to flush: %s", out.name, e)

    def close(self) -> None:
        self.flush()
        for out in self.outputs:
            try:
                out.close()
            except (OSError, ValueError) as e:
                log.warning("output %s failed to close: %s", out.name, e)
