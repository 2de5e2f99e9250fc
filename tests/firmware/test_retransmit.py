"""The outbox's retransmission timeout, learnt from the ACK round trip (outbox.py).

The gateway end here answers after a chosen delay, as a gateway whose journal fsync is
slow would; the unit must wait for that ACK instead of resending on a fixed timer, and
never go below its frame and ACK's air time at the link's baud rate.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal

from gateway.flashing.unitfiles import FIRMWARE_DIR
from gateway.sim.vboard import VirtualUnit, find_micropython
from protocol import AckState, MsgType
from tests.firmware.conftest import Arrival, GatewayEnd, UnitFactory
from tests.support.mpjob import job_result

# what a frame and its ACK take on the wire (28 + 29 bytes, 10 bits each), plus 2 ms
FLOOR_9600_MS = (57 * 10 * 1000 + 9600 - 1) // 9600 + 2


def answer_after(
    gw: GatewayEnd,
    delay_s: float,
    mtypes: set[MsgType],
    copy_delay_s: float | None = None,
    lose_first_ack: bool = False,
) -> None:
    """ACK every frame of ``mtypes`` ``delay_s`` after it arrives (a gateway that takes
    that long to journal it). ``copy_delay_s``: a retransmitted copy is ACKed again after
    that long, as the real gateway does (None: copies are not answered).
    ``lose_first_ack``: the first ACK of each ALARM is lost on the line (never sent)."""
    loop = asyncio.get_running_loop()
    answered: set[tuple[int, int]] = set()
    seen = 0

    def check() -> None:
        nonlocal seen
        for a in gw.frames[seen:]:
            key = (a.frame.epoch, a.frame.seq)
            if a.frame.type not in mtypes:
                continue
            if key in answered:
                if copy_delay_s is not None:
                    loop.call_later(copy_delay_s, gw.ack, a.frame)
                continue
            answered.add(key)
            if not (lose_first_ack and a.frame.type is MsgType.ALARM):
                loop.call_later(delay_s, gw.ack, a.frame)
        seen = len(gw.frames)

    real_readable = gw._readable

    def readable() -> None:
        real_readable()
        check()

    loop.remove_reader(gw.fd)
    loop.add_reader(gw.fd, readable)
    gw._readable = readable  # type: ignore[method-assign]


async def test_a_slow_gateway_gets_each_alarm_once(make_unit: UnitFactory) -> None:
    """ACKs 300 ms late, on a unit whose fixed first retry would allow 2 s: the unit
    learns the round trip from its boot heartbeat and still waits for the ACK (the
    timeout is four deviations above the mean, not the mean)."""
    vu, gw = await make_unit(retry_first_ms=2000, retry_cap_ms=8000)
    answer_after(gw, 0.3, {MsgType.HEARTBEAT, MsgType.ALARM})
    await gw.next(MsgType.HEARTBEAT, after=0)
    rto, srtt, *_ = await _learnt(vu, at_least_ms=300)
    assert srtt >= 300 and rto >= srtt
    start = len(gw.frames)
    await vu.click()
    alarm = await gw.next(MsgType.ALARM, after=start)
    await vu.wait_led("received")
    copies = [a for a in gw.of(MsgType.ALARM) if a.raw == alarm.raw]
    assert len(copies) == 1, [round(a.at - alarm.at, 3) for a in copies]
    assert (await vu.link_timing())[2] == 0  # nothing was sent twice


async def test_the_timeout_is_learnt_below_the_fixed_first_retry(make_unit: UnitFactory) -> None:
    """A gateway that ACKs at once: the timeout comes down from retry_first_ms (2 s here)
    to what the round trip needs; one that ACKs 300 ms late leaves it at retry_first_ms,
    never above (a slow spell measured once must not hold alarms back for seconds)."""
    vu, gw = await make_unit(retry_first_ms=2000, retry_cap_ms=8000)
    answer_after(gw, 0.0, {MsgType.HEARTBEAT})
    await gw.next(MsgType.HEARTBEAT, after=0)
    rto, srtt, *_ = await _learnt(vu, at_least_ms=0)
    assert 0 < srtt <= rto < 2000
    slow, gw2 = await make_unit("home-zhao", retry_first_ms=200)
    answer_after(gw2, 0.3, {MsgType.HEARTBEAT, MsgType.ALARM}, copy_delay_s=0.3)
    await gw2.next(MsgType.HEARTBEAT, after=0)
    rto, srtt, *_ = await _learnt(slow, at_least_ms=300)
    assert rto == 200
    # so an ALARM goes twice there, and both copies are ACKed: the second ACK shows that
    # the first copy had arrived, so the unit counts the copy as needless and times the
    # first one (its timeout stays at the ceiling)
    start = len(gw2.frames)
    await slow.click()
    alarm = await gw2.next(MsgType.ALARM, after=start)
    await slow.wait_led("received")
    await gw2.wait(lambda fs: len([a for a in fs if a.raw == alarm.raw]) >= 2)

    async def counted() -> tuple[int, int, int, int]:
        async with asyncio.timeout(10):
            while (timing := await slow.link_timing())[3] == 0:
                await asyncio.sleep(0)  # each question is a round trip on the control pty
            return timing

    rto, srtt, retries, needless = await counted()
    copies = [a for a in gw2.of(MsgType.ALARM) if a.raw == alarm.raw]
    assert (len(copies), retries, needless, rto) == (2, 1, 1, 200), (copies, srtt)


async def test_a_lost_ack_is_not_taken_for_a_late_one(make_unit: UnitFactory) -> None:
    """Regression: a gateway that ACKs 40 ms after a frame arrives (its disk), but loses
    the first ACK of every ALARM, and answers the copy at once (its disk was quick that
    time). The unit cannot tell which copy that ACK answered: it must neither count the
    copy as needless nor time the first copy. It did both (an ACK within half a round
    trip of the copy was taken for the first copy's, late), so each lost ACK fed the
    timeout itself back in as a round trip, and the timeout climbed towards the 200 ms
    ceiling that every later lost frame then waited."""
    vu, gw = await make_unit()
    answer_after(
        gw, 0.04, {MsgType.HEARTBEAT, MsgType.ALARM}, copy_delay_s=0.0, lose_first_ack=True
    )
    await gw.next(MsgType.HEARTBEAT, after=0)
    rto0, *_ = await _learnt(vu, at_least_ms=30)
    for k in range(1, 6):
        start = len(gw.frames)
        await vu.press()  # held until its ALARM is out: a starved unit misses no press
        alarm = await gw.next(MsgType.ALARM, after=start)
        await vu.release()
        await gw.wait(lambda fs, raw=alarm.raw: len([a for a in fs if a.raw == raw]) >= 2)

        async def answered(k: int = k) -> tuple[int, int, int, int]:
            async with asyncio.timeout(10):
                while (timing := await vu.link_timing())[2] < k:
                    await asyncio.sleep(0)  # each question is a round trip on the control pty
                return timing

        await answered()
    await vu.wait_led("received")
    rto, srtt, retries, needless = await vu.link_timing()
    assert (retries, needless) == (5, 0), (rto0, rto, srtt)
    assert rto == rto0, (rto0, rto, srtt)


async def test_retries_back_off_from_the_learnt_timeout_and_never_below_air_time(
    make_unit: UnitFactory,
) -> None:
    """At 9600 baud a frame and its ACK take ~60 ms on the wire: an ACK that comes at
    once (a pty has no baud rate) still leaves the timeout at that floor. An ALARM never
    ACKed is resent after the timeout, after it again, then after twice it, and so on."""
    vu, gw = await make_unit(baud=9600)
    answer_after(gw, 0.0, {MsgType.HEARTBEAT})
    await gw.next(MsgType.HEARTBEAT, after=0)
    rto, srtt, *_ = await _learnt(vu, at_least_ms=0)
    assert rto >= FLOOR_9600_MS
    await vu.click()
    first = await gw.next(MsgType.ALARM)
    await gw.wait(lambda fs: len([a for a in fs if a.raw == first.raw]) >= 4, timeout=10)
    copies: list[Arrival] = [a for a in gw.frames if a.raw == first.raw]
    gaps_ms = [(b.at - a.at) * 1000 for a, b in itertools.pairwise(copies)]
    # the waits: the timeout, the timeout again, then doubling (jitter only lengthens
    # them); a copy seen late by this end (a busy host) makes its gap longer and the next
    # one shorter, so the sums are checked, not each gap (1 ms of tick rounding each)
    waits = [rto, rto, 2 * rto]
    for k in range(1, 4):
        assert sum(gaps_ms[:k]) >= sum(waits[:k]) - k, (rto, gaps_ms)
    assert (await vu.link_timing())[2] >= 3
    gw.ack(first.frame, AckState.RECEIVED)
    await vu.wait_led("received")


async def test_an_ack_waiting_on_the_line_after_a_stall_is_read_before_a_retry(
    make_unit: UnitFactory,
) -> None:
    """Regression: a unit stalled past its retry deadline (its loop busy, or the host's
    scheduler) while the ALARM's ACK arrived. On waking, asyncio ran the outbox task
    (its deadline long past) before the link's reader, and a needless copy went out
    with the ACK already in the UART's buffer. Now a due retry reads the line first.
    The boot heartbeat's ACK comes 0.8 s late, so that the unit's timeout leaves this
    end the time to stop it before a first retry; the watchdog is not what is tested
    (the virtual board's watchdog thread would end a stall this long)."""
    vu, gw = await make_unit(retry_first_ms=2000, retry_cap_ms=8000, wdt_ms=60000)
    answer_after(gw, 0.8, {MsgType.HEARTBEAT})
    await gw.next(MsgType.HEARTBEAT, after=0)
    rto, *_ = await _learnt(vu, at_least_ms=800)
    start = len(gw.frames)
    await vu.click()
    alarm = await gw.next(MsgType.ALARM, after=start)
    # released first: a stall with the button down would make the press a (silent) hold
    await vu.wait_led("sending")
    assert vu.pid is not None
    os.kill(vu.pid, signal.SIGSTOP)  # the stall
    try:
        gw.ack(alarm.frame, AckState.RECEIVED)  # waits in the unit's UART buffer
        await asyncio.sleep(2 * rto / 1000)  # the stall outlasts the timeout
    finally:
        os.kill(vu.pid, signal.SIGCONT)
    await vu.wait_led("received")
    assert (await vu.link_timing())[2] == 0  # nothing was sent twice
    assert [a for a in gw.frames if a.raw == alarm.raw] == [alarm]


async def _learnt(vu: VirtualUnit, at_least_ms: int) -> tuple[int, int, int, int]:
    """The unit's (timeout, smoothed round trip, retries) once it has measured a round
    trip of at least ``at_least_ms`` (its boot heartbeat's ACK may still be on its way):
    each question is a round trip on the control channel, no sleep."""
    async with asyncio.timeout(10):
        while True:
            timing = await vu.link_timing()
            if timing[1] > 0 and timing[1] >= at_least_ms:
                return timing


ESTIMATOR_JOB = """
import json, sys
sys.path.insert(0, FIRMWARE)
import outbox

class Line:  # the link as the outbox sees it
    def busy(self):
        return False
    def send(self, buf, n, off=0):
        pass
    def poll(self):
        pass

ob = outbox.Outbox(Line(), None, 200, 30000, 115200)
out = {}
for k in range(200):  # a bounded link: round trips 8..28 ms, evenly spread
    ob._sample(8 + (k * 5) % 21)
out["bounded"] = ob.rto_ms
ob._sample(80)  # a slow spell (a needless copy's first round trip comes in so)
out["spell"] = ob.rto_ms
print("RESULT", json.dumps(out))
"""


def test_the_timeout_fits_a_bounded_round_trip() -> None:
    """Round trips spread evenly over 8-28 ms (air time, a 1-20 ms fsync): the timeout
    covers the largest of them but is no longer RFC 6298's srtt + 4 deviations (40 ms
    here), which put the second copy of a twice-lost alarm two such timeouts, past
    100 ms, after the press; one slow round trip raises it to that at once."""
    out = job_result(
        [
            find_micropython(),
            "-X",
            "heapsize=64K",
            "-c",
            ESTIMATOR_JOB.replace("FIRMWARE", repr(str(FIRMWARE_DIR))),
        ]
    )
    assert 28 <= out["bounded"] < 35, out
    assert out["spell"] >= 80, out
