"""A patrol checkpoint unit (role checkpoint) on real MicroPython: its only button is the
check-in input; a short press is a scan, a long press a duress CHECKIN, and nothing it
does ever sends ALARM."""

from __future__ import annotations

from protocol import MsgType
from tests.firmware.conftest import UnitFactory


async def test_checkpoint_scans_and_duress_and_never_sends_alarm(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit("cp-east-gate")
    await gw.next(MsgType.HEARTBEAT, after=0)
    # the alarm button's input is wired on the virtual board: a checkpoint ignores it
    await vu.hold(1.3)  # longer than long_press_ms: on any other unit a duress ALARM
    await vu.click(3)
    await gw.expect_none(MsgType.ALARM, within=1.0, after=0)
    await vu.checkin()
    scan = await gw.next(MsgType.CHECKIN)
    assert scan.frame.body.flags == 0
    gw.ack(scan.frame)
    await vu.wait_led("checkin_ok")
    await vu.checkin(duress=True, long_press_s=1.3)
    duress = await gw.next(MsgType.CHECKIN, pred=lambda f: f.body.flags == 1)
    gw.ack(duress.frame)
    await vu.wait_led("checkin_ok")  # the duress scan looks like any other at the post
    assert not gw.of(MsgType.ALARM)
