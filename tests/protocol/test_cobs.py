import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cobs import cobs_decode, cobs_encode
from protocol.errors import ProtocolError, Reason

# examples from Cheshire and Baker's paper / the usual COBS test table
KNOWN = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
]


@pytest.mark.parametrize(("raw", "encoded"), KNOWN)
def test_known_examples(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=700))
def test_round_trip_and_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + 1 + len(data) // 254
    assert cobs_decode(enc) == data


def test_code_past_end_is_corrupt() -> None:
    with pytest.raises(ProtocolError) as e:
        cobs_decode(b"\x05\x11\x22")
    assert e.value.reason is Reason.CORRUPT


def test_zero_inside_is_corrupt() -> None:
    with pytest.raises(ProtocolError) as e:
        cobs_decode(b"\x02\x11\x00\x01")
    assert e.value.reason is Reason.CORRUPT
