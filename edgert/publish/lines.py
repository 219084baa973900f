"""JSON lines to stdout or a file, written by a thread of their own so the publisher never waits.

A reader that stops reading fills the pipe; a full disk refuses the write. Either way the
writer, not the publisher, is the one that waits or fails: the queue in front of it is bounded
(the oldest line makes room, counted), an `ok` decision that waited past its deadline is
replaced by the overrun policy's record for its frame rather than written late (counted as
stale), a failed line is counted and dropped — and a line
is written whole or not at all: a partial line in a file is cut off again.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

from edgert.clock import LIVE, Clock
from edgert.publish.base import Post

log = logging.getLogger("edgert.publish")

QUEUE = 1024    # lines waiting for a slow reader: ~a minute of decisions at 15 fps
CLOSE_S = 2.0   # at shutdown, how long a stuck reader may keep us


class LineWriter:
    """A bounded queue of lines and the thread that writes them to one file descriptor."""

    def __init__(self, name: str, fd: int, *, truncates: bool, owns_fd: bool,
                 clock: Clock = LIVE, queue: int = QUEUE) -> None:
        self.name, self._fd, self._truncates, self._owns = name, fd, truncates, owns_fd
        self._clock = clock
        self._queue: deque[Post] = deque()
        self._max = queue
        self._cond = threading.Condition()
        self._closing = False
        self.dead = False          # the reader is gone for good (EPIPE)
        self.written = self.dropped = self.stale = self.failed = 0
        self._failing: str | None = None   # the error of the current streak, logged once
        self._thread = threading.Thread(target=self._run, name=f"edgert-{name}", daemon=True)
        self._thread.start()

    def send(self, post: Post) -> None:
        with self._cond:
            if self.dead:
                self.dropped += 1
                return
            if self._closing:
                raise ValueError(f"{self.name} is closed")
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(post)
            self._cond.notify()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"written": self.written, "queued": len(self._queue), "dropped": self.dropped,
                    "stale": self.stale, "failed": self.failed, "dead": self.dead}

    def close(self, timeout: float = CLOSE_S) -> None:
        """Write what is queued for up to `timeout`, then release the descriptor. A reader that
        has stopped reading cannot hold the run beyond it: the thread is left blocked."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                left = len(self._queue)
            log.warning("output %s: its reader stopped reading; %d line(s) not written",
                        self.name, left)
        elif self._owns:
            os.close(self._fd)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                post = self._queue.popleft()
            if post.status == "ok" and self._clock.now() >= post.not_after:
                with self._cond:
                    self.stale += 1
                if post.fallback is None:
                    continue
                post = post.fallback   # the policy's record for that seq: never a gap
            self._write(post.line + b"\n")

    def _write(self, data: bytes) -> None:
        start = os.lseek(self._fd, 0, os.SEEK_CUR) if self._truncates else 0
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as e:
            self._failure(e, start, done)
            return
        with self._cond:
            self.written += 1
        if self._failing is not None:
            log.info("output %s: writing again after %s", self.name, self._failing)
            self._failing = None

    def _failure(self, e: OSError, start: int, done: int) -> None:
        if done and self._truncates:
            try:   # a half line would break every reader of the file: cut it off
                os.ftruncate(self._fd, start)
                os.lseek(self._fd, start, os.SEEK_SET)
            except OSError:
                pass
        with self._cond:
            self.failed += 1
            if e.errno == errno.EPIPE:
                self.dead = True
                self.dropped += len(self._queue)
                self._queue.clear()
        why = {errno.ENOSPC: "the disk is full", errno.EPIPE: "its reader has gone",
               errno.EDQUOT: "the disk quota is used up"}.get(e.errno or 0, e.strerror or str(e))
        if self._failing != why:
            self._failing = why
            log.warning("output %s: %s; lines are counted and dropped%s", self.name, why,
                        "" if self.dead else " until it can write again")


def stdout_output(clock: Clock = LIVE) -> LineWriter:
    """Standard output (file descriptor 1), one record per line."""
    return LineWriter("stdout", 1, truncates=False, owns_fd=False, clock=clock)


def jsonl_output(path: Path, clock: Clock = LIVE,
                 opener: Callable[[str, int, int], int] = os.open) -> LineWriter:
    """Appends to PATH: a restarted service adds to the log rather than replacing it."""
    fd = opener(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    # O_APPEND moves to the end at every write; the writer truncates from its own offset.
    os.lseek(fd, 0, os.SEEK_END)
    return LineWriter(f"jsonl:{path}", fd, truncates=True, owns_fd=True, clock=clock)
