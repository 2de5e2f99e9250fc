"""gateway/link/receiver.py: line bytes -> authentic frames in batches, every reject counted.

The real codec and replay window; the sink records what the pipeline would be handed.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.link.receiver import Received, Receiver
from protocol import (
    Alarm,
    AlarmKind,
    Codec,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Reason,
    ReplayGuard,
    Verdict,
)
from protocol.keys import TEST_KEY

ADDR = 257
OTHER_KEY = b"\x5a" * 32  # not the unit's key


class Sink:
    """The pipeline's side of :class:`gateway.link.receiver.FrameSink`, recorded."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Received]]] = []
        self.links: list[tuple[str, bool]] = []
        self.security: list[tuple[str, Reason, int | None]] = []

    def on_frames(self, link: str, items: Sequence[Received]) -> None:
        self.batches.append((link, list(items)))

    def on_link(self, link: str, up: bool) -> None:
        self.links.append((link, up))

    def on_security_reject(self, link: str, reason: Reason, addr: int | None) -> None:
        self.security.append((link, reason, addr))

    def frames(self) -> list[Received]:
        return [r for _, batch in self.batches for r in batch]


def wire(seq: int, key: bytes = TEST_KEY, addr: int = ADDR, epoch: int = 3) -> bytes:
    """A unit's frame as it goes on the line (COBS, 0x00-delimited)."""
    body = Heartbeat(3700, seq, 0x0100, HeartbeatFlags(0))
    return Codec({addr: key}, gateway=False).encode(Frame(addr, epoch, seq, body))


def receiver(guard: ReplayGuard | None = None) -> tuple[Receiver, Sink]:
    sink = Sink()
    codec = Codec({ADDR: TEST_KEY}, gateway=True)
    return Receiver(codec, guard or ReplayGuard(), sink), sink


def test_a_frame_fed_byte_by_byte_is_one_batch_when_it_completes() -> None:
    rx, sink = receiver()
    data = wire(1)
    for b in data[:-1]:
        rx.on_bytes("bus0", bytes([b]))
    assert sink.batches == []
    rx.on_bytes("bus0", data[-1:])
    assert [(link, [r.frame.seq for r in batch]) for link, batch in sink.batches] == [
        ("bus0", [1])
    ]
    assert sink.frames()[0].verdict is Verdict.FRESH and rx.frames == 1


def test_the_frames_of_one_read_go_on_as_one_batch_in_line_order() -> None:
    rx, sink = receiver()
    rx.on_bytes("bus0", wire(1) + wire(2) + wire(3))
    assert [[r.frame.seq for r in batch] for _, batch in sink.batches] == [[1, 2, 3]]
    assert rx.link_frames == {"bus0": 3}


def test_garbage_between_frames_is_counted_and_the_frames_around_it_get_through() -> None:
    rx, sink = receiver()
    corrupt = bytearray(wire(2))
    corrupt[5] ^= 0xFF  # a bit error on the line
    rx.on_bytes("bus0", wire(1) + b"\x13\x37 noise \x00" + bytes(corrupt) + wire(3))
    assert [r.frame.seq for r in sink.frames()] == [1, 3]
    rejects = rx.rejects("bus0")
    assert sum(rejects.values()) == 2, rejects
    assert sink.security == []  # line noise is no attack


def test_a_forged_frame_is_dropped_counted_and_reported_for_its_claimed_unit() -> None:
    rx, sink = receiver()
    rx.on_bytes("bus0", wire(1, key=OTHER_KEY) + wire(2))
    assert [r.frame.seq for r in sink.frames()] == [2]
    assert rx.rejects("bus0") == {"forged": 1}
    assert sink.security == [("bus0", Reason.FORGED, ADDR)]


def test_an_unknown_unit_is_reported_and_a_replay_below_the_window_too() -> None:
    guard = ReplayGuard()
    guard.record(ADDR, 3, 100)  # the journal had seen up to 3:100
    rx, sink = receiver(guard)
    rx.on_bytes("bus1", wire(1, addr=999) + wire(10) + wire(101))
    assert [r.frame.seq for r in sink.frames()] == [101]
    assert rx.rejects("bus1") == {"unknown_unit": 1, "replayed": 1}
    assert [(reason, addr) for _, reason, addr in sink.security] == [
        (Reason.UNKNOWN_UNIT, 999),
        (Reason.REPLAYED, ADDR),
    ]


def test_the_same_frame_twice_in_one_read_is_fresh_then_a_duplicate() -> None:
    rx, sink = receiver()
    rx.on_bytes("bus0", wire(5) + wire(5))
    assert [r.verdict for r in sink.frames()] == [Verdict.FRESH, Verdict.DUPLICATE]


def test_a_link_that_went_down_starts_with_an_empty_buffer_and_keeps_its_counts() -> None:
    rx, sink = receiver()
    rx.on_bytes("bus0", wire(1, key=OTHER_KEY))
    half = wire(2)
    rx.on_bytes("bus0", half[:6])  # cut mid-frame
    rx.on_link("bus0", False)
    rx.on_link("bus0", True)
    rx.on_bytes("bus0", half[6:] + wire(3))  # the tail of the cut frame is no frame
    assert [r.frame.seq for r in sink.frames()] == [3]
    assert sink.links == [("bus0", False), ("bus0", True)]
    assert rx.rejects("bus0")["forged"] == 1


def test_counts_are_per_link() -> None:
    rx, _ = receiver()
    rx.on_bytes("bus0", wire(1, key=OTHER_KEY))
    rx.on_bytes("bus1", wire(2) + b"\x01\x02\x00")
    assert rx.rejects("bus0") == {"forged": 1}
    assert "forged" not in rx.rejects("bus1") and sum(rx.rejects("bus1").values()) == 1
    assert rx.rejects()["forged"] == 1 and rx.link_frames == {"bus1": 1}


def test_an_alarm_frame_keeps_its_body() -> None:
    rx, sink = receiver()
    alarm = Alarm(AlarmKind.PANIC, 2, 1234)
    rx.on_bytes(
        "bus0", Codec({ADDR: TEST_KEY}, gateway=False).encode(Frame(ADDR, 4, 9, alarm))
    )
    (got,) = sink.frames()
    assert (got.link, got.frame.unit, got.frame.epoch, got.frame.seq) == ("bus0", ADDR, 4, 9)
    assert got.frame.body == alarm
