"""SIGINT/SIGTERM ask the loop to stop after the current frame instead of killing it mid-write."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set `stop` on SIGINT/SIGTERM for the duration of the block; restore the old handlers."""
    def handler(signum: int, _frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def on_sighup(event: threading.Event | None) -> Iterator[None]:
    """Set `event` on SIGHUP (systemctl reload) for the duration of the block."""
    if event is None:
        yield
        return
    old = signal.signal(signal.SIGHUP, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, old)
