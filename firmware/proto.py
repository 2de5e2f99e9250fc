# The wire protocol v1 (protocol/SPEC.md), unit side: hand-written with struct, checked
# against the golden vectors in protocol/vectors/vectors.json by tests/firmware.
#
# The send path allocates nothing: each frame is packed into one preallocated buffer,
# signed, CRC'd and COBS-encoded into a second one (`wire`), whose first `n` bytes are
# then written to the line. The receive path decodes in place.
#
# COBS (SPEC.md 1.1), CRC-16/CCITT-FALSE (1.2) and the truncated HMAC-SHA256 live here too:
# one module instead of four saves the per-module RAM (module object, globals, names).
import hashlib
import struct
from array import array
from micropython import const

_VERSION = const(1)
_HEADER_LEN = const(10)
_CRC_LEN = const(2)
_MAC_LEN = const(8)
_MIN_FRAME = const(20)
_MAX_FRAME = const(64)
_MAX_ENCODED = const(80)
_POLY = const(0x1021)  # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection
_BLOCK = const(64)  # SHA-256 block

# message types (SPEC.md 2). All constants are private (const() then costs no RAM); the
# modules that need a wire number keep their own copy, checked by tests/firmware.
_ALARM = const(0x01)
_CANCEL = const(0x02)
_CHECKIN = const(0x03)
_HEARTBEAT = const(0x04)
_TEST = const(0x05)
_FAULT = const(0x06)
_ACK = const(0x81)
_SIGNAL = const(0x82)
_UPLINK_MAX = const(0x7F)

# ALARM kinds, FAULT codes, HEARTBEAT flags, ACK states and SIGNAL patterns: app.py

# reject reasons, in the order of SPEC.md 3 (index into Decoder.rejects; their names are
# in tests/firmware/mp_codec.py, a tuple of names here would cost RAM on every unit);
# OTHER_UNIT is a frame for another unit on a shared bus: not an error, just not ours
_R_OVERSIZE = const(0)
_R_CORRUPT = const(1)
_R_TRUNCATED = const(2)
_R_VERSION = const(3)
_R_UNKNOWN_TYPE = const(4)
_R_MALFORMED = const(5)
_R_OTHER_UNIT = const(6)
_R_FORGED = const(7)
_R_REPLAYED = const(8)
_REASONS = const(9)

_HEADER = ">BBHIH"
# type -> (struct format of the body, body length, number of fields)
BODY = {
    _ALARM: (">BBI", 6, 3),
    _CANCEL: (">IH", 6, 2),
    _CHECKIN: (">BI", 5, 2),
    _HEARTBEAT: (">HIHB", 9, 4),
    _TEST: (">BBH", 4, 3),
    _FAULT: (">BBH", 4, 3),
    _ACK: (">IHB", 7, 3),
    _SIGNAL: (">BH", 3, 2),
}


# ---- COBS, into caller-owned buffers
def encode_into(src, n, dst):
    """COBS-encode src[0:n] into dst and append the 0x00 delimiter.

    Returns the number of bytes written (n + 2 for frames under 254 bytes). dst must hold
    n + n // 254 + 2 bytes. Allocates nothing.
    """
    code_pos = 0
    code = 1
    o = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF and i + 1 < n:
                dst[code_pos] = code
                code_pos = o
                o += 1
                code = 1
    dst[code_pos] = code
    dst[o] = 0
    return o + 1


def decode_inplace(buf, n):
    """Decode one COBS frame held in buf[0:n] (delimiter removed) in place.

    Returns the decoded length, or -1 if the frame is broken (a zero byte inside, or a
    code byte pointing past the end). Allocates nothing.
    """
    i = 0
    o = 0
    while i < n:
        code = buf[i]
        if code == 0:
            return -1
        end = i + code
        if end > n:
            return -1
        i += 1
        while i < end:
            buf[o] = buf[i]
            o += 1
            i += 1
        if code != 0xFF and i < n:
            buf[o] = 0
            o += 1
    return o


# ---- CRC-16/CCITT-FALSE, table-driven: one 256-entry table (512 bytes) built once
def _table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ _POLY) if c & 0x8000 else (c << 1)
        t[i] = c & 0xFFFF
    return t


_T = _table()
del _table  # needed once


def crc16(buf, n):
    """CRC of buf[0:n]; allocates nothing."""
    t = _T
    c = 0xFFFF
    for i in range(n):
        c = ((c << 8) & 0xFFFF) ^ t[((c >> 8) ^ buf[i]) & 0xFF]
    return c


