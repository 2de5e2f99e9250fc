"""Sizes of SPEC.md sections 1.2 and 2, pinned as a table (constants mutmut cannot mutate)."""

from __future__ import annotations

from protocol import MsgType
from protocol import formats as f
from protocol.mac import KEY_LEN, MAC_LEN


def test_sizes_are_those_of_the_spec() -> None:
    assert (f.VERSION, f.CRC_LEN, MAC_LEN, KEY_LEN) == (1, 2, 8, 32)
    assert (f.HEADER_LEN, f.MIN_FRAME, f.MAX_FRAME, f.MAX_ENCODED) == (10, 20, 64, 80)
    assert f.BODY_LEN == {
        MsgType.ALARM: 6,
        MsgType.CANCEL: 6,
        MsgType.CHECKIN: 5,
        MsgType.HEARTBEAT: 9,
        MsgType.TEST: 4,
        MsgType.FAULT: 4,
        MsgType.ACK: 7,
        MsgType.SIGNAL: 3,
    }


def test_every_frame_fits_the_bounds() -> None:
    longest = f.HEADER_LEN + max(f.BODY_LEN.values()) + MAC_LEN + f.CRC_LEN
    assert longest <= f.MAX_FRAME
    # COBS adds one code byte (per 254) and the delimiter: the deframer's bound holds it
    assert f.MAX_FRAME + 2 <= f.MAX_ENCODED
