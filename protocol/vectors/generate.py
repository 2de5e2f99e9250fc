"""Write vectors.json from the construct declarations: run once when the spec changes.

python protocol/vectors/generate.py > protocol/vectors/vectors.json

The committed file is the reference: tests fail if either codec drifts from it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocol.codec import encode, to_wire
from protocol.formats import BODIES, HEADER
from protocol.messages import (
    Ack,
    AckState,
    Alarm,
    AlarmKind,
    Cancel,
    Checkin,
    Fault,
    FaultCode,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Signal,
    SignalPattern,
    Test,
    TestKind,
)

TEST_KEY = bytes(range(32))

CASES: list[tuple[str, str, Frame]] = [
    (
        "alarm_panic",
        "panic, first press, the worked example of SPEC.md",
        Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 123456)),
    ),
    (
        "alarm_duress",
        "long press: duress, silent at the unit",
        Frame(258, 1, 0, Alarm(AlarmKind.DURESS, 1, 0)),
    ),
    (
        "alarm_more_presses",
        "third press of the same series",
        Frame(257, 7, 44, Alarm(AlarmKind.PANIC, 3, 123456)),
    ),
    ("cancel", "cancel of the panic above", Frame(257, 7, 45, Cancel(7, 42))),
    ("checkin", "guard check-in", Frame(300, 65536, 65535, Checkin(0, 3600000))),
    ("checkin_duress", "duress check-in", Frame(300, 65536, 1, Checkin(1, 0xFFFFFFFF))),
    (
        "heartbeat",
        "heartbeat, all well",
        Frame(257, 7, 43, Heartbeat(3712, 86400, 0x0102, HeartbeatFlags(0))),
    ),
    (
        "heartbeat_flags",
        "heartbeat with tamper, low battery and alarm pending",
        Frame(
            259,
            0xFFFFFFFE,
            0x1234,
            Heartbeat(
                3300,
                5,
                0x0102,
                HeartbeatFlags.TAMPER | HeartbeatFlags.LOW_BATTERY | HeartbeatFlags.ALARM_PENDING,
            ),
        ),
    ),
    (
        "test_periodic",
        "daily self test, passed",
        Frame(257, 8, 0, Test(TestKind.PERIODIC, 0, 3700)),
    ),
    ("fault_tamper", "case opened", Frame(259, 2, 3, Fault(FaultCode.TAMPER, 1, 0))),
    (
        "fault_restore",
        "low battery restored",
        Frame(259, 2, 4, Fault(FaultCode.LOW_BATTERY, 0, 3650)),
    ),
    (
        "ack_received",
        "gateway: alarm journalled (downlink, gateway counter)",
        Frame(257, 3, 10, Ack(7, 42, AckState.RECEIVED)),
    ),
    (
        "ack_police",
        "gateway: police acknowledged",
        Frame(257, 3, 11, Ack(7, 44, AckState.POLICE_ACK)),
    ),
    (
        "signal_prompt",
        "gateway: prompt the guard to check in for 60 s",
        Frame(300, 3, 12, Signal(SignalPattern.PROMPT_CHECKIN, 60)),
    ),
]


def spaced(frame: Frame, raw: bytes) -> str:
    """Hex of the frame with a space at every field boundary and ' | ' between parts."""
    widths = [s.sizeof() for s in HEADER.subcons]
    body = [s.sizeof() for s in BODIES[frame.type].subcons]
    parts, i = [], 0
    for group in (widths, body, [8], [2]):
        tokens = []
        for w in group:
            tokens.append(raw[i : i + w].hex())
            i += w
        parts.append(" ".join(tokens))
    return " | ".join(parts)


def main() -> None:
    """Print vectors.json."""
    out = {"key": TEST_KEY.hex(), "vectors": []}
    for name, note, frame in CASES:
        raw = encode(frame, TEST_KEY)
        body = {f.name: int(getattr(frame.body, f.name)) for f in fields(frame.body)}
        out["vectors"].append(
            {
                "name": name,
                "note": note,
                "type": frame.type.name,
                "unit": frame.unit,
                "epoch": frame.epoch,
                "seq": frame.seq,
                "body": body,
                "frame": spaced(frame, raw),
                "wire": to_wire(raw).hex(" "),
            }
        )
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
