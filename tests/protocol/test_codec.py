"""The construct codec against the golden vectors, and every reject reason."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Ack,
    AckState,
    Alarm,
    AlarmKind,
    Cancel,
    Checkin,
    Codec,
    Fault,
    FaultCode,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    MsgType,
    ProtocolError,
    Reason,
    Signal,
    SignalPattern,
    Test,
    TestKind,
    decode,
    encode,
    to_wire,
)
from protocol.crc import crc16
from protocol.formats import FRAME
from protocol.keys import TEST_KEY
from protocol.messages import MESSAGE_CLASSES

from .conftest import load_vectors

VECTORS = load_vectors()["vectors"]
OTHER_KEY = bytes(range(1, 33))


def frame_of(v: dict[str, Any]) -> Frame:
    cls = MESSAGE_CLASSES[MsgType[v["type"]]]
    hints = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    body = {}
    for name, value in v["body"].items():
        enum_type = {
            "kind": AlarmKind if cls is Alarm else TestKind,
            "code": FaultCode,
            "state": AckState,
            "pattern": SignalPattern,
        }.get(name)
        if name == "flags" and cls is Heartbeat:
            body[name] = HeartbeatFlags(value)
        elif enum_type is not None and name in hints:
            body[name] = enum_type(value)
        else:
            body[name] = value
    return Frame(v["unit"], v["epoch"], v["seq"], cls(**body))


def raw_of(v: dict[str, Any]) -> bytes:
    return bytes.fromhex(v["frame"].replace("|", "").replace(" ", ""))


def is_uplink(v: dict[str, Any]) -> bool:
    return MsgType[v["type"]].uplink


def keys(unit: int) -> bytes | None:
    return TEST_KEY


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_construct_builds_exactly_the_vector(v: dict[str, Any]) -> None:
    raw = encode(frame_of(v), TEST_KEY)
    assert raw == raw_of(v)
    assert to_wire(raw) == bytes.fromhex(v["wire"].replace(" ", ""))


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_gives_the_vector_fields(v: dict[str, Any]) -> None:
    frame = decode(raw_of(v), keys, uplink=is_uplink(v))
    assert frame == frame_of(v)


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_declared_frame_struct_agrees_with_fast_path(v: dict[str, Any]) -> None:
    raw = raw_of(v)
    parsed = FRAME.parse(raw)
    assert parsed.type == MsgType[v["type"]]
    assert dict((k, parsed.body[k]) for k in v["body"]) == v["body"]
    assert parsed.crc == crc16(raw[:-2])
    rebuilt = FRAME.build(
        dict(
            ver=1,
            type=parsed.type,
            unit=parsed.unit,
            epoch=parsed.epoch,
            seq=parsed.seq,
            body=v["body"],
            mac=parsed.mac,
            crc=parsed.crc,
        )
    )
    assert rebuilt == raw


def test_alarm_frame_fits_32_bytes_on_the_wire() -> None:
    worst = Frame(0xFFFE, 0xFFFFFFFF, 0xFFFF, Alarm(AlarmKind.OTHER, 255, 0xFFFFFFFF))
    assert len(to_wire(encode(worst, TEST_KEY))) <= 32
    for v in VECTORS:
        if v["type"] == "ALARM":
            assert len(bytes.fromhex(v["wire"].replace(" ", ""))) <= 32


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_single_bit_flip_is_corrupt(v: dict[str, Any]) -> None:
    raw = raw_of(v)
    for i in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ProtocolError) as e:
            decode(bytes(bad), keys, uplink=is_uplink(v))
        assert e.value.reason is Reason.CORRUPT, i


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_truncation_and_extension(v: dict[str, Any]) -> None:
    raw = raw_of(v)
    for cut in range(1, len(raw) + 1):
        with pytest.raises(ProtocolError) as e:
            decode(raw[: len(raw) - cut], keys, uplink=is_uplink(v))
        expect = Reason.TRUNCATED if len(raw) - cut < 20 else Reason.CORRUPT
        assert e.value.reason is expect, cut
    for extra in (b"\x00", b"\xff", b"\x01\x02\x03", bytes(64)):
        with pytest.raises(ProtocolError) as e:
            decode(raw + extra, keys, uplink=is_uplink(v))
        if len(raw) + len(extra) > 64:
            expect = Reason.OVERSIZE
        elif extra == b"\x00":
            # CRC residue: frame + its CRC + 0x00 checks again (SPEC.md section 3)
            expect = Reason.MALFORMED
        else:
            expect = Reason.CORRUPT
        assert e.value.reason is expect, extra


def with_crc(signed_and_mac: bytes) -> bytes:
    return signed_and_mac + crc16(signed_and_mac).to_bytes(2, "big")


def test_other_units_key_is_forged() -> None:
    frame = Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 5))
    raw = encode(frame, OTHER_KEY)
    with pytest.raises(ProtocolError) as e:
        decode(raw, {257: TEST_KEY})
    assert e.value.reason is Reason.FORGED
    assert e.value.unit == 257


def test_changed_field_with_fixed_crc_is_forged() -> None:
    raw = bytearray(encode(Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 5)), TEST_KEY))
    raw[10] = AlarmKind.MEDICAL  # somebody without the key rewrites the kind and the CRC
    with pytest.raises(ProtocolError) as e:
        decode(with_crc(bytes(raw[:-2])), {257: TEST_KEY})
    assert e.value.reason is Reason.FORGED


def test_unknown_unit() -> None:
    raw = encode(Frame(999, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    with pytest.raises(ProtocolError) as e:
        decode(raw, {257: TEST_KEY})
    assert e.value.reason is Reason.UNKNOWN_UNIT


def test_version_unknown_type_and_malformed() -> None:
    good = encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    for patch, reason in (
        ({0: 2}, Reason.VERSION),
        ({1: 0x42}, Reason.UNKNOWN_TYPE),
        ({1: MsgType.HEARTBEAT}, Reason.MALFORMED),  # ALARM-length body under HEARTBEAT
    ):
        bad = bytearray(good[:-2])
        for i, b in patch.items():
            bad[i] = b
        with pytest.raises(ProtocolError) as e:
            decode(with_crc(bytes(bad)), keys)
        assert e.value.reason is reason


def test_reserved_address_is_malformed() -> None:
    raw = encode(Frame(0, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    with pytest.raises(ProtocolError) as e:
        decode(raw, keys)
    assert e.value.reason is Reason.MALFORMED


def test_unknown_enum_value_is_malformed() -> None:
    raw = bytearray(encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)[:-10])
    raw[10] = 77  # no such alarm kind, correctly signed by the key holder
    from protocol.mac import mac8

    with pytest.raises(ProtocolError) as e:
        decode(with_crc(bytes(raw) + mac8(TEST_KEY, bytes(raw))), keys)
    assert e.value.reason is Reason.MALFORMED


def test_reflected_frames_are_refused_by_direction() -> None:
    ack = encode(Frame(257, 3, 1, Ack(7, 42, AckState.RECEIVED)), TEST_KEY)
    alarm = encode(Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    with pytest.raises(ProtocolError) as e:
        decode(ack, keys, uplink=True)  # an ACK played at the gateway
    assert e.value.reason is Reason.UNKNOWN_TYPE
    with pytest.raises(ProtocolError) as e:
        decode(alarm, keys, uplink=False)  # a unit's alarm reflected at the unit
    assert e.value.reason is Reason.UNKNOWN_TYPE


def test_codec_encodes_only_its_own_direction() -> None:
    gw = Codec({257: TEST_KEY}, gateway=True)
    unit = Codec({257: TEST_KEY}, gateway=False)
    ack = Frame(257, 3, 1, Ack(7, 42, AckState.POLICE_ACK))
    wire = gw.encode(ack)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    with pytest.raises(ValueError):
        unit.encode(ack)
    from protocol.cobs import cobs_decode

    assert unit.decode(cobs_decode(wire[:-1])) == ack


U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
UNIT = st.integers(1, 0xFFFE)
BODIES = st.one_of(
    st.builds(Alarm, st.sampled_from(AlarmKind), st.integers(0, 255), U32),
    st.builds(Cancel, U32, U16),
    st.builds(Checkin, st.integers(0, 1), U32),
    st.builds(Heartbeat, U16, U32, U16, st.integers(0, 63).map(HeartbeatFlags)),
    st.builds(Test, st.sampled_from(TestKind), st.integers(0, 255), U16),
    st.builds(Fault, st.sampled_from(FaultCode), st.integers(0, 1), U16),
    st.builds(Ack, U32, U16, st.sampled_from(AckState)),
    st.builds(Signal, st.sampled_from(SignalPattern), U16),
)


@settings(max_examples=300)
@given(UNIT, U32, U16, BODIES)
def test_round_trip_every_type(unit: int, epoch: int, seq: int, body: Any) -> None:
    frame = Frame(unit, epoch, seq, body)
    raw = encode(frame, TEST_KEY)
    assert decode(raw, keys, uplink=frame.type.uplink) == frame


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_random_bytes_are_rejected_never_crash(data: bytes) -> None:
    try:
        decode(data, keys)
    except ProtocolError as exc:
        assert isinstance(exc.reason, Reason)


# Regression cases named after the mutants that once survived (issue 19).


def signed_by(signed: bytes, key: bytes = TEST_KEY) -> bytes:
    from protocol.mac import mac8

    return with_crc(signed + mac8(key, signed))


@pytest.mark.parametrize("unit", [0, 0xFFFF])
@pytest.mark.parametrize("uplink", [True, False])
def test_reserved_addresses_at_both_ends_are_malformed(unit: int, uplink: bool) -> None:
    body = Alarm(AlarmKind.PANIC, 1, 0) if uplink else Ack(1, 1, AckState.RECEIVED)
    raw = encode(Frame(unit, 1, 1, body), TEST_KEY)  # signed with the key a lookup gives
    with pytest.raises(ProtocolError) as e:
        decode(raw, keys, uplink=uplink)
    assert e.value.reason is Reason.MALFORMED
    assert e.value.unit == unit


@pytest.mark.parametrize("unit", [1, 0xFFFE])
def test_addresses_next_to_the_reserved_ones_are_units(unit: int) -> None:
    frame = Frame(unit, 1, 1, Alarm(AlarmKind.PANIC, 1, 0))
    assert decode(encode(frame, TEST_KEY), {unit: TEST_KEY}) == frame


def test_frame_of_exactly_64_bytes_is_checked_and_65_is_oversize() -> None:
    good = encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    body64 = good[:-10] + bytes(64 - len(good))  # an ALARM header, padded, signed
    raw64 = signed_by(body64)
    assert len(raw64) == 64
    with pytest.raises(ProtocolError) as e:
        decode(raw64, keys)
    assert e.value.reason is Reason.MALFORMED  # a length check, not the size bound
    raw65 = signed_by(body64 + b"\x01")
    assert len(raw65) == 65
    with pytest.raises(ProtocolError) as e:
        decode(raw65, keys)
    assert e.value.reason is Reason.OVERSIZE
    assert e.value.unit is None


def test_frame_of_exactly_the_minimum_length_is_checked() -> None:
    from protocol.formats import MIN_FRAME

    header = encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)[:10]
    raw = signed_by(header)  # header, MAC and CRC with no body: 20 bytes
    assert len(raw) == MIN_FRAME == 20
    with pytest.raises(ProtocolError) as e:
        decode(raw, keys)
    assert e.value.reason is Reason.MALFORMED
    with pytest.raises(ProtocolError) as e:
        decode(raw[:-1], keys)
    assert e.value.reason is Reason.TRUNCATED


def test_reject_names_the_unit_once_the_header_is_read() -> None:
    good = encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), TEST_KEY)
    before_unit = {
        Reason.OVERSIZE: good + bytes(64),
        Reason.TRUNCATED: good[:5],
        Reason.CORRUPT: good[:-1] + bytes([good[-1] ^ 1]),
        Reason.VERSION: with_crc(b"\x02" + good[1:-2]),
        Reason.UNKNOWN_TYPE: with_crc(good[:1] + b"\x42" + good[2:-2]),
    }
    for reason, raw in before_unit.items():
        with pytest.raises(ProtocolError) as e:
            decode(raw, keys)
        assert (e.value.reason, e.value.unit) == (reason, None)
    enum_bad = bytearray(good[:-10])
    enum_bad[10] = 77
    after_unit = {
        Reason.MALFORMED: [
            with_crc(good[:1] + bytes([MsgType.HEARTBEAT]) + good[2:-2]),  # length
            signed_by(bytes(enum_bad)),  # enum value
        ],
        Reason.UNKNOWN_UNIT: [good],
        Reason.FORGED: [encode(Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)), OTHER_KEY)],
    }
    lookup = {257: TEST_KEY}
    for reason, raws in after_unit.items():
        for raw in raws:
            with pytest.raises(ProtocolError) as e:
                decode(raw, lookup if reason is not Reason.UNKNOWN_UNIT else {})
            assert (e.value.reason, e.value.unit) == (reason, 257)


def test_codec_encode_for_an_unknown_unit_is_refused() -> None:
    gw = Codec({257: TEST_KEY}, gateway=True)
    with pytest.raises(ProtocolError) as e:
        gw.encode(Frame(258, 1, 1, Ack(1, 1, AckState.RECEIVED)))
    assert (e.value.reason, e.value.unit) == (Reason.UNKNOWN_UNIT, 258)


def test_codec_takes_a_lookup_function_and_checks_its_direction() -> None:
    asked: list[int] = []

    def lookup(unit: int) -> bytes | None:
        asked.append(unit)
        return TEST_KEY if unit == 257 else None

    unit_side = Codec(lookup, gateway=False)
    alarm = Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 5))
    wire = unit_side.encode(alarm)
    assert wire == to_wire(encode(alarm, TEST_KEY))
    gw = Codec(lookup, gateway=True)
    from protocol.cobs import cobs_decode

    assert gw.decode(cobs_decode(wire[:-1])) == alarm
    with pytest.raises(ProtocolError) as e:
        unit_side.decode(cobs_decode(wire[:-1]))  # its own alarm reflected back
    assert e.value.reason is Reason.UNKNOWN_TYPE
    with pytest.raises(ValueError):
        gw.encode(alarm)
    assert asked == [257, 257]


def test_encode_out_of_range_field_is_a_value_error() -> None:
    for frame in (
        Frame(257, 1, 0x10000, Alarm(AlarmKind.PANIC, 1, 0)),
        Frame(257, 1, 1, Alarm(AlarmKind.PANIC, 256, 0)),
        Frame(0x10000, 1, 1, Alarm(AlarmKind.PANIC, 1, 0)),
    ):
        with pytest.raises(ValueError) as e:
            encode(frame, TEST_KEY)
        assert not isinstance(e.value, ProtocolError)


def test_enum_fields_decode_as_their_enums() -> None:
    hb = Frame(257, 1, 1, Heartbeat(3300, 10, 0x0102, HeartbeatFlags(0x21)))
    got = decode(encode(hb, TEST_KEY), keys)
    assert isinstance(got.body, Heartbeat)
    assert got.body.flags is HeartbeatFlags.TAMPER | HeartbeatFlags.ALARM_PENDING
    assert isinstance(got.body.flags, HeartbeatFlags)
    ack = decode(
        encode(Frame(257, 1, 1, Ack(1, 2, AckState.CANCELLED)), TEST_KEY), keys, uplink=False
    )
    assert isinstance(ack.body, Ack) and ack.body.state is AckState.CANCELLED
    ci = decode(encode(Frame(257, 1, 1, Checkin(1, 5)), TEST_KEY), keys)
    assert isinstance(ci.body, Checkin) and type(ci.body.flags) is int


def test_codec_is_the_gateway_side_by_default() -> None:
    alarm = Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 5))
    assert Codec({257: TEST_KEY}).decode(encode(alarm, TEST_KEY)) == alarm
    with pytest.raises(ValueError):
        Codec({257: TEST_KEY}).encode(alarm)
