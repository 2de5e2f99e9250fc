"""The stream deframer: resync, bounded buffer, garbage never raises, chunking."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Alarm, AlarmKind, Deframer, Frame, Reason, decode, encode, to_wire
from protocol.keys import TEST_KEY

FRAMES = [encode(Frame(257, 7, s, Alarm(AlarmKind.PANIC, 1, s)), TEST_KEY) for s in range(20)]


def feed_all(d: Deframer, data: bytes, chunk: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out += d.feed(data[i : i + chunk])
    return out


def test_whole_writes_and_one_byte_at_a_time() -> None:
    stream = b"".join(to_wire(r) for r in FRAMES)
    for chunk in (len(stream), 1, 3, 7):
        assert feed_all(Deframer(), stream, chunk) == FRAMES


def test_starting_mid_stream_resyncs_at_next_delimiter() -> None:
    stream = b"".join(to_wire(r) for r in FRAMES)
    d = Deframer()
    out = d.feed(stream[5:])  # the first frame is cut
    assert out[1:] == FRAMES[1:]
    # the broken head decodes to bytes that the codec rejects, it never raises
    assert len(out) == len(FRAMES)


def test_leading_delimiter_and_empty_frames_are_ignored() -> None:
    d = Deframer()
    assert d.feed(b"\x00\x00\x00" + to_wire(FRAMES[0]) + b"\x00") == [FRAMES[0]]
    assert not d.rejects


def test_oversize_is_bounded_and_counted() -> None:
    d = Deframer(max_encoded=80)
    out = d.feed(bytes([0x55]) * 10_000 + b"\x00" + to_wire(FRAMES[3]))
    assert out == [FRAMES[3]]
    assert d.rejects[Reason.OVERSIZE] == 1
    assert len(d._buf) == 0


@settings(max_examples=200)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_garbage_never_raises(data: bytes, chunk: int) -> None:
    d = Deframer()
    feed_all(d, data, chunk)


def test_seeded_corruption_loses_only_damaged_frames() -> None:
    """Bit flips on the line cost the frames they hit, never the ones after them."""
    rng = random.Random(1234)
    wires = [to_wire(r) for r in FRAMES * 10]
    damaged = set()
    stream = bytearray()
    for i, w in enumerate(wires):
        w = bytearray(w)
        if rng.random() < 0.2:
            pos = rng.randrange(len(w))
            w[pos] ^= 1 << rng.randrange(8)
            damaged.add(i)
        stream += w
    d = Deframer()
    got = []
    for raw in feed_all(d, bytes(stream), 5):
        try:
            got.append(decode(raw, {257: TEST_KEY}))
        except Exception:  # counting rejects is the codec's job, not this test's
            pass
    intact = [i for i in range(len(wires)) if i not in damaged]
    assert len(got) == len(intact)


def test_flood_of_garbage_does_not_starve_valid_frames() -> None:
    rng = random.Random(7)
    d = Deframer()
    good = 0
    for i in range(200):
        garbage = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 300)))
        out = d.feed(garbage + b"\x00" + to_wire(FRAMES[i % 20]))
        good += sum(1 for r in out if r == FRAMES[i % 20])
    assert good == 200


# Counters and the discard state (issue 19).


def test_counters_count_frames_and_each_reject_reason() -> None:
    d = Deframer()
    out = d.feed(to_wire(FRAMES[0]) + b"\x05\x11\x22\x00" + to_wire(FRAMES[1]))
    assert out == [FRAMES[0], FRAMES[1]]
    assert d.frames == 2
    assert d.rejects == {Reason.CORRUPT: 1}
    d.feed(b"\x09\x01\x00" + b"\x00" + to_wire(FRAMES[2]))
    assert d.frames == 3
    assert d.rejects == {Reason.CORRUPT: 2}


def test_oversize_split_across_reads_is_one_reject_and_discards_to_the_delimiter() -> None:
    d = Deframer(max_encoded=80)
    assert d.feed(bytes([0x55]) * 50) == []
    assert d.feed(bytes([0x55]) * 50) == []  # 100 bytes without a delimiter: too long
    assert d.rejects == {Reason.OVERSIZE: 1}
    # a whole valid-looking frame before the delimiter is still part of the oversize piece
    assert d.feed(to_wire(FRAMES[0])[:-1]) == []
    assert d.feed(bytes([0x55]) * 200) == []
    assert d.rejects == {Reason.OVERSIZE: 1}
    assert len(d._buf) == 0
    assert d.feed(b"\x00") == []  # the end of the discarded piece
    assert d.feed(to_wire(FRAMES[1])) == [FRAMES[1]]
    assert d.rejects == {Reason.OVERSIZE: 1}
    assert d.frames == 1


def test_piece_of_exactly_the_bound_is_kept_one_more_is_oversize() -> None:
    wire = to_wire(FRAMES[5])
    n = len(wire) - 1
    for chunk in (n, 1):
        d = Deframer(max_encoded=n)
        assert feed_all(d, wire, chunk) == [FRAMES[5]]
        assert not d.rejects
        d = Deframer(max_encoded=n - 1)
        assert feed_all(d, wire + to_wire(FRAMES[6][:10]), chunk) == [FRAMES[6][:10]]
        assert d.rejects == {Reason.OVERSIZE: 1}


def test_default_bound_is_the_spec_bound() -> None:
    d = Deframer()
    piece = bytes([81]) + bytes(range(1, 81))  # one COBS block of 81 bytes: past 80
    assert d.feed(piece[:80] + b"\x00") == []
    assert d.rejects == {Reason.CORRUPT: 1}  # 80 bytes kept, and decoded (code past end)
    assert d.feed(piece + b"\x00") == []
    assert d.rejects == {Reason.CORRUPT: 1, Reason.OVERSIZE: 1}


def test_each_oversize_piece_counts_once() -> None:
    d = Deframer(max_encoded=80)
    for _ in range(3):
        assert d.feed(bytes([0x55]) * 100 + b"\x00") == []
    assert d.rejects == {Reason.OVERSIZE: 3}
    assert d.feed(to_wire(FRAMES[0])) == [FRAMES[0]]
