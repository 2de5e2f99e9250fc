# CRC-16/CCITT-FALSE (SPEC.md 1.2): poly 0x1021, init 0xFFFF, no reflection, no final XOR.
# Table-driven: one 256-entry table (512 bytes) built once at import.
from array import array
from micropython import const

_POLY = const(0x1021)


def _table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ _POLY) if c & 0x8000 else (c << 1)
        t[i] = c & 0xFFFF
    return t


_T = _table()


def crc16(buf, n):
    """CRC of buf[0:n]; allocates nothing."""
    t = _T
    c = 0xFFFF
    for i in range(n):
        c = ((c << 8) & 0xFFFF) ^ t[((c >> 8) ^ buf[i]) & 0xFF]
    return c
