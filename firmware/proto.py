# The wire protocol v1 (protocol/SPEC.md), unit side: hand-written with struct, checked
# against the golden vectors in protocol/vectors/vectors.json by tests/firmware.
#
# The send path allocates nothing but the MAC: each frame is packed into one preallocated
# buffer, signed, CRC'd and COBS-encoded into a second one (`wire`), whose first `n`
# bytes are then written to the line. The receive path decodes in place. The MAC costs
# 384 bytes of garbage per frame on a 32-bit build (448 on the 64-bit unix port): two
# hashlib.sha256 objects and their digests, since MicroPython's sha256 has no copy() to
# reuse the key's padded blocks and gives digest() once (tests/firmware/test_frozen32.py
# measures it; the supervisor's gc.collect() takes it back).
#
# COBS (SPEC.md 1.1), CRC-16/CCITT-FALSE (1.2) and the truncated HMAC-SHA256 live here too:
# one module instead of four saves the per-module RAM (module object, globals, names).
import hashlib
import struct
from micropython import const

_VERSION = const(1)
_HEADER_LEN = const(10)
_CRC_LEN = const(2)
_MAC_LEN = const(8)
_MIN_FRAME = const(20)
_MAX_FRAME = const(64)
_MAX_ENCODED = const(80)
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

# reject reasons, in the order of SPEC.md 3 (index into Codec.rejects; their names are
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

_HEADER = const(">BBHIH")
# the body's struct format by type: ALARM..FAULT (0x01-0x06) at 0..5, ACK and SIGNAL
# (0x81, 0x82) at 6 and 7 (type - _DOWN_AT); its length is struct.calcsize(), its number of
# fields len - 1. press_ms (ALARM, CHECKIN) goes as its 16-bit halves: a 32-bit port
# makes every int >= 2^30 a heap big int, and uptime in ms passes 2^30 after 12.4 days
# (App.stamp()). One tuple of qstrs: the dict of 8 tuples it replaces took ~600 bytes
# of heap on the 64-bit port.
_BODY = const((">BBHH", ">IH", ">BHH", ">HIHB", ">BBH", ">BBH", ">IHB", ">BH"))
_DOWN_AT = const(0x81 - 6)


