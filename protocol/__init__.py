"""CampusGuard wire protocol, gateway side (see SPEC.md).

Bytes -> frames: :mod:`protocol.cobs` and :mod:`protocol.deframer`; frames -> values:
:mod:`protocol.codec` (formats declared once in :mod:`protocol.formats`); the replay
window: :mod:`protocol.replay`.
"""

from protocol.codec import Codec, decode, encode, to_wire
from protocol.deframer import Deframer
from protocol.errors import ProtocolError, Reason
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
    Message,
    MsgType,
    Signal,
    SignalPattern,
    Test,
    TestKind,
)
from protocol.replay import ReplayGuard, Verdict

__all__ = [
    "Ack",
    "AckState",
    "Alarm",
    "AlarmKind",
    "Cancel",
    "Checkin",
    "Codec",
    "Deframer",
    "Fault",
    "FaultCode",
    "Frame",
    "Heartbeat",
    "HeartbeatFlags",
    "Message",
    "MsgType",
    "ProtocolError",
    "Reason",
    "ReplayGuard",
    "Signal",
    "SignalPattern",
    "Test",
    "TestKind",
    "Verdict",
    "decode",
    "encode",
    "to_wire",
]
