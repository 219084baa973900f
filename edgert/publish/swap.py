"""Outputs changed by a reload, opened beside the running ones so no record waits or is lost.

The sender's dispatching thread must never block (it fires fail-safes at deadlines), and
opening or closing an output may take seconds (a TLS handshake, MQTT delivering its queue on
close). So a swap is prepared on a thread of its own: outputs that are unchanged stay; new
ones are opened; an output whose device or queue a new one takes over (the same serial port,
the same MQTT queue file) is closed first, and what it would have received meanwhile is held
and handed to its successor — or back to it, reopened, when the new config fails. Only
`commit` changes what the publisher sends to; it runs on the dispatching thread at the frame
boundary the loop chose. The loop asks for a swap only once the rest of the new config (a new
model included) is ready, so a prepared swap is always committed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from edgert.config.types import Config, OutputConfig
from edgert.errors import EdgertError
from edgert.publish.base import Output, Post, Publisher

log = logging.getLogger("edgert.publish")

HELD_MAX = 10_000   # posts held for an output being replaced; beyond, the oldest are dropped


Bound = list[tuple[OutputConfig, Output]]   # each output with the config it came from


def bind(publisher: Publisher, bound: Bound) -> None:
    """Publish to these outputs, each routed as its config says."""
    publisher.replace([out for _, out in bound], [oc.sources for oc, _ in bound])


def resource(oc: OutputConfig) -> tuple:
    """What two outputs cannot both hold: a serial port, an MQTT queue file, a jsonl file."""
    if oc.type == "serial" and oc.serial is not None:
        return ("serial", oc.serial.port)
    if oc.type == "mqtt" and oc.mqtt is not None:
        return ("mqtt", str(oc.mqtt.queue_path))
    if oc.type == "jsonl":
        return ("jsonl", str(oc.path))
    return (oc.type,)


class Held(Publisher):
    """Stands in, as one output, for outputs being replaced: it keeps every call the publisher
    makes on them, in order, and makes them again on their successors."""

    name = "held"

    def __init__(self) -> None:
        super().__init__([])
        self.calls: list[tuple[str, tuple]] = []
        self.dropped = 0

    def publish(self, post: Post) -> None:
        self._each("publish", post)

    send = publish

    def safe_state(self, reason: str, source_id: str | None = None) -> None:
        self._each("safe_state", reason, source_id)   # routed when replayed

    def stats(self) -> dict[str, Any]:
        return {"held": len(self.calls), "dropped": self.dropped}

    def _each(self, method: str, *args: Any, among: Any = None) -> None:
        if len(self.calls) >= HELD_MAX:
            self.calls.pop(0)
            self.dropped += 1
        self.calls.append((method, args))

    def close(self) -> None: ...

    def replay(self, bound: Bound) -> None:
        """Make the calls again on `bound`, each post and safe state routed as there."""
        target = Publisher([])
        bind(target, bound)
        for method, args in self.calls:
            getattr(target, method)(*args)
        if self.dropped:
            log.warning("%d record(s) held during an output swap were dropped (over %d)",
                        self.dropped, HELD_MAX)
        self.calls.clear()


class OutputSwap:
    """One reload's outputs: prepared on a thread, then committed or aborted by the caller."""

    def __init__(self, bound: Bound, old: Config, new: Config,
                 publisher: Publisher, opener: Callable[[Config, int], Output],
                 on_thread: Callable[[], None] = lambda: None) -> None:
        self.publisher, self.opener, self.old, self.new = publisher, opener, old, new
        self._on_thread = on_thread
        wanted = list(new.outputs)
        self.kept: Bound = []
        self.gone: Bound = []
        for oc, out in bound:
            if oc in wanted:
                wanted.remove(oc)
                self.kept.append((oc, out))
            else:
                self.gone.append((oc, out))
        self.added = [i for i, oc in enumerate(new.outputs) if oc in wanted]
        taken = {resource(new.outputs[i]) for i in self.added}
        # Replaced: closed before their successors open; the publisher holds their posts.
        self.replaced = [(oc, out) for oc, out in self.gone if resource(oc) in taken]
        self.held = Held()
        self.opened: Bound = []
        self.reopened: Bound = []
        self.error: str | None = None
        self.done = threading.Event()
        self.reported = False   # the dispatching thread has told the loop
        if self.replaced:   # the held posts are routed when replayed to the successors
            stay = [p for p in bound if p not in self.replaced]
            publisher.replace([out for _, out in stay] + [self.held],
                              [oc.sources for oc, _ in stay] + [()])
        threading.Thread(target=self._prepare, name="edgert-swap", daemon=True).start()

    def _prepare(self) -> None:
        self._on_thread()
        try:
            for _, out in self.replaced:
                _close(out)
            for i in self.added:
                self.opened.append((self.new.outputs[i], self.opener(self.new, i)))
        except EdgertError as e:   # ConfigError included: the new config's mistake
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - a failure to open is the config's rejection
            self.error = f"{type(e).__name__}: {e}"
        if self.error is not None:
            for _, out in self.opened:
                _close(out)
            self.opened = []
            self.reopened = self._reopen()
        self.done.set()

    def _reopen(self) -> Bound:
        """The new config failed: the outputs closed for it come back as they were."""
        back = []
        for oc, _ in self.replaced:
            i = list(self.old.outputs).index(oc)
            try:
                back.append((oc, self.opener(self.old, i)))
            except Exception as e:  # noqa: BLE001 - the world changed meanwhile
                log.error("output %d could not be reopened after a rejected reload: %s", i, e)
        return back

    def commit(self) -> Bound:
        """On the dispatching thread, after `done` without error: publish to the new set;
        returns the outputs now bound. Those that went are closed on a thread (closing may
        deliver a queue)."""
        assert self.error is None and self.done.is_set()
        taken = {resource(oc) for oc, _ in self.replaced}   # new outputs start at the commit
        self.held.replay([(oc, out) for oc, out in self.opened if resource(oc) in taken])
        bound = sorted(self.kept + self.opened, key=lambda p: list(self.new.outputs).index(p[0]))
        bind(self.publisher, bound)
        rest = [out for oc, out in self.gone if all(out is not o for _, o in self.replaced)]
        if rest:
            threading.Thread(target=lambda: [_close(o) for o in rest], name="edgert-close",
                             daemon=True).start()
        return bound

    def restore(self) -> Bound:
        """After `done` with an error: back to the old set, the replaced outputs reopened."""
        assert self.error is not None and self.done.is_set()
        self.held.replay(self.reopened)
        bound = self.kept + [p for p in self.gone if p not in self.replaced] + self.reopened
        bind(self.publisher, bound)
        return bound


def _close(out: Output) -> None:
    try:
        out.close()
    except (OSError, ValueError) as e:
        log.warning("output %s failed to close: %s", out.name, e)
