"""Frames and message bodies as immutable values (SPEC.md section 2); no I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

UPLINK_MAX_TYPE = 0x7F


class MsgType(enum.IntEnum):
    """Message type byte; 0x01-0x7F unit to gateway, 0x80-0xFF gateway to unit."""

    ALARM = 0x01
    CANCEL = 0x02
    CHECKIN = 0x03
    HEARTBEAT = 0x04
    TEST = 0x05
    FAULT = 0x06
    ACK = 0x81
    SIGNAL = 0x82

    @property
    def uplink(self) -> bool:
        """True for unit-to-gateway types."""
        return self.value <= UPLINK_MAX_TYPE


class AlarmKind(enum.IntEnum):
    """ALARM ``kind``; ``contact_id`` gives the alarm industry's event code."""

    PANIC = 0
    DURESS = 1
    SILENT = 2
    MEDICAL = 3
    FIRE = 4
    OTHER = 5

    @property
    def contact_id(self) -> int:
        """Ademco Contact ID event code for this kind."""
        return _ALARM_CID[self]


_ALARM_CID = {
    AlarmKind.PANIC: 120,
    AlarmKind.DURESS: 121,
    AlarmKind.SILENT: 122,
    AlarmKind.MEDICAL: 100,
    AlarmKind.FIRE: 110,
    AlarmKind.OTHER: 150,
}


class TestKind(enum.IntEnum):
    """TEST ``kind``."""

    __test__ = False  # a name pytest would otherwise try to collect

    PERIODIC = 0
    MANUAL = 1


class FaultCode(enum.IntEnum):
    """FAULT ``code``."""

    TAMPER = 1
    BUTTON_STUCK = 2
    LOW_BATTERY = 3
    MAINS_LOST = 4
    WATCHDOG_RESET = 5
    SAFE_MODE = 6
    STORAGE = 7
    LINK_LOST = 8


class AckState(enum.IntEnum):
    """ACK ``state``."""

    RECEIVED = 1
    POLICE_ACK = 2
    CANCELLED = 3


class SignalPattern(enum.IntEnum):
    """SIGNAL ``pattern``."""

    STOP = 0
    PROMPT_CHECKIN = 1
    LOCATE = 2
    ESCALATED = 3


class HeartbeatFlags(enum.IntFlag):
    """HEARTBEAT ``flags`` bits."""

    TAMPER = 0x01
    LOW_BATTERY = 0x02
    MAINS_LOST = 0x04
    BUTTON_STUCK = 0x08
    SAFE_MODE = 0x10
    ALARM_PENDING = 0x20


class Message:
    """Base of every message body; ``TYPE`` is its type byte."""

    TYPE: ClassVar[MsgType]


@dataclass(frozen=True, slots=True)
class Alarm(Message):
    """A press of the alarm button (panic, duress, ...)."""

    TYPE: ClassVar[MsgType] = MsgType.ALARM
    kind: AlarmKind
    presses: int
    press_ms: int


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """The unit's own false-alarm cancel of the ALARM with counter (ref_epoch, ref_seq)."""

    TYPE: ClassVar[MsgType] = MsgType.CANCEL
    ref_epoch: int
    ref_seq: int


@dataclass(frozen=True, slots=True)
class Checkin(Message):
    """A guard's check-in at a post; ``flags`` bit 0 means under duress."""

    TYPE: ClassVar[MsgType] = MsgType.CHECKIN
    flags: int
    press_ms: int

    @property
    def duress(self) -> bool:
        """True when the guard gave the duress check-in gesture."""
        return bool(self.flags & 0x01)


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Periodic supervision report."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    battery_mv: int
    uptime_s: int
    fw: int
    flags: HeartbeatFlags

    @property
    def fw_version(self) -> str:
        """Firmware version as ``major.minor``."""
        return f"{self.fw >> 8}.{self.fw & 0xFF}"


@dataclass(frozen=True, slots=True)
class Test(Message):
    """Periodic or manual self-test result."""

    __test__: ClassVar[bool] = False  # not a pytest class
    TYPE: ClassVar[MsgType] = MsgType.TEST
    kind: TestKind
    result: int
    battery_mv: int


@dataclass(frozen=True, slots=True)
class Fault(Message):
    """A fault began (active=1) or ended (active=0)."""

    TYPE: ClassVar[MsgType] = MsgType.FAULT
    code: FaultCode
    active: int
    detail: int


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """Gateway acknowledgement of the uplink frame (ref_epoch, ref_seq)."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    ref_epoch: int
    ref_seq: int
    state: AckState


@dataclass(frozen=True, slots=True)
class Signal(Message):
    """Gateway request to show a pattern at the unit (e.g. prompt a guard)."""

    TYPE: ClassVar[MsgType] = MsgType.SIGNAL
    pattern: SignalPattern
    duration_s: int


MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls for cls in (Alarm, Cancel, Checkin, Heartbeat, Test, Fault, Ack, Signal)
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: sender (or, downlink, destination) unit, counter, and body."""

    unit: int
    epoch: int
    seq: int
    body: Message

    @property
    def type(self) -> MsgType:
        """The body's message type."""
        return self.body.TYPE

    @property
    def counter(self) -> int:
        """The 48-bit counter ``epoch * 65536 + seq`` (SPEC.md 1.3)."""
        return (self.epoch << 16) | self.seq
