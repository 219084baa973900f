"""The serial frame (docs/serial.md): small enough for a microcontroller, checked, self-synchronising.

A frame is a fixed 18-byte header, the action, and a CRC-16, COBS-encoded and ended by one
0x00 byte. tools/serial_decode.py carries a standalone copy of the decoding half, so that an
actuator-side developer ports one short file; tests check the two agree byte for byte.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from typing import Iterator

# Type codes are ASCII letters, so a hex dump of a capture is readable by eye.
DECISION, HEARTBEAT, SAFE_STATE, ACK = 0x44, 0x48, 0x53, 0x41   # 'D' 'H' 'S' 'A'
TYPE_NAMES = {DECISION: "decision", HEARTBEAT: "heartbeat", SAFE_STATE: "safe_state", ACK: "ack"}

FLAG_ACK = 0x01   # the sender wants an ack frame echoing this frame's type and seq

STATUS_CODES = {"ok": 0, "fail_safe": 1, "hold_last": 2, "skipped": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
OTHER_STATUS = 0xFF

# Why a safe state is in force (safe_state frames, and heartbeats while it lasts; 0: none).
REASON_CODES = {"none": 0, "shutdown": 1, "misses": 2, "source_lost": 3, "other": 4}
REASON_NAMES = {v: k for k, v in REASON_CODES.items()}

HEADER = struct.Struct("<BBIBI6sB")   # type, flags, seq, status, frame_id, t_ms (48 bit), action length
ACTION_MAX = 32                       # bytes of UTF-8: fixes a receiver's buffer size
MIN_PAYLOAD = HEADER.size + 2         # a frame with an empty action
MAX_PAYLOAD = HEADER.size + ACTION_MAX + 2
MAX_ENCODED = MAX_PAYLOAD + 1         # COBS adds one byte per 254, and frames are shorter
DELIMITER = b"\x00"
U32 = 0xFFFF_FFFF
U48 = 0xFFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class SerialFrame:
    """One frame's fields; `status` is the record's status, or for the other types a reason."""

    type: int
    seq: int
    status: int
    action: str = ""
    frame_id: int = 0
    t_ms: int = 0          # Unix time in ms: capture time of a decision, send time otherwise
    flags: int = 0


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result has no 0x00, so 0x00 can end a frame."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    for byte in data:
        if byte:
            out.append(byte)
            code += 1
        if not byte or code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """The inverse of cobs_encode; None for input no encoder could have produced."""
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            return None
        out += data[i + 1:i + code]
        i += code
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def encode(frame: SerialFrame) -> bytes:
    """The bytes on the wire, delimiter included; ValueError for a field that does not fit."""
    action = frame.action.encode("utf-8")
    if len(action) > ACTION_MAX:
        raise ValueError(f"action {frame.action!r} is {len(action)} bytes; a serial frame "
                         f"carries at most {ACTION_MAX}")
    # seq and frame_id wrap at 2^32 (4.5 years at 30 frames a second), as a receiver's counter does.
    head = HEADER.pack(frame.type, frame.flags, frame.seq & U32, frame.status,
                       frame.frame_id & U32, (frame.t_ms & U48).to_bytes(6, "little"), len(action))
    body = head + action
    return cobs_encode(body + crc16(body).to_bytes(2, "little")) + DELIMITER


def decode(encoded: bytes) -> SerialFrame | None:
    """One frame's bytes between delimiters; None when it is corrupt (COBS, length or CRC)."""
    if len(encoded) > MAX_ENCODED:
        return None
    body = cobs_decode(encoded)
    if body is None or not MIN_PAYLOAD <= len(body) <= MAX_PAYLOAD:
        return None
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        return None
    kind, flags, seq, status, frame_id, t_ms, n = HEADER.unpack_from(body)
    if HEADER.size + n + 2 != len(body):
        return None
    try:
        action = body[HEADER.size:HEADER.size + n].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return SerialFrame(kind, seq, status, action, frame_id, int.from_bytes(t_ms, "little"), flags)


class Deframer:
    """Splits a byte stream at delimiters; yields a frame, or None for each corrupt one.

    A receiver that starts mid-frame, or sees garbage, reports one corrupt frame and is in
    step again at the next 0x00. Empty frames (0x00 0x00) are padding and yield nothing.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> Iterator[SerialFrame | None]:
        for byte in data:
            if byte:
                if len(self._buf) < MAX_ENCODED:
                    self._buf.append(byte)
                else:
                    self._overflow = True   # longer than any frame: garbage until the next 0x00
                continue
            if self._overflow:
                yield None
            elif self._buf:
                yield decode(bytes(self._buf))
            self._buf.clear()
            self._overflow = False
