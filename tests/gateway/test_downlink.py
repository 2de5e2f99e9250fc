"""gateway/link/downlink.py: the gateway's own counter and the route to a unit.

A real journal (SQLite) keeps the downlink epoch; the links record what was written, and a
unit's codec decodes it as the firmware would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.journal.store import Store
from gateway.link import downlink as downlink_module
from gateway.link.downlink import Downlink
from protocol import Ack, AckState, Codec, Deframer, Frame, Signal, SignalPattern
from protocol.keys import TEST_KEY

A, B = 257, 258


class Line:
    """A link as the downlink sees it: what was written, or refused while down."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.written: list[bytes] = []

    def write(self, data: bytes) -> bool:
        if not self.up:
            return False
        self.written.append(data)
        return True

    def frames(self, addr: int) -> list[Frame]:
        """What unit ``addr`` reads off this line (its own frames, authenticated)."""
        unit = Codec({addr: TEST_KEY}, gateway=False)
        out = []
        for data in self.written:
            for raw in Deframer().feed(data):
                frame = unit.decode(raw)
                if frame.unit == addr:
                    out.append(frame)
        return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "j.db")
    yield s
    s.close()


def make(store: Store, lines: dict[str, Line]) -> Downlink:
    codec = Codec({A: TEST_KEY, B: TEST_KEY}, gateway=True)
    return Downlink(codec, store, lines, home_links={A: "bus0", B: "bus1"})


def test_an_ack_reaches_its_unit_signed_with_the_next_counter(store: Store) -> None:
    lines = {"bus0": Line(), "bus1": Line()}
    dl = make(store, lines)
    assert dl.ack(A, 7, 41, AckState.RECEIVED) and dl.ack(A, 7, 42, AckState.POLICE_ACK)
    got = lines["bus0"].frames(A)
    assert [(f.epoch, f.seq) for f in got] == [(dl.epoch, 0), (dl.epoch, 1)]
    assert got[1].body == Ack(ref_epoch=7, ref_seq=42, state=AckState.POLICE_ACK)
    assert lines["bus1"].written == [] and dl.sent == 2


def test_a_unit_is_answered_on_the_link_it_last_spoke_on(store: Store) -> None:
    lines = {"bus0": Line(), "bus1": Line()}
    dl = make(store, lines)
    dl.heard(A, "bus1")  # moved (a unit on a radio link heard by the other receiver)
    dl.send(A, Signal(SignalPattern.LOCATE, 5))
    assert lines["bus0"].written == [] and len(lines["bus1"].frames(A)) == 1


def test_a_unit_without_a_known_link_gets_it_on_every_link(store: Store) -> None:
    lines = {"bus0": Line(), "bus1": Line(up=False), "bus2": Line()}
    codec = Codec({A: TEST_KEY}, gateway=True)
    dl = Downlink(codec, store, lines, home_links={})
    assert dl.send(A, Signal(SignalPattern.PROMPT_CHECKIN, 0))
    assert len(lines["bus0"].frames(A)) == 1 and len(lines["bus2"].frames(A)) == 1


def test_no_link_up_is_counted_not_raised(store: Store) -> None:
    lines = {"bus0": Line(up=False), "bus1": Line()}
    dl = make(store, lines)
    assert not dl.ack(A, 1, 1, AckState.RECEIVED)
    assert (dl.sent, dl.unsent) == (0, 1)


def test_a_unit_without_a_key_is_refused(store: Store) -> None:
    lines = {"bus0": Line()}
    dl = make(store, lines)
    assert not dl.ack(999, 1, 1, AckState.RECEIVED)
    assert lines["bus0"].written == []


def test_every_start_uses_a_new_epoch(store: Store) -> None:
    """A unit's replay window would refuse counters the gateway used before a restart."""
    first = make(store, {"bus0": Line()})
    second = make(store, {"bus0": Line()})
    assert second.epoch > first.epoch


def test_the_epoch_moves_on_before_seq_would_pass_its_16_bits(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downlink_module, "MAX_SEQ", 2)
    lines = {"bus0": Line()}
    dl = make(store, lines)
    start = dl.epoch
    for seq in range(5):
        dl.ack(A, 1, seq, AckState.RECEIVED)
    got = [(f.epoch, f.seq) for f in lines["bus0"].frames(A)]
    assert got == [(start, 0), (start, 1), (start, 2), (start + 1, 0), (start + 1, 1)]
