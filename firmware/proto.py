# The wire protocol v1 (protocol/SPEC.md), unit side: hand-written with struct, checked
# against the golden vectors in protocol/vectors/vectors.json by tests/firmware.
#
# The send path allocates nothing: each frame is packed into one preallocated buffer,
# signed, CRC'd and COBS-encoded into a second one (`wire`), whose first `n` bytes are
# then written to the line. The receive path decodes in place.
import struct
from micropython import const

import cobs
from crc16 import crc16
from hmac8 import Hmac8

_VERSION = const(1)
_HEADER_LEN = const(10)
_CRC_LEN = const(2)
_MAC_LEN = const(8)
_MIN_FRAME = const(20)
_MAX_FRAME = const(64)
_MAX_ENCODED = const(80)

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

# reject reasons, in the order of SPEC.md 3 (index into Decoder.rejects);
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
REASONS = (
    "oversize", "corrupt", "truncated", "version", "unknown_type", "malformed",
    "other_unit", "forged", "replayed",
)

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


class Encoder:
    """Builds this unit's uplink frames into `wire` (COBS + delimiter)."""

    def __init__(self, addr, key):
        self.addr = addr
        self._mac = Hmac8(key)
        self._raw = bytearray(_MAX_FRAME)
        self._rawmv = memoryview(self._raw)
        # signed-part views for each body length, made once (slicing allocates)
        self._signed = [self._rawmv[: _HEADER_LEN + i] for i in range(10)]
        self.wire = bytearray(_MAX_ENCODED)

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
        self._mac.sign_into(self._signed[blen], raw, end)
        end += _MAC_LEN
        struct.pack_into(">H", raw, end, crc16(raw, end))
        return cobs.encode_into(raw, end + _CRC_LEN, self.wire)


class Decoder:
    """Checks and decodes downlink frames (_ACK, _SIGNAL) for this unit, in place.

    decode() returns the type, or -1 with the reason counted in `rejects`. The fields
    of the last good frame are left in attributes (epoch, seq, ref_epoch, ref_seq,
    state, pattern, duration_s). It never raises on line bytes.
    """

    def __init__(self, addr, key, uplink=False):
        self.addr = addr
        # uplink=True decodes the unit's own frames (used to reload persisted frames and
        # in tests); a unit on the line always decodes downlink only
        self._uplink = uplink
        self._mac = Hmac8(key)
        self.rejects = [0] * len(REASONS)
        self.reason = -1
        self.mtype = 0
        self.epoch = 0
        self.seq = 0
        self.ref_epoch = 0
        self.ref_seq = 0
        self.state = 0
        self.pattern = 0
        self.duration_s = 0
        self.fields = None

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
        if t not in BODY or (t <= _UPLINK_MAX) != self._uplink:
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
        elif t == _SIGNAL:
            self.pattern, self.duration_s = struct.unpack_from(fmt, buf, _HEADER_LEN)
        else:
            self.fields = struct.unpack_from(fmt, buf, _HEADER_LEN)
        self.reason = -1
        return t


def counter_above(e1, s1, e2, s2):
    """True if counter (e1, s1) is above (e2, s2) (48-bit compare without big ints)."""
    return e1 > e2 or (e1 == e2 and s1 > s2)
