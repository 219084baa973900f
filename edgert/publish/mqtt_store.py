"""The MQTT store-and-forward queue on disk: decisions outlive a broker outage, a crash, a reboot.

One SQLite file in WAL mode, rows in arrival order (AUTOINCREMENT, so an id is never reused
and a cursor over ids only moves forward). A row is deleted once the broker acknowledged it.
Bounded: past `max_rows` the oldest rows are deleted and the count is returned to the caller,
which reports it. Only the MQTT forwarder thread uses it after `open`; never the frame loop.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

Row = tuple[int, str, bytes, int]   # id, topic, payload, qos


class StoreLocked(OSError):
    """Another process (a second edgert with the same queue_path) holds the queue."""


class Store:
    """A bounded FIFO of (topic, payload, qos) rows in one SQLite file."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int, max_rows: int) -> None:
        self.path, self.max_rows = path, max_rows
        self._conn, self._lock_fd = conn, lock_fd
        self.count = conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        self.last_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM queue").fetchone()[0]

    @classmethod
    def open(cls, path: Path, max_rows: int, sync: str = "full") -> Store:
        """Open (creating) the queue; raises OSError or sqlite3.Error when it cannot be used."""
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreLocked(f"another process uses the queue {path}") from None
        try:
            # Used by the forwarder thread after this constructor; never by two threads at once.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # Power cuts: in WAL mode synchronous=NORMAL survives a process crash, but the last
            # commits before a power cut may roll back, since the WAL is fsynced only at
            # checkpoints. FULL fsyncs the WAL at every commit, so a committed decision survives
            # the power cut too. The forwarder commits once per batch (one wake-up takes every
            # record queued meanwhile), so FULL costs an fsync per batch, not per record.
            conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
            conn.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL)")
            return cls(path, conn, lock_fd, max_rows)
        except BaseException:
            os.close(lock_fd)
            raise

    def write(self, rows: Sequence[tuple[str, bytes, int]], acked: Iterable[int] = ()) -> int:
        """In one transaction (one fsync): forget `acked` row ids (ids already dropped for room
        are ignored), add `rows` in order, and drop the oldest beyond max_rows. Returns how
        many were dropped for room."""
        acked = [(i,) for i in acked]
        c = self._conn
        c.execute("BEGIN")
        try:
            gone = c.executemany("DELETE FROM queue WHERE id = ?", acked).rowcount if acked else 0
            count = self.count - max(0, gone)
            excess = 0
            if rows:
                c.executemany("INSERT INTO queue (topic, payload, qos) VALUES (?, ?, ?)", rows)
                self.last_id = c.execute("SELECT last_insert_rowid()").fetchone()[0]
                excess = max(0, count + len(rows) - self.max_rows)
                if excess:
                    c.execute("DELETE FROM queue WHERE id IN "
                              "(SELECT id FROM queue ORDER BY id LIMIT ?)", (excess,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.count = count + len(rows) - excess
        return excess

    def after(self, cursor: int, limit: int) -> list[Row]:
        """The oldest rows with an id above `cursor`."""
        return self._conn.execute("SELECT id, topic, payload, qos FROM queue WHERE id > ? "
                                  "ORDER BY id LIMIT ?", (cursor, limit)).fetchall()

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            os.close(self._lock_fd)
