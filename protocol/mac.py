"""The truncated HMAC-SHA256 tag of SPEC.md 1.2."""

from __future__ import annotations

import hmac

MAC_LEN = 8
KEY_LEN = 32


def mac8(key: bytes, signed: bytes) -> bytes:
    """Return the first 8 bytes of HMAC-SHA256(key, signed)."""
    return hmac.digest(key, signed, "sha256")[:MAC_LEN]


def mac_ok(key: bytes, signed: bytes, tag: bytes) -> bool:
    """Compare a received tag with the expected one in constant time."""
    return hmac.compare_digest(mac8(key, signed), tag)
