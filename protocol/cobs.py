"""Consistent Overhead Byte Stuffing (SPEC.md 1.1), without the trailing delimiter."""

from __future__ import annotations

from protocol.errors import ProtocolError, Reason


def cobs_encode(data: bytes) -> bytes:
    """Return ``data`` COBS-encoded: no 0x00 inside, one code byte per 254 data bytes."""
    out = bytearray()
    start = 0
    n = len(data)
    while True:
        limit = min(start + 254, n)
        zero = data.find(0, start, limit)
        if zero >= 0:
            out.append(zero - start + 1)
            out += data[start:zero]
            start = zero + 1
            continue
        out.append(limit - start + 1)
        out += data[start:limit]
        if limit == n:
            return bytes(out)
        start = limit


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS frame (delimiter removed); raise ``ProtocolError(corrupt)`` if broken."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError(Reason.CORRUPT, "zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ProtocolError(Reason.CORRUPT, "COBS code points past the end")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
