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


# Runs longer than one COBS block (254 non-zero bytes): the block rule (issue 19).
RUN = bytes((i % 255) + 1 for i in range(600))


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (RUN[:253], b"\xfe" + RUN[:253]),
        (RUN[:254], b"\xff" + RUN[:254]),
        (RUN[:255], b"\xff" + RUN[:254] + b"\x02" + RUN[254:255]),
        (RUN[:600], b"\xff" + RUN[:254] + b"\xff" + RUN[254:508] + bytes([93]) + RUN[508:]),
        (RUN[:254] + b"\x00", b"\xff" + RUN[:254] + b"\x01\x01"),
        (RUN[:254] + b"\x00\x07", b"\xff" + RUN[:254] + b"\x01\x02\x07"),
        (b"\x00" + RUN[:255], b"\x01\xff" + RUN[:254] + b"\x02" + RUN[254:255]),
    ],
    ids=["253", "254", "255", "600", "254+zero", "254+zero+byte", "zero+255"],
)
def test_long_runs_split_into_254_byte_blocks(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_decode_of_a_full_block_adds_no_zero() -> None:
    # 0xFF means "254 bytes and no zero after them": a following block continues the run
    assert cobs_decode(b"\xff" + RUN[:254] + b"\x01") == RUN[:254]
    assert cobs_decode(b"\x03\x11\x22\x01") == b"\x11\x22\x00"