# ---- COBS, into caller-owned buffers
def encode_into(src, n, dest):
    """COBS-encode src[0:n] into dest and append the 0x00 delimiter.

    Returns the number of bytes written (n + 2 for frames under 254 bytes). dest must hold
    n + n // 254 + 2 bytes. Allocates nothing.
    """
    code_pos = 0
    code = 1
    o = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dest[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            dest[o] = b
            o += 1
            code += 1
            if code == 0xFF and i + 1 < n:
                dest[code_pos] = code
                code_pos = o
                o += 1
                code = 1
    dest[code_pos] = code
    dest[o] = 0
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


# ---- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection), table-driven. The
# 256 entries are two bytes literals, high and low bytes (tests/firmware/test_consts.py
# recomputes them): a literal in an .mpy on ROMFS or frozen stays in flash, where an
# array built at import took ~450 bytes of heap.
_CRC_HI = const(
    b"\x00\x10\x20\x30\x40\x50\x60\x70\x81\x91\xa1\xb1\xc1\xd1\xe1\xf1"
    b"\x12\x02\x32\x22\x52\x42\x72\x62\x93\x83\xb3\xa3\xd3\xc3\xf3\xe3"
    b"\x24\x34\x04\x14\x64\x74\x44\x54\xa5\xb5\x85\x95\xe5\xf5\xc5\xd5"
    b"\x36\x26\x16\x06\x76\x66\x56\x46\xb7\xa7\x97\x87\xf7\xe7\xd7\xc7"
    b"\x48\x58\x68\x78\x08\x18\x28\x38\xc9\xd9\xe9\xf9\x89\x99\xa9\xb9"
    b"\x5a\x4a\x7a\x6a\x1a\x0a\x3a\x2a\xdb\xcb\xfb\xeb\x9b\x8b\xbb\xab"
    b"\x6c\x7c\x4c\x5c\x2c\x3c\x0c\x1c\xed\xfd\xcd\xdd\xad\xbd\x8d\x9d"
    b"\x7e\x6e\x5e\x4e\x3e\x2e\x1e\x0e\xff\xef\xdf\xcf\xbf\xaf\x9f\x8f"
    b"\x91\x81\xb1\xa1\xd1\xc1\xf1\xe1\x10\x00\x30\x20\x50\x40\x70\x60"
    b"\x83\x93\xa3\xb3\xc3\xd3\xe3\xf3\x02\x12\x22\x32\x42\x52\x62\x72"
    b"\xb5\xa5\x95\x85\xf5\xe5\xd5\xc5\x34\x24\x14\x04\x74\x64\x54\x44"
    b"\xa7\xb7\x87\x97\xe7\xf7\xc7\xd7\x26\x36\x06\x16\x66\x76\x46\x56"
    b"\xd9\xc9\xf9\xe9\x99\x89\xb9\xa9\x58\x48\x78\x68\x18\x08\x38\x28"
    b"\xcb\xdb\xeb\xfb\x8b\x9b\xab\xbb\x4a\x5a\x6a\x7a\x0a\x1a\x2a\x3a"
    b"\xfd\xed\xdd\xcd\xbd\xad\x9d\x8d\x7c\x6c\x5c\x4c\x3c\x2c\x1c\x0c"
    b"\xef\xff\xcf\xdf\xaf\xbf\x8f\x9f\x6e\x7e\x4e\x5e\x2e\x3e\x0e\x1e"
)
_CRC_LO = const(
    b"\x00\x21\x42\x63\x84\xa5\xc6\xe7\x08\x29\x4a\x6b\x8c\xad\xce\xef"
    b"\x31\x10\x73\x52\xb5\x94\xf7\xd6\x39\x18\x7b\x5a\xbd\x9c\xff\xde"
    b"\x62\x43\x20\x01\xe6\xc7\xa4\x85\x6a\x4b\x28\x09\xee\xcf\xac\x8d"
    b"\x53\x72\x11\x30\xd7\xf6\x95\xb4\x5b\x7a\x19\x38\xdf\xfe\x9d\xbc"
    b"\xc4\xe5\x86\xa7\x40\x61\x02\x23\xcc\xed\x8e\xaf\x48\x69\x0a\x2b"
    b"\xf5\xd4\xb7\x96\x71\x50\x33\x12\xfd\xdc\xbf\x9e\x79\x58\x3b\x1a"
    b"\xa6\x87\xe4\xc5\x22\x03\x60\x41\xae\x8f\xec\xcd\x2a\x0b\x68\x49"
    b"\x97\xb6\xd5\xf4\x13\x32\x51\x70\x9f\xbe\xdd\xfc\x1b\x3a\x59\x78"
    b"\x88\xa9\xca\xeb\x0c\x2d\x4e\x6f\x80\xa1\xc2\xe3\x04\x25\x46\x67"
    b"\xb9\x98\xfb\xda\x3d\x1c\x7f\x5e\xb1\x90\xf3\xd2\x35\x14\x77\x56"
    b"\xea\xcb\xa8\x89\x6e\x4f\x2c\x0d\xe2\xc3\xa0\x81\x66\x47\x24\x05"
    b"\xdb\xfa\x99\xb8\x5f\x7e\x1d\x3c\xd3\xf2\x91\xb0\x57\x76\x15\x34"
    b"\x4c\x6d\x0e\x2f\xc8\xe9\x8a\xab\x44\x65\x06\x27\xc0\xe1\x82\xa3"
    b"\x7d\x5c\x3f\x1e\xf9\xd8\xbb\x9a\x75\x54\x37\x16\xf1\xd0\xb3\x92"
    b"\x2e\x0f\x6c\x4d\xaa\x8b\xe8\xc9\x26\x07\x64\x45\xa2\x83\xe0\xc1"
    b"\x1f\x3e\x5d\x7c\x9b\xba\xd9\xf8\x17\x36\x55\x74\x93\xb2\xd1\xf0"
)


def crc16(buf, n):
    """CRC of buf[0:n]; allocates nothing."""
    hi = _CRC_HI
    lo = _CRC_LO
    c = 0xFFFF
    for i in range(n):
        k = ((c >> 8) ^ buf[i]) & 0xFF
        c = ((c & 0xFF) ^ hi[k]) << 8 | lo[k]
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

    def _digest(self, data):
        h = hashlib.sha256(self._ipad)
        h.update(data)
        o = hashlib.sha256(self._opad)
        o.update(h.digest())
        return o.digest()

    def sign_into(self, data, buf, off):
        """Write the 8-byte tag of data (a memoryview) to buf[off:off+8]."""
        d = self._digest(data)
        for i in range(_MAC_LEN):
            buf[off + i] = d[i]

    def check(self, data, buf, off):
        """True if buf[off:off+8] is data's tag; compares in constant time."""
        d = self._digest(data)
        diff = 0
        for i in range(_MAC_LEN):
            diff |= d[i] ^ buf[off + i]
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
        fmt = _BODY[mtype - 1 if mtype <= _UPLINK_MAX else mtype - _DOWN_AT]
        blen = struct.calcsize(fmt)
        nf = len(fmt) - 1
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
        if t != _ACK and t != _SIGNAL:  # the unit's own types reflected back, or unknown
            return self._reject(_R_UNKNOWN_TYPE)
        fmt = _BODY[t - _DOWN_AT]
        blen = struct.calcsize(fmt)
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

