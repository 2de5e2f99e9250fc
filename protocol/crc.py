"""CRC-16/CCITT-FALSE (SPEC.md 1.2): poly 0x1021, init 0xFFFF, no reflection, no xor-out."""

from __future__ import annotations

import binascii


def crc16(data: bytes) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (``b"123456789"`` gives 0x29B1)."""
    # crc_hqx is the same polynomial unreflected; with init 0xFFFF it is CCITT-FALSE, in C.
    return binascii.crc_hqx(data, 0xFFFF)
