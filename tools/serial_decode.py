#!/usr/bin/env python3
"""Reference decoder for edgert's serial frames: raw bytes on stdin, one JSON object per frame.

    stty -F /dev/ttyUSB0 115200 raw -echo && cat /dev/ttyUSB0 | python3 tools/serial_decode.py

Written to be ported to a microcontroller, so it imports nothing from edgert and uses no
Python tricks: fixed-size buffers, byte-by-byte state, explicit little-endian reads. The
frame is specified in docs/serial.md; tests check this file agrees with edgert's encoder.
"""

import json
import os
import sys

MAX_ENCODED = 53        # the longest COBS-encoded frame: 18-byte header + 32-byte action + CRC + 1
HEADER = 18
ACTION_MAX = 32

TYPES = {0x44: "decision", 0x48: "heartbeat", 0x53: "safe_state", 0x41: "ack"}
STATUSES = {0: "ok", 1: "fail_safe", 2: "hold_last", 3: "skipped"}
REASONS = {0: "none", 1: "shutdown", 2: "misses", 3: "source_lost", 4: "other"}


def crc16(data, length):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, MSB first, no final xor.

    Check value: the CRC of the ASCII bytes "123456789" is 0x29B1.
    """
    crc = 0xFFFF
    for i in range(length):
        crc ^= data[i] << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_decode(src, length, dst):
    """COBS-decode src[0:length] into dst; returns the decoded length, or -1 if malformed."""
    i = 0
    n = 0
    while i < length:
        code = src[i]
        if code == 0 or i + code > length:
            return -1
        i += 1
        for _ in range(code - 1):
            dst[n] = src[i]
            n += 1
            i += 1
        if code < 0xFF and i < length:
            dst[n] = 0
            n += 1
    return n


def u32(b, i):
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


def u48(b, i):
    return u32(b, i) | (b[i + 4] << 32) | (b[i + 5] << 40)


def parse(encoded, length):
    """One frame (the bytes between two 0x00) as a dict; {"type": "corrupt"} if it fails a check."""
    body = bytearray(MAX_ENCODED)
    n = cobs_decode(encoded, length, body)
    if n < HEADER + 2:
        return {"type": "corrupt"}
    if crc16(body, n - 2) != (body[n - 2] | (body[n - 1] << 8)):
        return {"type": "corrupt"}
    action_len = body[17]
    if action_len > ACTION_MAX or HEADER + action_len + 2 != n:
        return {"type": "corrupt"}
    try:
        action = bytes(body[HEADER:HEADER + action_len]).decode("utf-8")
    except UnicodeDecodeError:
        return {"type": "corrupt"}
    kind = body[0]
    status = body[6]
    out = {"type": TYPES.get(kind, "unknown"), "seq": u32(body, 2), "action": action,
           "frame_id": u32(body, 7), "t_ms": u48(body, 11), "ack_requested": bool(body[1] & 0x01)}
    if kind == 0x44:
        out["status"] = STATUSES.get(status, "unknown")
    elif kind == 0x41:
        out["acks"] = TYPES.get(status, "unknown")   # the type of the frame being acknowledged
    elif kind in TYPES:
        out["reason"] = REASONS.get(status, "other")
    else:
        out["code"] = kind
    return out


def main():
    buf = bytearray(MAX_ENCODED)
    length = 0
    overflow = False
    stdin = sys.stdin.buffer.fileno()
    while True:
        chunk = os.read(stdin, 4096)   # returns what has arrived: frames print as they come
        if not chunk:
            break
        for byte in chunk:
            if byte != 0:
                if length < MAX_ENCODED:
                    buf[length] = byte
                    length += 1
                else:
                    overflow = True    # longer than any frame: garbage until the next 0x00
                continue
            if overflow:
                print(json.dumps({"type": "corrupt"}), flush=True)
            elif length > 0:           # 0x00 0x00 is padding edgert sends to resynchronise
                print(json.dumps(parse(buf, length)), flush=True)
            length = 0
            overflow = False
    if length > 0 or overflow:         # a frame cut off by the end of the input
        print(json.dumps({"type": "corrupt"}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
