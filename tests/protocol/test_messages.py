"""Every wire value of protocol/messages.py pinned against SPEC.md section 2 (issue 19).

The golden vectors use a few values of each enum; these tables pin all of them, so a
renumbered or deleted member fails here rather than at a duty room.
"""

from __future__ import annotations

import pytest

from protocol import (
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
    MsgType,
    Signal,
    SignalPattern,
    Test,
    TestKind,
)
from protocol.messages import MESSAGE_CLASSES, UPLINK_MAX_TYPE

TABLES: list[tuple[type, dict[str, int]]] = [
    (
        MsgType,
        {
            "ALARM": 0x01,
            "CANCEL": 0x02,
            "CHECKIN": 0x03,
            "HEARTBEAT": 0x04,
            "TEST": 0x05,
            "FAULT": 0x06,
            "ACK": 0x81,
            "SIGNAL": 0x82,
        },
    ),
    (AlarmKind, {"PANIC": 0, "DURESS": 1, "SILENT": 2, "MEDICAL": 3, "FIRE": 4, "OTHER": 5}),
    (TestKind, {"PERIODIC": 0, "MANUAL": 1}),
    (
        FaultCode,
        {
            "TAMPER": 1,
            "BUTTON_STUCK": 2,
            "LOW_BATTERY": 3,
            "MAINS_LOST": 4,
            "WATCHDOG_RESET": 5,
            "SAFE_MODE": 6,
            "STORAGE": 7,
            "LINK_LOST": 8,
        },
    ),
    (AckState, {"RECEIVED": 1, "POLICE_ACK": 2, "CANCELLED": 3}),
    (SignalPattern, {"STOP": 0, "PROMPT_CHECKIN": 1, "LOCATE": 2, "ESCALATED": 3}),
    (
        HeartbeatFlags,
        {
            "TAMPER": 0x01,
            "LOW_BATTERY": 0x02,
            "MAINS_LOST": 0x04,
            "BUTTON_STUCK": 0x08,
            "SAFE_MODE": 0x10,
            "ALARM_PENDING": 0x20,
        },
    ),
]


@pytest.mark.parametrize(("enum_type", "table"), TABLES, ids=[t.__name__ for t, _ in TABLES])
def test_every_enum_value_is_pinned(enum_type: type, table: dict[str, int]) -> None:
    got = {m.name: int(m.value) for m in enum_type}  # type: ignore[attr-defined]
    assert got == table


# SPEC.md 2.1: the Ademco Contact ID event code of each alarm kind
CONTACT_ID = {
    AlarmKind.PANIC: 120,
    AlarmKind.DURESS: 121,
    AlarmKind.SILENT: 122,
    AlarmKind.MEDICAL: 100,
    AlarmKind.FIRE: 110,
    AlarmKind.OTHER: 150,
}


@pytest.mark.parametrize("kind", list(AlarmKind))
def test_contact_id_code_of_every_alarm_kind(kind: AlarmKind) -> None:
    assert kind.contact_id == CONTACT_ID[kind]


def test_direction_of_every_type() -> None:
    assert UPLINK_MAX_TYPE == 0x7F
    up = {t for t in MsgType if t.uplink}
    assert up == {
        MsgType.ALARM,
        MsgType.CANCEL,
        MsgType.CHECKIN,
        MsgType.HEARTBEAT,
        MsgType.TEST,
        MsgType.FAULT,
    }


def test_each_type_has_its_class() -> None:
    assert MESSAGE_CLASSES == {
        MsgType.ALARM: Alarm,
        MsgType.CANCEL: Cancel,
        MsgType.CHECKIN: Checkin,
        MsgType.HEARTBEAT: Heartbeat,
        MsgType.TEST: Test,
        MsgType.FAULT: Fault,
        MsgType.ACK: Ack,
        MsgType.SIGNAL: Signal,
    }


def test_checkin_duress_is_bit_zero_only() -> None:
    assert Checkin(0x01, 0).duress
    assert Checkin(0xFF, 0).duress
    assert not Checkin(0x00, 0).duress
    assert not Checkin(0xFE, 0).duress


def test_heartbeat_firmware_version_is_major_dot_minor() -> None:
    assert Heartbeat(0, 0, 0x0102, HeartbeatFlags(0)).fw_version == "1.2"
    assert Heartbeat(0, 0, 0xFF00, HeartbeatFlags(0)).fw_version == "255.0"
    assert Heartbeat(0, 0, 0x00FF, HeartbeatFlags(0)).fw_version == "0.255"


def test_frame_counter_is_epoch_then_seq() -> None:
    f = Frame(1, 0x01020304, 0x0506, Cancel(0, 0))
    assert f.counter == 0x010203040506
    assert Frame(1, 1, 0, Cancel(0, 0)).counter > Frame(1, 0, 0xFFFF, Cancel(0, 0)).counter
    assert f.type is MsgType.CANCEL
