"""Every wire format, declared once with construct (SPEC.md sections 1.2 and 2).

``FRAME`` is the whole frame as the spec draws it. The codec's fast path uses one compiled,
flat struct per message type derived from these declarations, and checks CRC and MAC by
hand, because construct 2.10's ``compile()`` does not compile ``Checksum`` fields (a frame
with one parses in ~30-40 us, a flat compiled struct in ~5 us).
"""

from __future__ import annotations

from typing import Any

from construct import Bytes, Int8ub, Int16ub, Int32ub, Struct, Switch, this

from protocol.mac import MAC_LEN
from protocol.messages import MsgType

VERSION = 1
CRC_LEN = 2

HEADER = Struct(
    "ver" / Int8ub,
    "type" / Int8ub,
    "unit" / Int16ub,
    "epoch" / Int32ub,
    "seq" / Int16ub,
)

BODIES: dict[MsgType, Struct] = {
    MsgType.ALARM: Struct("kind" / Int8ub, "presses" / Int8ub, "press_ms" / Int32ub),
    MsgType.CANCEL: Struct("ref_epoch" / Int32ub, "ref_seq" / Int16ub),
    MsgType.CHECKIN: Struct("flags" / Int8ub, "press_ms" / Int32ub),
    MsgType.HEARTBEAT: Struct(
        "battery_mv" / Int16ub, "uptime_s" / Int32ub, "fw" / Int16ub, "flags" / Int8ub
    ),
    MsgType.TEST: Struct("kind" / Int8ub, "result" / Int8ub, "battery_mv" / Int16ub),
    MsgType.FAULT: Struct("code" / Int8ub, "active" / Int8ub, "detail" / Int16ub),
    MsgType.ACK: Struct("ref_epoch" / Int32ub, "ref_seq" / Int16ub, "state" / Int8ub),
    MsgType.SIGNAL: Struct("pattern" / Int8ub, "duration_s" / Int16ub),
}

FRAME = Struct(
    *HEADER.subcons,
    "body" / Switch(this.type, {int(t): s for t, s in BODIES.items()}),
    "mac" / Bytes(MAC_LEN),
    "crc" / Int16ub,
)

HEADER_LEN: int = HEADER.sizeof()
BODY_LEN: dict[MsgType, int] = {t: s.sizeof() for t, s in BODIES.items()}
MIN_FRAME = HEADER_LEN + MAC_LEN + CRC_LEN
MAX_FRAME = 64
MAX_ENCODED = 80


def _flat(body: Any) -> Any:
    return Struct(*HEADER.subcons, *body.subcons).compile()


# header + body of one type, compiled: used to parse the signed part and to build it
SIGNED_COMPILED: dict[MsgType, Any] = {t: _flat(s) for t, s in BODIES.items()}
