"""The lossy link relay over real ptys."""

from __future__ import annotations

import asyncio
import os
import tty

from gateway.sim.linkrelay import Impairment, LinkRelay
from protocol import Alarm, AlarmKind, Deframer, Frame, ProtocolError, decode, encode, to_wire
from protocol.keys import TEST_KEY
from tests.support.timing import scaled


def unit_pty() -> tuple[int, str]:
    """A unit's UART: the unit writes on the master, the relay opens the slave path."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    return master, path, slave  # type: ignore[return-value]


def wire(unit: int, seq: int) -> bytes:
    return to_wire(encode(Frame(unit, 1, seq, Alarm(AlarmKind.PANIC, 1, seq)), TEST_KEY))


async def read_frames(
    fd: int, want: int, timeout: float = 5.0, rejects: list[bytes] | None = None
) -> list[Frame]:
    """Read until ``want`` frames (decoded or, if ``rejects`` is given, rejected) arrived."""
    loop = asyncio.get_running_loop()
    d = Deframer()
    got: list[Frame] = []
    done = asyncio.Event()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        for raw in d.feed(data):
            try:
                got.append(decode(raw, lambda _u: TEST_KEY))
            except ProtocolError:
                if rejects is not None:
                    rejects.append(raw)
        if rejects is not None:  # a flip in a COBS code byte is the deframer's reject
            rejects.extend(b"" for _ in range(sum(d.rejects.values())))
            d.rejects.clear()
        if len(got) + len(rejects or ()) >= want:
            done.set()

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)
    return got


async def open_gateway(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


async def test_frames_from_two_units_reach_the_gateway_whole() -> None:
    (m1, p1, s1), (m2, p2, s2) = unit_pty(), unit_pty()
    async with LinkRelay({"a": p1, "b": p2}) as relay:
        gw = await open_gateway(relay.gateway_path)
        # byte-interleaved writes from two units: the relay must not mix them
        w1 = b"".join(wire(257, s) for s in range(10))
        w2 = b"".join(wire(258, s) for s in range(10))
        for i in range(0, max(len(w1), len(w2)), 7):
            os.write(m1, w1[i : i + 7])
            os.write(m2, w2[i : i + 7])
        got = await read_frames(gw, 20)
        os.close(gw)
    assert sorted((f.unit, f.seq) for f in got) == sorted(
        [(257, s) for s in range(10)] + [(258, s) for s in range(10)]
    )
    for fd in (m1, m2, s1, s2):
        os.close(fd)


async def test_downlink_is_broadcast_to_every_unit() -> None:
    (m1, p1, s1), (m2, p2, s2) = unit_pty(), unit_pty()
    async with LinkRelay({"a": p1, "b": p2}) as relay:
        gw = await open_gateway(relay.gateway_path)
        os.write(gw, wire(300, 1))
        a = await read_frames(m1, 1)
        b = await read_frames(m2, 1)
        os.close(gw)
    assert [f.seq for f in a] == [1] and [f.seq for f in b] == [1]
    for fd in (m1, m2, s1, s2):
        os.close(fd)


async def test_seeded_loss_is_repeatable_and_counted() -> None:
    results = []
    for _ in range(2):
        m1, p1, s1 = unit_pty()
        relay = LinkRelay({"a": p1}, Impairment(drop=0.3), seed=42)
        await relay.start()
        gw = await open_gateway(relay.gateway_path)
        os.write(m1, b"".join(wire(257, s) for s in range(100)))
        # every frame is either dropped (counted at once) or arrives: wait for the sum
        got: list[Frame] = []
        while len(got) + relay.stats["up_dropped"] < 100:
            got += await read_frames(gw, 100 - relay.stats["up_dropped"] - len(got), 0.05)
        results.append(([f.seq for f in got], relay.stats["up_dropped"]))
        await relay.stop()
        for fd in (gw, m1, s1):
            os.close(fd)
    assert results[0] == results[1]
    seqs, dropped = results[0]
    assert 15 <= dropped <= 45
    assert len(seqs) == 100 - dropped


async def test_corruption_is_caught_by_the_codec() -> None:
    m1, p1, s1 = unit_pty()
    async with LinkRelay({"a": p1}, Impairment(corrupt=1.0), seed=1) as relay:
        gw = await open_gateway(relay.gateway_path)
        os.write(m1, b"".join(wire(257, s) for s in range(20)))
        rejected: list[bytes] = []
        got = await read_frames(gw, 20, rejects=rejected)
        os.close(gw)
        assert relay.stats["up_corrupted"] == 20
    assert got == []
    assert len(rejected) >= 20  # a flip to 0x00 splits a frame in two pieces
    for fd in (m1, s1):
        os.close(fd)


async def test_tap_hears_frames_as_sent_before_the_line_drops_them() -> None:
    m1, p1, s1 = unit_pty()
    heard: list[tuple[str, bytes, bool]] = []
    relay = LinkRelay({"a": p1}, Impairment(drop=1.0), tap=lambda s, f, p: heard.append((s, f, p)))
    async with relay:
        gw = await open_gateway(relay.gateway_path)
        os.write(m1, b"".join(wire(257, s) for s in range(3)))
        async with asyncio.timeout(scaled(5)):
            while relay.stats["up_dropped"] < 3:
                await asyncio.sleep(0.01)
        os.close(gw)
    assert [(s, f, p) for s, f, p in heard] == [("a", wire(257, i), False) for i in range(3)]
    for fd in (m1, s1):
        os.close(fd)


async def test_a_baud_rate_makes_frames_take_their_air_time_one_after_another() -> None:
    """At 1200 baud a frame of n bytes takes n * 10 / 1200 s, and two units sending at
    once share the line: the second frame is whole only after both air times. The
    gateway's answer waits for the line too (half duplex)."""
    (m1, p1, s1), (m2, p2, s2) = unit_pty(), unit_pty()
    baud = 1200
    async with LinkRelay({"a": p1, "b": p2}, Impairment(baud=baud)) as relay:
        gw = await open_gateway(relay.gateway_path)
        loop = asyncio.get_running_loop()
        w1, w2 = wire(257, 1), wire(258, 1)
        t0 = loop.time()
        os.write(m1, w1)
        os.write(m2, w2)
        got = await read_frames(gw, 2)
        both = loop.time() - t0
        os.write(gw, wire(300, 1))
        down = await read_frames(m1, 1)
        answered = loop.time() - t0
        os.close(gw)
        air_us = relay.stats["air_us"]
    assert sorted(f.unit for f in got) == [257, 258] and [f.seq for f in down] == [1]
    one_s = len(w1) * 10 / baud
    assert both >= 2 * one_s  # one after the other, not side by side
    assert answered >= 3 * one_s
    assert air_us == 3 * round(len(w1) * 10_000_000 / baud)
    for fd in (m1, m2, s1, s2):
        os.close(fd)