# ---- HMAC-SHA256 (RFC 2104) truncated to 8 bytes, on hashlib.sha256 alone: MicroPython
# has no hmac module, and its sha256 objects give digest() once and have no copy().
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


class Codec:
    """This unit's side of the protocol, with one key setup for both directions.

    frame() builds an uplink frame into `wire` (COBS + delimiter). decode() checks and
    decodes a downlink frame (_ACK, _SIGNAL) in place: it returns the type, or -1 with
    the reason counted in `rejects` (and left in `reason`). The fields of the last good
    frame are left in attributes (epoch, seq, ref_epoch, ref_seq, state, pattern,
    duration_s). It never raises on line bytes. Uplink types (the unit's own frames
    reflected back) are rejected as unknown_type.
    """

    def __init__(self, addr, key):
        self.addr = addr
        self._mac = Hmac8(key)
        self._raw = bytearray(_MAX_FRAME)
        rawmv = memoryview(self._raw)
        # signed-part views for the uplink body lengths 4..9, made once (slicing allocates)
        self._signed = [rawmv[: _HEADER_LEN + i] for i in range(4, 10)]
        self.wire = bytearray(_MAX_ENCODED)
        self.rejects = [0] * _REASONS
        self.reason = -1
        self.mtype = 0
        self.epoch = 0
        self.seq = 0
        self.ref_epoch = 0
        self.ref_seq = 0
        self.state = 0
        self.pattern = 0
        self.duration_s = 0

    def frame(self, mtype, epoch, seq, a=0, b=0, c=0, d=0):
        """Encode one frame; returns the wire length n (bytes wire[0:n]).

        Body fields a..d in the order of SPEC.md 2 (unused ones ignored).
        """
        fmt, blen, nf = BODY[mtype]
        raw = self._raw
        struct.pack_into(_HEADER, raw, 0, _VERSION, mtype, self.addr, epoch, seq)
        if nf == 2:
            struct.pack_into(fmt, raw, _HEADER_LEN, a, b)
        elif nf == 3:
            struct.pack_into(fmt, raw, _HEADER_LEN, a, b, c)
        else:
            struct.pack_into(fmt, raw, _HEADER_LEN, a, b, c, d)
        end = _HEADER_LEN + blen
        self._mac.sign_into(self._signed[blen - 4], raw, end)
        end += _MAC_LEN
        struct.pack_into(">H", raw, end, crc16(raw, end))
        return encode_into(raw, end + _CRC_LEN, self.wire)

    def _reject(self, reason):
        self.rejects[reason] += 1
        self.reason = reason
        return -1

    def decode(self, buf, n, mv=None):
        """Check and decode the COBS-decoded frame buf[0:n]."""
        if n > _MAX_FRAME:
            return self._reject(_R_OVERSIZE)
        if n < _MIN_FRAME:
            return self._reject(_R_TRUNCATED)
        if crc16(buf, n - _CRC_LEN) != (buf[n - 2] << 8) | buf[n - 1]:
            return self._reject(_R_CORRUPT)
        if buf[0] != _VERSION:
            return self._reject(_R_VERSION)
        t = buf[1]
        if t <= _UPLINK_MAX or t not in BODY:
            return self._reject(_R_UNKNOWN_TYPE)
        fmt, blen, _ = BODY[t]
        unit = (buf[2] << 8) | buf[3]
        if n != _HEADER_LEN + blen + _MAC_LEN + _CRC_LEN or unit == 0 or unit == 0xFFFF:
            return self._reject(_R_MALFORMED)
        if unit != self.addr:
            return self._reject(_R_OTHER_UNIT)
        end = _HEADER_LEN + blen
        if mv is None:
            mv = memoryview(buf)
        if not self._mac.check(mv[:end], buf, end):
            return self._reject(_R_FORGED)
        _, _, _, self.epoch, self.seq = struct.unpack_from(_HEADER, buf, 0)
        self.mtype = t
        if t == _ACK:
            self.ref_epoch, self.ref_seq, self.state = struct.unpack_from(fmt, buf, _HEADER_LEN)
        else:
            self.pattern, self.duration_s = struct.unpack_from(fmt, buf, _HEADER_LEN)
        self.reason = -1
        return t


Encoder = Codec  # the names the tests and benches use for each direction
Decoder = Codec


def counter_above(e1, s1, e2, s2):
    """True if counter (e1, s1) is above (e2, s2) (48-bit compare without big ints)."""
    return e1 > e2 or (e1 == e2 and s1 > s2)
