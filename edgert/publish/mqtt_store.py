"""The MQTT store-and-forward queue on disk: decisions outlive a broker outage, a crash, a reboot.

One SQLite file in WAL mode, rows in arrival order (AUTOINCREMENT: an id is never reused, so a
cursor over ids only moves forward), each with a CRC of its topic and payload and the
record's capture time. `insert` runs on the publishing thread and returns once the row is in
the kernel's page cache (no fsync): a SIGKILL of any process cannot lose it. Power cuts are
covered by `sync`, which the forwarder calls every `queue_sync` seconds (group commit).
Bounded: past `max_rows` the oldest rows are deleted and counted by the caller.
Two connections (the publisher's for inserts, the forwarder's for the rest), writes serialized
by one lock so neither ever waits on SQLite's busy sleep.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import zlib
from pathlib import Path
from typing import Iterable

from edgert.publish.mqtt_damage import Damage, inspect, move_aside

Row = tuple[int, str, bytes, int, float]   # id, topic, payload, qos, captured_at (Unix s)
INSERT = "INSERT INTO queue (topic, payload, qos, crc, captured_at) VALUES (?, ?, ?, ?, ?)"
DELETE_CHUNK = 64        # rows per delete transaction: the publisher waits at most for one
PAGE = 1024              # small pages: every commit appends whole pages to the log (flash wear)
WAL_LIMIT = 1 << 20      # the log is checkpointed and truncated at this size, or at 1/8 of the
                         # free space on a small disk, so it can never fill the disk alone
RESERVE = 256 << 10      # a file kept beside the queue (at most 1/4 of the free space) and
                         # deleted when the disk is full, so a checkpoint and deletes can run


class StoreLocked(OSError):
    """Another process (a second edgert with the same queue_path) holds the queue."""


def crc(topic: str, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(topic.encode()))


def _private(path: Path) -> None:
    """Queue, log and lock hold decisions: the service user's only (SQLite gives -wal and -shm
    the database file's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm", ".lock"):
        p = Path(f"{path}{suffix}")
        if p.exists() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


