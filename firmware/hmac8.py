# HMAC-SHA256 (RFC 2104) truncated to 8 bytes, on hashlib.sha256 alone: MicroPython has
# no hmac module, and its sha256 objects give digest() once and have no copy().
import hashlib
from micropython import const

_BLOCK = const(64)
_MAC_LEN = const(8)


class Hmac8:
    """The unit key's padded inner and outer blocks, computed once."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            h = hashlib.sha256(key)
            key = h.digest()
        ipad = bytearray(_BLOCK)
        opad = bytearray(_BLOCK)
        for i in range(_BLOCK):
            b = key[i] if i < len(key) else 0
            ipad[i] = b ^ 0x36
            opad[i] = b ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def _digest(self, msg):
        h = hashlib.sha256(self._ipad)
        h.update(msg)
        o = hashlib.sha256(self._opad)
        o.update(h.digest())
        return o.digest()

    def sign_into(self, msg, out, off):
        """Write the 8-byte tag of msg (a memoryview) to out[off:off+8]."""
        d = self._digest(msg)
        for i in range(_MAC_LEN):
            out[off + i] = d[i]

    def check(self, msg, tag_buf, off):
        """True if tag_buf[off:off+8] is msg's tag; compares in constant time."""
        d = self._digest(msg)
        diff = 0
        for i in range(_MAC_LEN):
            diff |= d[i] ^ tag_buf[off + i]
        return diff == 0
