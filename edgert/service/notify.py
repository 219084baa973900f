"""systemd's sd_notify protocol without libsystemd: READY=1 after warm-up, STOPPING=1, WATCHDOG=1."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends to $NOTIFY_SOCKET when systemd started us with Type=notify; otherwise does nothing."""

    def __init__(self, address: str | None) -> None:
        self._sock: socket.socket | None = None
        self._addr = address
        if address:
            if address.startswith("@"):   # abstract namespace socket
                self._addr = "\0" + address[1:]
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, message: str) -> None:
        if self._sock is None or self._addr is None:
            return
        try:
            self._sock.sendto(message.encode(), self._addr)
        except OSError:
            pass   # systemd gone or socket full: notification is best effort by design

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