class Store:
    """A bounded FIFO of (topic, payload, qos, captured_at) rows in one SQLite file."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection,
                 lock_fd: int, max_rows: int, sync_s: float, damage: Damage | None) -> None:
        self.path, self.max_rows, self.sync_s, self.damage = path, max_rows, sync_s, damage
        self._w, self._r, self._lock_fd = writer, reader, lock_fd
        self._lock = threading.Lock()
        self.count = reader.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        self.last_id = reader.execute("SELECT COALESCE(MAX(id), 0) FROM queue").fetchone()[0]
        self.unsynced = 0     # inserts since the last sync
        self.since_checkpoint = 0
        self.checkpoint_every = max(8, _wal_limit(path) // PAGE // 2)   # inserts (~2 pages each)
        self.reserve = Path(f"{path}.reserve")
        self.make_reserve()

    @classmethod
    def open(cls, path: Path, max_rows: int, sync_s: float = 1.0) -> Store:
        """Open (creating) the queue; a damaged one is moved aside (`damage`) and a new one
        started. Raises StoreLocked, or OSError / sqlite3.Error when none can be used."""
        known = Path(f"{path}.lock").exists()
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreLocked(f"another process uses the queue {path}") from None
        try:
            damage = None
            reason = inspect(path, known)
            if reason is not None:
                damage = move_aside(path, reason)
            try:
                w, r = cls._connect(path, sync_s)
            except sqlite3.DatabaseError as e:   # not a database, malformed
                if damage is not None:
                    raise
                damage = move_aside(path, f"SQLite cannot read it: {e}")
                w, r = cls._connect(path, sync_s)
            return cls(path, w, r, lock_fd, max_rows, sync_s, damage)
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _connect(path: Path, sync_s: float) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        _private(path)
        w = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            w.execute(f"PRAGMA page_size={PAGE}")   # only a new file takes it
            w.execute("PRAGMA journal_mode=WAL")
            # 0: every commit fsyncs the log (on the publishing thread); otherwise no fsync at
            # commit, which survives any process crash, and `sync` makes it survive power cuts.
            w.execute(f"PRAGMA synchronous={'FULL' if sync_s == 0 else 'NORMAL'}")
            w.execute("PRAGMA wal_autocheckpoint=0")   # checkpoints are the forwarder's
            w.execute("PRAGMA busy_timeout=200")   # only a TRUNCATE checkpoint (a full disk) holds it
            w.execute(f"PRAGMA journal_size_limit={_wal_limit(path)}")
            w.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                      "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, "
                      "crc INTEGER, captured_at REAL)")
            cols = {c[1] for c in w.execute("PRAGMA table_info(queue)")}
            for col, kind in (("crc", "INTEGER"), ("captured_at", "REAL")):   # an older queue
                if col not in cols:
                    w.execute(f"ALTER TABLE queue ADD COLUMN {col} {kind}")
            check = w.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            r = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            r.execute("PRAGMA wal_autocheckpoint=0")
            r.execute("PRAGMA busy_timeout=2000")   # a TRUNCATE checkpoint waits for an insert
            r.execute(f"PRAGMA journal_size_limit={_wal_limit(path)}")
            return w, r
        except BaseException:
            w.close()
            raise

    def insert(self, topic: str, payload: bytes, qos: int, captured_at: float) -> tuple[int, int]:
        """On the publishing thread: one row, committed to the OS (not fsynced unless
        queue_sync is 0). Returns its id and how many of the oldest were dropped for room."""
        row = (topic, payload, qos, crc(topic, payload), captured_at)
        with self._lock:
            c = self._w
            excess = self.count + 1 - self.max_rows
            if excess <= 0:
                self.last_id = c.execute(INSERT, row).lastrowid
                excess = 0
            else:
                self.last_id = self._in_transaction(INSERT, row, excess)
            self.count += 1 - excess
            self.unsynced += 1
            self.since_checkpoint += 1
        return self.last_id, excess

    def _in_transaction(self, sql: str, row: tuple, excess: int) -> int:
        c = self._w
        c.execute("BEGIN")
        try:
            c.execute("DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)",
                      (excess,))
            last = c.execute(sql, row).lastrowid
            c.execute("COMMIT")
            return last
        except BaseException:
            if c.in_transaction:   # SQLite may have rolled back itself (a full disk)
                c.execute("ROLLBACK")
            raise

    def delete(self, ids: Iterable[int]) -> int:
        """Forget these rows (delivered, refused, expired or damaged); returns how many were
        still there."""
        ids = list(ids)
        total = 0
        for k in range(0, len(ids), DELETE_CHUNK):
            chunk = ids[k:k + DELETE_CHUNK]
            with self._lock:   # one autocommit statement, no fsync: well under a millisecond
                gone = self._r.execute(f"DELETE FROM queue WHERE id IN ({','.join('?' * len(chunk))})",
                                       chunk).rowcount
                self.count -= max(0, gone)
                self.since_checkpoint += 1 + max(0, gone) // 4   # the log grows with deletes too
            total += max(0, gone)
        return total

    def drop_oldest(self, n: int) -> int:
        """Make room on a full disk: delete the `n` oldest rows; returns how many."""
        with self._lock:
            ids = [i for (i,) in self._r.execute("SELECT id FROM queue ORDER BY id LIMIT ?", (n,))]
        return self.delete(ids)

    def after(self, cursor: int, limit: int) -> tuple[list[Row], list[int]]:
        """The oldest rows with an id above `cursor`, and the ids among them that fail their
        integrity check (never to be forwarded)."""
        good: list[Row] = []
        bad: list[int] = []
        for i, topic, payload, qos, check, at in self._r.execute(
                "SELECT id, topic, payload, qos, crc, captured_at FROM queue WHERE id > ? "
                "ORDER BY id LIMIT ?", (cursor, limit)):
            payload = bytes(payload)
            if (check != crc(topic, payload) if check is not None else not _json(payload)):
                bad.append(i)
            else:
                good.append((i, topic, payload, qos, at or 0.0))
        return good, bad

    def sync(self) -> None:
        """Group commit: fsync the log, so what was inserted survives a power cut, then copy
        what the log holds into the file (a checkpoint) so the log stays small."""
        # Not under the write lock: a checkpoint is no writer, and its fsyncs must not hold up
        # the publisher's inserts.
        self.unsynced = 0
        self.since_checkpoint = 0
        self._r.execute("PRAGMA wal_checkpoint(PASSIVE)")   # syncs the log first

    def checkpoint(self) -> None:
        """After a full disk: move the log into the file and truncate the log, freeing space."""
        self.since_checkpoint = 0
        busy = self._r.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise sqlite3.OperationalError("the checkpoint could not finish")

    def free_reserve(self) -> bool:
        """A full disk: give back the reserved space, so that a checkpoint and deletes fit."""
        try:
            self.reserve.unlink()
            return True
        except FileNotFoundError:
            return False

    def make_reserve(self) -> None:
        """Set space aside for the next full disk (best effort: a full disk may refuse)."""
        if self.reserve.exists():
            return
        try:
            free = os.statvfs(self.path.parent).f_bavail * os.statvfs(self.path.parent).f_frsize
            fd = os.open(self.reserve, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, max(PAGE, min(RESERVE, free // 4)))
            finally:
                os.close(fd)
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def close(self) -> None:
        try:
            with self._lock:
                self._r.close()
                self._w.close()
        finally:
            os.close(self._lock_fd)


def _wal_limit(path: Path) -> int:
    try:
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize + (path.stat().st_size if path.exists() else 0)
    except OSError:
        return WAL_LIMIT
    return max(16 * PAGE, min(WAL_LIMIT, free // 8))


def _json(payload: bytes) -> bool:
    try:
        json.loads(payload)
        return True
    except ValueError:
        return False


def describe(path: Path) -> str:
    """For `edgert check`: what the queue at `path` holds, read-only (a running edgert keeps
    its lock; this takes none)."""
    if not path.exists():
        return f"{path}: none yet (created at the first run)"
    reason = inspect(path, Path(f"{path}.lock").exists())
    if reason is not None:
        return f"{path}: DAMAGED ({reason}); the next run moves it aside and starts a new queue"
    try:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            n, oldest = c.execute("SELECT COUNT(*), MIN(captured_at) FROM queue").fetchone()
            check = c.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error as e:
        return f"{path}: DAMAGED ({e}); the next run moves it aside and starts a new queue"
    if check != "ok":
        return f"{path}: DAMAGED ({check}); the next run moves it aside and starts a new queue"
    aside = sorted(p.name for p in path.parent.glob(f"{path.name}.damaged-*")
                   if not p.name.endswith(("-wal", "-shm")))
    age = ""
    if oldest:
        import time
        age = f", the oldest captured {time.time() - oldest:.0f} s ago"
    return (f"{path}: {n} messages queued{age}; intact"
            + (f"; damaged copies kept: {', '.join(aside)}" if aside else ""))
