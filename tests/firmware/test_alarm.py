"""The alarm button on a real MicroPython unit: leading edge, retransmission, ACKs."""

from __future__ import annotations

import itertools
import os

from gateway.sim.vboard import VirtualUnit
from protocol import Ack, AckState, AlarmKind, Codec, Frame, MsgType, to_wire
from tests.firmware.conftest import UnitFactory, expect_no_output, pause_between_bursts

# the cancel gesture's gap, shortened (700 ms in service) so that the pause between
# bursts is short too; VirtualUnit.click's presses (one every 200 ms) stay well inside it
GAP_MS = 400


async def test_panic_goes_out_on_the_leading_edge(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    await gw.next(MsgType.HEARTBEAT, after=0)  # the boot heartbeat
    start = len(gw.frames)
    await vu.press()  # and keep it pressed: nothing waits for the release
    alarm = await gw.next(MsgType.ALARM, after=start, timeout=1.0)
    body = alarm.frame.body
    assert body == type(body)(kind=AlarmKind.PANIC, presses=1, press_ms=body.press_ms)
    assert alarm.frame.epoch == vu.epoch
    # while held, the unit shows nothing yet (the hold may still become a duress)
    assert vu.buzzer == "off"
    await vu.release()
    await vu.wait_buzzer("chirp")
    await vu.wait_led("sending")


async def test_retransmits_same_bytes_until_acked(make_unit: UnitFactory) -> None:
    # the series must stay open until the police ACK at the end (~3.5 s of retries, ACK and
    # quiet window after the press): FAST's 3 s incident window would close it before,
    # and the unit would ignore that ACK
    vu, gw = await make_unit(incident_window_ms=8000)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.click()
    first = await gw.next(MsgType.ALARM)
    await gw.wait(lambda fs: len([a for a in fs if a.frame.type == MsgType.ALARM]) >= 4)
    copies = gw.of(MsgType.ALARM)
    assert {a.raw for a in copies} == {first.raw}  # same counter, same MAC, same bytes
    gaps = [b.at - a.at for a, b in itertools.pairwise(copies)]
    # first retry ~200 ms, then backing off (400, then the 800 ms cap): the first gap is
    # shorter than the third, which a busy host's stall of either would have to undo
    assert gaps[0] > 0.1 and gaps[0] < gaps[2], gaps
    gw.ack(first.frame)
    await vu.wait_led("received")
    await vu.wait_buzzer("received")
    # after the ACK: no further copy within two full backoff periods (cap 0.8 s)
    await gw.expect_none(MsgType.ALARM, within=1.8)
    gw.ack(first.frame, AckState.POLICE_ACK)
    await vu.wait_led("police_ack")
    await vu.wait_buzzer("police_ack")


async def test_forged_ack_does_not_stop_retransmission(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.click()
    alarm = await gw.next(MsgType.ALARM)
    forger = Codec({gw.addr: bytes(32)}, gateway=True)  # not the unit's key
    ack = Ack(alarm.frame.epoch, alarm.frame.seq, AckState.RECEIVED)
    os.write(gw.fd, forger.encode(Frame(gw.addr, 1, 1, ack)))
    # an ACK for a counter the unit never sent is ignored too
    gw.send_frame(Ack(alarm.frame.epoch, alarm.frame.seq + 100, AckState.RECEIVED))
    # the unit's own ALARM reflected back at it is not an ACK
    os.write(gw.fd, to_wire(alarm.raw))
    n = len(gw.of(MsgType.ALARM))
    await gw.wait(
        lambda fs: len([a for a in fs if a.frame.type == MsgType.ALARM]) >= n + 3, timeout=4
    )
    assert vu.led != "received"
    gw.ack(alarm.frame)
    await vu.wait_led("received")


async def test_long_press_is_a_silent_duress(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.press()
    panic = await gw.next(MsgType.ALARM, timeout=1.0)
    duress = await gw.next(
        MsgType.ALARM, pred=lambda f: f.body.kind == AlarmKind.DURESS, timeout=2.5
    )
    assert duress.frame.body.press_ms == panic.frame.body.press_ms  # same series
    assert duress.at - panic.at >= 0.9  # long_press_ms = 1000 in the test config
    await vu.release()
    gw.ack(panic.frame)
    gw.ack(duress.frame, AckState.POLICE_ACK)

    def shown(u: VirtualUnit) -> bool:
        return set(u.buzzer_history) != {"off"} or bool(
            {"sending", "received", "police_ack"} & set(u.led_history)
        )

    # silent at the unit: the buzzer never sounds, the LED never shows the alarm, also
    # once the gateway's ACKs (received, police) are in (a unit shows an ACK as soon as
    # its link task reads it, app.on_downlink: 0.5 s is ample for the two here)
    await expect_no_output(vu, shown, within=0.5, what="alarm feedback during duress")


async def test_further_presses_count_up(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(cancel_gap_ms=GAP_MS)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.click()
    first = await gw.next(MsgType.ALARM)
    gw.ack(first.frame)
    await vu.wait_led("received")
    await pause_between_bursts(GAP_MS)  # a new burst, not the opening one
    await vu.click()
    second = await gw.next(MsgType.ALARM, pred=lambda f: f.body.presses == 2)
    assert second.frame.body.press_ms == first.frame.body.press_ms
    assert second.frame.seq > first.frame.seq


async def test_cancel_gesture_sends_cancel_of_the_alarm(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(cancel_gap_ms=GAP_MS)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.click()
    first = await gw.next(MsgType.ALARM)
    gw.ack(first.frame)
    await vu.wait_led("received")
    await pause_between_bursts(GAP_MS)  # the burst starts after a pause ...
    await vu.click(times=5)  # ... and is ended by one
    cancel = await gw.next(MsgType.CANCEL, timeout=3)
    assert (cancel.frame.body.ref_epoch, cancel.frame.body.ref_seq) == (
        first.frame.epoch,
        first.frame.seq,
    )
    presses = [a.frame.body.presses for a in gw.of(MsgType.ALARM)]
    assert max(presses) == 6  # every press still went out as an ALARM
    gw.ack(cancel.frame, AckState.CANCELLED)
    await vu.wait_led("cancelled")


async def test_hammering_does_not_cancel(make_unit: UnitFactory) -> None:
    # a 2 s cancel gap (700 ms in service): a busy host that stalls this process or the
    # unit's between two of the quick presses must not split the burst into a press, a
    # pause and a cancel gesture
    vu, gw = await make_unit(cancel_gap_ms=2000)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.click(times=6)  # panicked hammering, straight from the first press
    await gw.next(MsgType.ALARM, pred=lambda f: f.body.presses == 6)
    # the burst's end (the 2 s pause) passes: still no CANCEL
    await gw.expect_none(MsgType.CANCEL, within=2.3, after=0)
