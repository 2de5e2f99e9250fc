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
from hmac8 import MAC_LEN, Hmac8

VERSION = const(1)
HEADER_LEN = const(10)
CRC_LEN = const(2)
MIN_FRAME = const(20)
MAX_FRAME = const(64)
MAX_ENCODED = const(80)

# message types (SPEC.md 2)
ALARM = const(0x01)
CANCEL = const(0x02)
CHECKIN = const(0x03)
HEARTBEAT = const(0x04)
TEST = const(0x05)
FAULT = const(0x06)
ACK = const(0x81)
SIGNAL = const(0x82)
_UPLINK_MAX = const(0x7F)

# ALARM kinds
KIND_PANIC = const(0)
KIND_DURESS = const(1)
KIND_SILENT = const(2)
KIND_MEDICAL = const(3)
KIND_FIRE = const(4)
KIND_OTHER = const(5)

# FAULT codes
F_TAMPER = const(1)
F_BUTTON_STUCK = const(2)
F_LOW_BATTERY = const(3)
F_MAINS_LOST = const(4)
F_WATCHDOG_RESET = const(5)
F_SAFE_MODE = const(6)
F_STORAGE = const(7)
F_LINK_LOST = const(8)

# HEARTBEAT flags
HB_TAMPER = const(0x01)
HB_LOW_BATTERY = const(0x02)
HB_MAINS_LOST = const(0x04)
HB_BUTTON_STUCK = const(0x08)
HB_SAFE_MODE = const(0x10)
HB_ALARM_PENDING = const(0x20)

# ACK states, SIGNAL patterns
ACK_RECEIVED = const(1)
ACK_POLICE = const(2)
ACK_CANCELLED = const(3)
SIG_STOP = const(0)
SIG_PROMPT = const(1)
SIG_LOCATE = const(2)
SIG_ESCALATED = const(3)

# reject reasons, in the order of SPEC.md 3 (index into Decoder.rejects);
# OTHER_UNIT is a frame for another unit on a shared bus: not an error, just not ours
R_OVERSIZE = const(0)
R_CORRUPT = const(1)
R_TRUNCATED = const(2)
R_VERSION = const(3)
R_UNKNOWN_TYPE = const(4)
R_MALFORMED = const(5)
R_OTHER_UNIT = const(6)
R_FORGED = const(7)
R_REPLAYED = const(8)
REASONS = (
    "oversize", "corrupt", "truncated", "version", "unknown_type", "malformed",
    "other_unit", "forged", "replayed",
)

_HEADER = ">BBHIH"
# type -> (struct format of the body, body length, number of fields)
BODY = {
    ALARM: (">BBI", 6, 3),
    CANCEL: (">IH", 6, 2),
    CHECKIN: (">BI", 5, 2),
    HEARTBEAT: (">HIHB", 9, 4),
    TEST: (">BBH", 4, 3),
    FAULT: (">BBH", 4, 3),
    ACK: (">IHB", 7, 3),
    SIGNAL: (">BH", 3, 2),
}


def frame_len(mtype):
    """Decoded frame length of a type (header + body + MAC + CRC)."""
    return HEADER_LEN + BODY[mtype][1] + MAC_LEN + CRC_LEN


class Encoder:
    """Builds this unit's uplink frames into `wire` (COBS + delimiter)."""

    def __init__(self, addr, key):
        self.addr = addr
        self._mac = Hmac8(key)
        self._raw = bytearray(MAX_FRAME)
        self._rawmv = memoryview(self._raw)
        # signed-part views for each body length, made once (slicing allocates)
        self._signed = [self._rawmv[: HEADER_LEN + i] for i in range(10)]
        self.wire = bytearray(MAX_ENCODED)

    def frame(self, mtype, epoch, seq, a=0, b=0, c=0, d=0):
        """Encode one frame; returns the wire length n (bytes wire[0:n]).

        Body fields a..d in the order of SPEC.md 2 (unused ones ignored).
        """
        fmt, blen, nf = BODY[mtype]
        raw = self._raw
        struct.pack_into(_HEADER, raw, 0, VERSION, mtype, self.addr, epoch, seq)
        if nf == 2:
            struct.pack_into(fmt, raw, HEADER_LEN, a, b)
        elif nf == 3:
            struct.pack_into(fmt, raw, HEADER_LEN, a, b, c)
        else:
            struct.pack_into(fmt, raw, HEADER_LEN, a, b, c, d)
        end = HEADER_LEN + blen
        self._mac.sign_into(self._signed[blen], raw, end)
        end += MAC_LEN
        struct.pack_into(">H", raw, end, crc16(raw, end))
        return cobs.encode_into(raw, end + CRC_LEN, self.wire)


class Decoder:
    """Checks and decodes downlink frames (ACK, SIGNAL) for this unit, in place.

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
        if n > MAX_FRAME:
            return self._reject(R_OVERSIZE)
        if n < MIN_FRAME:
            return self._reject(R_TRUNCATED)
        if crc16(buf, n - CRC_LEN) != (buf[n - 2] << 8) | buf[n - 1]:
            return self._reject(R_CORRUPT)
        if buf[0] != VERSION:
            return self._reject(R_VERSION)
        t = buf[1]
        if t not in BODY or (t <= _UPLINK_MAX) != self._uplink:
            return self._reject(R_UNKNOWN_TYPE)
        fmt, blen, _ = BODY[t]
        unit = (buf[2] << 8) | buf[3]
        if n != HEADER_LEN + blen + MAC_LEN + CRC_LEN or unit == 0 or unit == 0xFFFF:
            return self._reject(R_MALFORMED)
        if unit != self.addr:
            return self._reject(R_OTHER_UNIT)
        end = HEADER_LEN + blen
        if mv is None:
            mv = memoryview(buf)
        if not self._mac.check(mv[:end], buf, end):
            return self._reject(R_FORGED)
        _, _, _, self.epoch, self.seq = struct.unpack_from(_HEADER, buf, 0)
        self.mtype = t
        if t == ACK:
            self.ref_epoch, self.ref_seq, self.state = struct.unpack_from(fmt, buf, HEADER_LEN)
        elif t == SIGNAL:
            self.pattern, self.duration_s = struct.unpack_from(fmt, buf, HEADER_LEN)
        else:
            self.fields = struct.unpack_from(fmt, buf, HEADER_LEN)
        self.reason = -1
        return t


def counter_above(e1, s1, e2, s2):
    """True if counter (e1, s1) is above (e2, s2) (48-bit compare without big ints)."""
    return e1 > e2 or (e1 == e2 and s1 > s2)
