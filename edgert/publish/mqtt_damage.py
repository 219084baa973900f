"""A damaged queue file must not keep the device down: find the damage, move the file aside, say so.

SQLite silently forgets what it cannot read (an empty file is a new empty queue; a write-ahead
log with a bad frame in the middle is cut there), so the file is looked at before SQLite opens
it. A damaged file is renamed `<queue>.damaged-<UTC time>` (with its -wal and -shm), kept for a
person, and a new queue starts; the caller reports the loss on status and metrics.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edgert.publish")

HEADER = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)   # checksums little- / big-endian


@dataclass(frozen=True, slots=True)
class Damage:
    """A queue file that was moved aside: why, where it is now, when."""

    reason: str
    moved_to: str
    at: float   # Unix seconds

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "moved_to": self.moved_to, "at": round(self.at, 3)}


def inspect(path: Path, known: bool) -> str | None:
    """Why the queue at `path` cannot be trusted, or None (also for a missing file); `known`:
    edgert had created it before (its lock file was there)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if size == 0:
        # edgert writes the header when it creates the queue: an empty file lost its rows.
        return "the file is empty" if known or wal_size else None
    with open(path, "rb") as f:
        if f.read(16) != HEADER:
            return "the file does not start with the SQLite header"
    if size < 512 or size % 512:
        return f"the file is truncated ({size} bytes, not a whole number of pages)"
    return _wal_damage(wal) if wal_size else None


def _wal_damage(wal: Path) -> str | None:
    """A frame of the current log that fails its checksum, with frames of the same log after
    it: SQLite would drop everything from the bad frame on."""
    data = wal.read_bytes()
    if len(data) < 32:
        return None
    magic, _, page, _, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC or page < 512 or page & (page - 1):
        return "the write-ahead log has a bad header"
    big = magic & 1
    s1, s2 = _checksum(data[:24], 0, 0, big)
    if (s1, s2) != (c1, c2):
        return "the write-ahead log has a bad header checksum"
    frame = 24 + page
    n = (len(data) - 32) // frame
    bad = None
    for i in range(n):
        off = 32 + i * frame
        fs1, fs2, fc1, fc2 = struct.unpack(">4I", data[off + 8:off + 24])
        if (fs1, fs2) != (salt1, salt2):
            break   # a frame left over from an earlier log: the current log ends here
        s1, s2 = _checksum(data[off:off + 8], s1, s2, big)
        s1, s2 = _checksum(data[off + 24:off + frame], s1, s2, big)
        if (s1, s2) != (fc1, fc2):
            bad = i
            break
    if bad is None:
        return None
    for j in range(bad + 1, n):
        off = 32 + j * frame
        if struct.unpack(">2I", data[off + 8:off + 16]) == (salt1, salt2):
            return f"the write-ahead log is damaged at frame {bad + 1} of {n}"
    return None   # a torn last write: SQLite drops only the uncommitted tail, as it should


def _checksum(b: bytes, s1: int, s2: int, big: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(b) // 4}I", b)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def move_aside(path: Path, reason: str) -> Damage:
    """Rename the queue (and its -wal, -shm) out of the way, keeping it for a person."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = Path(f"{path}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = Path(f"{path}.damaged-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    log.error("the MQTT queue %s is damaged (%s): moved to %s for inspection; its messages are "
              "lost to this run, and a new queue starts", path, reason, target)
    return Damage(reason, str(target), now)
