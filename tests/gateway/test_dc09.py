"""gateway/arc/dc09.py against pysiaalarm 3.2's parser (an independent DC-09 receiver)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysiaalarm import SIAAccount
from pysiaalarm.event import SIAEvent
from pysiaalarm.utils import ResponseType

from gateway.arc import dc09
from gateway.arc.dc09 import Frame, Token
from gateway.core.errors import DC09Error

KEY16 = "AAAAAAAAAAAAAAAA"
KEY24 = "0123456789abcdefABCDEFGH"
KEY32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def pysia(wire: bytes, key: str | None = None, account: str = "1234") -> SIAEvent:
    """What pysiaalarm's TCP server makes of our bytes (it strips LF/CR, then parses)."""
    line = wire.decode("ascii").strip()
    return SIAEvent.from_line(line, {account: SIAAccount(account, key)})


def test_crc16_is_crc_arc() -> None:
    assert dc09.crc16(b"123456789") == 0xBB3D  # CRC-16/ARC check value


def test_adm_cid_vector_plain() -> None:
    now = 1_795_000_000.0
    f = Frame(
        Token.ADM_CID,
        1,
        "1234",
        line="1",
        receiver="1",
        data=dc09.adm_cid("1234", 1, 120, 1, 15),
        timestamp=now,
    )
    body = f'"ADM-CID"0001R1L1#1234[#1234|1120 01 015]_{dc09.format_timestamp(now)}'
    wire = f.encode()
    assert wire == b"\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body.encode())
    assert dc09.decode(wire) == f


def test_pysiaalarm_reads_plain_adm_cid() -> None:
    f = Frame(
        Token.ADM_CID, 42, "1234", data=dc09.adm_cid("1234", 1, 120, 1, 15), timestamp=time.time()
    )
    ev = pysia(f.encode())
    assert ev.valid_message  # its CRC agrees with ours
    assert (ev.sequence, ev.account, ev.event_qualifier, ev.event_type) == (
        "0042",
        "1234",
        "1",
        "120",
    )
    assert (ev.partition, ev.ri, ev.code) == ("01", "015", "PA")
    assert ev.response == ResponseType.ACK


@pytest.mark.parametrize("key", [KEY16, KEY24, KEY32])
def test_pysiaalarm_decrypts_each_key_size(key: str) -> None:
    raw = dc09.parse_key(key, "text")
    f = Frame(
        Token.ADM_CID, 7, "1234", data=dc09.adm_cid("1234", 3, 302, 2, 999), timestamp=time.time()
    )
    wire = f.encode(raw)
    assert b'"*ADM-CID"0007R0L0#1234[' in wire
    ev = pysia(wire, key)
    assert ev.valid_message
    assert (ev.event_qualifier, ev.event_type, ev.partition, ev.ri, ev.code) == (
        "3",
        "302",
        "02",
        "999",
        "YR",
    )
    assert ev.response == ResponseType.ACK  # the timestamp inside is within its window
    assert dc09.decode(wire, raw) == Frame(
        Token.ADM_CID,
        7,
        "1234",
        data="#1234|3302 02 999",
        timestamp=float(int(f.timestamp or 0)),
        encrypted=True,
    )


def test_hex_key_is_the_same_aes_key() -> None:
    assert dc09.parse_key(KEY16.encode().hex(), "hex") == KEY16.encode()
    assert dc09.parse_key(KEY32.encode().hex()) == KEY32.encode()  # 64 digits: auto is hex


@pytest.mark.parametrize(
    ("text", "form", "why"),
    [
        ("A" * 15, "text", "15 characters"),
        ("0" * 32, "auto", "say which"),
        ("zz" * 16, "hex", "not hex"),
        ("00" * 20, "hex", "40 hex digits"),
        ("é" * 16, "text", "printable ASCII"),
    ],
)
def test_bad_keys_are_named(text: str, form: dc09.KeyForm, why: str) -> None:
    with pytest.raises(DC09Error, match=why):
        dc09.parse_key(text, form, "arc.key")


def test_sia_dcs_and_null_read_by_pysiaalarm() -> None:
    now = time.time()
    ev = pysia(
        Frame(
            Token.SIA_DCS, 3, "1234", data=dc09.sia_dcs("1234", "PA", 1, 15), timestamp=now
        ).encode()
    )
    # SIA "ri" is the area (our group); the zone follows the event code
    assert (ev.code, ev.ri, ev.message, ev.response) == ("PA", "1", "015", ResponseType.ACK)
    key = dc09.parse_key(KEY16)
    ev = pysia(Frame(Token.NULL, 4, "1234", timestamp=now).encode(key), KEY16)
    assert (ev.code, ev.response) == ("RP", ResponseType.ACK)  # pysiaalarm's NULL is RP


