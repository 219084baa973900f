"""JSON-lines outputs that need nothing installed: stdout for people and pipes, a file for logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


class StdoutOutput:
    """One JSON object per line on stdout, flushed per record so a pipe reader sees it at once."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, line: str, record: dict) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


class JsonlOutput:
    """Appends records to a file; `flush_every` trades durability for fewer syscalls."""

    def __init__(self, file: TextIO, name: str, flush_every: int = 1) -> None:
        self.name, self.flush_every = name, flush_every
        self._file = file
        self._pending = 0

    @classmethod
    def open(cls, path: Path, flush_every: int = 1) -> JsonlOutput:
        """Append to PATH: a restarted service adds to the log rather than replacing it."""
        return cls(open(path, "a", encoding="utf-8"), f"jsonl:{path}", flush_every)

    def send(self, line: str, record: dict) -> None:
        self._file.write(line + "\n")
        self._pending += 1
        if self._pending >= self.flush_every:
            self._file.flush()
            self._pending = 0

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._pending = 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
