"""The output interface, what outputs receive, and the fan-out that keeps outputs apart.

Every output takes a `Post` without waiting: it queues it for a thread of its own (a writer,
serial's link, MQTT's forwarder) and returns, so no reader that stops reading, no full disk
and no dead line can hold up whoever publishes. What an output could not deliver it counts
and reports; it never raises into the publisher for a failure of the world.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from edgert.records import Status

log = logging.getLogger("edgert.publish")
INF = float("inf")


@dataclass(frozen=True, slots=True)
class Post:
    """A record as outputs receive it: its JSON line, and what a non-JSON wire needs."""

    kind: str            # decision | event
    line: bytes          # the contract's JSON, no newline
    seq: int
    frame_id: int
    status: str          # a decision's status; "" for an event
    action: str
    captured_at: float   # Unix seconds
    not_after: float = INF   # an `ok` decision: the monotonic instant after which it is stale
    source_id: str | None = None
    fallback: Post | None = None   # an `ok`: what to deliver instead once it is stale


class Output(Protocol):
    """Also, where an output has them (the publisher looks): `safe_state(reason, source_id)`,
    `set_state(status)`, `metrics(line)`, `stats()`, `abandon()`, `dead`, `first`."""

    name: str

    def send(self, post: Post) -> None:
        """Take one record for delivery; never blocks. Raises OSError only for an output that
        can no longer deliver anything (closed, or its reader gone for good)."""

    def close(self) -> None:
        """Deliver what is queued within the output's own time limit, then release it."""


Route = tuple[str, ...]   # the source ids whose posts an output carries; empty: every source


class Publisher:
    """Hands each post to the outputs routed to its source; counts what an output refused."""

    def __init__(self, outputs: Sequence[Output], routes: Sequence[Route] = ()) -> None:
        self.failures: dict[str, int] = {}
        self.replace(outputs, routes)

    def replace(self, outputs: Sequence[Output], routes: Sequence[Route] = ()) -> None:
        """A new set of outputs (a reload's, see `swap`), each with its route (`routes`, in
        the same order; none given: every output carries every source). Counts of outputs
        that stay carry on."""
        if routes and len(routes) != len(outputs):
            raise ValueError(f"{len(routes)} routes for {len(outputs)} outputs")
        # An output that makes a post durable (MQTT's disk queue) gets it before the others:
        # whatever any output published, a crash cannot take from the queue.
        pairs = sorted(zip(outputs, routes or [()] * len(outputs)),
                       key=lambda p: not getattr(p[0], "first", False))
        self.outputs = [o for o, _ in pairs]
        # None unless some output is routed: then a post's source is never looked at.
        self._routes = [frozenset(r) for _, r in pairs] if any(r for _, r in pairs) else None
        self._routed: dict[str | None, list[Output]] = {}   # per source id, made on first use
        for o in self.outputs:
            self.failures.setdefault(o.name, 0)

    def routed(self, source_id: str | None) -> list[Output]:
        """The outputs that carry the posts of `source_id` (None: a run without [[sources]],
        which only unrouted outputs carry)."""
        if self._routes is None:
            return self.outputs
        outs = self._routed.get(source_id)
        if outs is None:
            outs = self._routed[source_id] = [
                o for o, r in zip(self.outputs, self._routes) if not r or source_id in r]
        return outs

    def publish(self, post: Post) -> None:
        for out in self.outputs if self._routes is None else self.routed(post.source_id):
            try:
                out.send(post)
            except (OSError, ValueError) as e:
                self._failed(out, "send", e)

    def _failed(self, out: Output, what: str, e: Exception) -> None:
        n = self.failures[out.name] = self.failures[out.name] + 1
        if n == 1 or n % 1000 == 0:
            log.warning("output %s failed to %s (%d so far): %s", out.name, what, n, e)

    @property
    def dead(self) -> bool:
        """Every output has lost its reader for good (stdout piped into `head`): nobody is
        listening, so the run may as well end."""
        return bool(self.outputs) and all(getattr(o, "dead", False) for o in self.outputs)

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        """Ask the outputs that have a safe state (serial) to command it: with `source_id` (that
        source was lost), only those routed to it; without, every one."""
        self._each("safe_state", reason, source_id,
                   among=self.outputs if source_id is None else self.routed(source_id))

    def set_state(self, status: Status) -> None:
        """Tell outputs that report health (MQTT's retained status) how the loop is doing."""
        self._each("set_state", status)

    def metrics(self, line: bytes) -> None:
        """A metrics record to the outputs that carry metrics (MQTT)."""
        self._each("metrics", line)

    def _each(self, method: str, *args: Any, among: Sequence[Output] | None = None) -> None:
        for out in self.outputs if among is None else among:
            call = getattr(out, method, None)
            if call is None:
                continue
            try:
                call(*args)
            except (OSError, ValueError) as e:
                self._failed(out, method, e)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per output: refused sends, and the output's own counters where it keeps some."""
        out: dict[str, dict[str, Any]] = {}
        for o in self.outputs:
            own = getattr(o, "stats", None)
            out[o.name] = {"failures": self.failures[o.name], **(own() if own else {})}
        return out

    def close(self) -> None:
        for out in self.outputs:
            try:
                out.close()
            except (OSError, ValueError) as e:
                log.warning("output %s failed to close: %s", out.name, e)


class NullOutput:
    """Takes everything, delivers nothing: bench measures publishing up to the output."""

    name = "null"

    def send(self, post: Post) -> None: ...

    def close(self) -> None: ...