def test_pysiaalarm_refuses_our_stale_timestamp() -> None:
    f = Frame(
        Token.ADM_CID,
        5,
        "1234",
        data=dc09.adm_cid("1234", 1, 120, 1, 1),
        timestamp=time.time() - 120,
    )
    assert pysia(f.encode(dc09.parse_key(KEY16)), KEY16).response == ResponseType.NAK


def test_we_read_pysiaalarm_replies() -> None:
    key = dc09.parse_key(KEY16)
    sent = Frame(
        Token.ADM_CID, 9, "1234", data=dc09.adm_cid("1234", 1, 120, 1, 1), timestamp=time.time()
    )
    ack = dc09.decode(pysia(sent.encode(key), KEY16).create_response(), key)
    assert (ack.token, ack.seq, ack.account, ack.encrypted) == (Token.ACK, 9, "1234", True)
    assert ack.timestamp is not None and abs(ack.timestamp - time.time()) < 5
    plain = dc09.decode(pysia(sent.encode()).create_response())
    assert (plain.token, plain.seq, plain.account, plain.encrypted) == (Token.ACK, 9, "1234", False)
    stale = Frame(Token.ADM_CID, 10, "1234", data=sent.data, timestamp=time.time() - 600)
    nak = dc09.decode(pysia(stale.encode()).create_response())
    assert (nak.token, nak.seq, nak.account) == (Token.NAK, 0, None)
    assert nak.timestamp is not None and abs(nak.timestamp - time.time()) < 5


def test_wrong_key_is_a_dc09_error() -> None:
    wire = Frame(Token.NULL, 1, "1234", timestamp=time.time()).encode(dc09.parse_key(KEY16))
    with pytest.raises(DC09Error):
        dc09.decode(wire, dc09.parse_key(KEY24))
    with pytest.raises(DC09Error, match="no key"):
        dc09.decode(wire)


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b'\n0000001A"ACK"0001R0L0#1234[]\r', "length"),
        (b'\nFFFF0014"ACK"0001R0L0#1234[]\r', "CRC"),
        (b"\x80\x81", "ASCII"),
        (b"garbage", "CRC and length"),
        (b"\n" + b"0" * 2000 + b"\r", "over"),
    ],
)
def test_garbage_replies_are_named(wire: bytes, why: str) -> None:
    with pytest.raises(DC09Error, match=why):
        dc09.decode(wire)


def _framed(body: str) -> bytes:
    return b"\n%04X%04X%s\r" % (dc09.crc16(body.encode()), len(body), body.encode())


@pytest.mark.parametrize(
    "body",
    [
        '"XYZ"0001R0L0#1234[]',
        '"ACK"0001Q0L0#1234[]',
        '"ACK"0001R0L0#12[]',
        '"ACK"0001R0L0#1234[',
        '"ACK"0001R0L0#1234[]_99:99:99,13-40-2026',
        '"*ACK"0001L0#1234[ZZ',
    ],
)
def test_well_framed_nonsense_is_refused(body: str) -> None:
    with pytest.raises(DC09Error):
        dc09.decode(_framed(body), dc09.parse_key(KEY16))


@given(st.binary(max_size=300))
def test_decode_raises_only_dc09_errors(data: bytes) -> None:
    for wire in (data, _framed(data.decode("latin-1").encode("ascii", "replace").decode())):
        try:
            dc09.decode(wire, dc09.parse_key(KEY16))
        except DC09Error:
            pass


def test_fixed_pad_gives_a_fixed_frame_and_pad_is_checked() -> None:
    key = dc09.parse_key(KEY16)
    f = Frame(Token.NULL, 1, "1234", timestamp=0.0)  # "]_00:00:00,01-01-1970": 21 + '|'
    assert f.encode(key, pad="x" * 10) == f.encode(key, pad="x" * 10)
    assert f.encode(key) != f.encode(key)  # random pad
    with pytest.raises(DC09Error, match="pad"):
        f.encode(key, pad="x|" * 5)


def test_sequence_wraps_to_one() -> None:
    assert [dc09.next_seq(s) for s in (1, 9998, 9999)] == [2, 9999, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seq": 10000},
        {"account": "12"},
        {"account": "XYZ1"},
        {"line": ""},
        {"data": "a]b"},
    ],
)
def test_frames_that_cannot_go_on_the_wire(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"token": Token.NULL, "seq": 1, "account": "1234"}
    with pytest.raises(DC09Error):
        Frame(**(base | kwargs))  # type: ignore[arg-type]
