"""systemd's watchdog, fed by the loop's progress only: a loop stuck in a stage stops the pings."""

from __future__ import annotations

import os

from edgert.service.notify import Notifier

STATUS_EVERY_S = 5.0   # STATUS= when systemd asks for no watchdog


class Watchdog:
    """`beat` is called on the loop's thread after a frame was decided or while the source is
    honestly waiting; it sends WATCHDOG=1 (and STATUS=) at most every half `WATCHDOG_USEC`.
    There is no timer thread: when the loop stops calling, systemd stops hearing from it."""

    def __init__(self, notifier: Notifier, period_s: float | None) -> None:
        self.notifier = notifier
        self.period_s = period_s
        self.every_s = period_s / 2 if period_s else STATUS_EVERY_S
        self._next = -float("inf")
        self.pings = 0

    @classmethod
    def from_env(cls, notifier: Notifier) -> Watchdog:
        """WATCHDOG_USEC as systemd sets it; ignored when WATCHDOG_PID names another process."""
        usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
        period = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None
        if pid.isdigit() and int(pid) != os.getpid():
            period = None
        return cls(notifier, period)

    def beat(self, now: float, status: str | None = None) -> bool:
        """True when a message went out (then `status`, if given, went with it)."""
        if now < self._next:
            return False
        self._next = now + self.every_s
        lines = ["WATCHDOG=1"] if self.period_s else []
        if status:
            lines.append(f"STATUS={status}")
        if lines:
            self.notifier.send("\n".join(lines))
            self.pings += self.period_s is not None
        return bool(lines)

    def status(self, text: str) -> None:
        """A STATUS= line now, whatever the period (a rejected reload, a stopping loop)."""
        self.notifier.send(f"STATUS={text}")
