"""Safe mode: a unit that crashes several boots in a row still sends alarms."""

from __future__ import annotations

from gateway.sim.vboard import CRASH_EXIT, WATCHDOG_EXIT
from protocol import AlarmKind, FaultCode, HeartbeatFlags, MsgType, Signal, SignalPattern
from tests.firmware.conftest import UnitFactory, expect_no_output


async def test_crash_loop_starts_safe_mode_that_still_sends_alarms(
    make_unit: UnitFactory,
) -> None:
    # test hook: the app raises 300 ms after each boot (never in safe mode)
    vu, gw = await make_unit(test_crash_ms=300, healthy_ms=1500, heartbeat_ms=400, start=False)
    for _ in range(3):
        await vu.start()
        assert await vu.wait_exit(timeout=5) == CRASH_EXIT
    assert all(a.frame.body.code != FaultCode.SAFE_MODE for a in gw.of(MsgType.FAULT))
    before = len(gw.frames)
    await vu.start()  # the 4th boot in a row
    fault = await gw.next(
        MsgType.FAULT, after=before, pred=lambda f: f.body.code == FaultCode.SAFE_MODE
    )
    assert (fault.frame.body.active, fault.frame.body.detail) == (1, 3)  # 3 boots in a row
    await gw.next(
        MsgType.HEARTBEAT, after=before, pred=lambda f: f.body.flags & HeartbeatFlags.SAFE_MODE
    )
    gw.ack(fault.frame)
    # a press still reaches the gateway as an ALARM, and is resent until ACKed
    start = len(gw.frames)
    await vu.click()
    alarm = await gw.next(MsgType.ALARM, after=start, timeout=1.0)
    assert alarm.frame.body.kind == AlarmKind.PANIC and alarm.frame.body.presses == 1
    await gw.wait(lambda fs: len([a for a in fs[start:] if a.frame.type == MsgType.ALARM]) >= 3)
    assert {a.raw for a in gw.of(MsgType.ALARM)[-3:]} == {alarm.raw}
    gw.ack(alarm.frame)
    await vu.wait_led("received")
    # optional parts are off: a SIGNAL is not shown, the hook does not fire (a unit shows
    # a SIGNAL as soon as its link task reads it, app.on_downlink: 0.3 s is ample)
    gw.send_frame(Signal(SignalPattern.LOCATE, 0), epoch=9, seq=1)
    await expect_no_output(
        vu, lambda u: u.led == "locate" or u.buzzer == "locate", within=0.3, what="locate"
    )
    assert vu.running
    # healthy for healthy_ms: the crash-loop count is cleared ...
    await vu.wait_log("healthy:", timeout=3)
    # ... so even a watchdog reset now is followed by a normal boot
    await vu.hang()
    assert await vu.wait_exit(timeout=5) == WATCHDOG_EXIT
    before = len(gw.frames)
    await vu.start()
    restore = await gw.next(
        MsgType.FAULT, after=before, pred=lambda f: f.body.code == FaultCode.SAFE_MODE
    )
    assert restore.frame.body.active == 0
    hb = await gw.next(MsgType.HEARTBEAT, after=before)
    assert not hb.frame.body.flags & HeartbeatFlags.SAFE_MODE
    assert await vu.wait_exit(timeout=5) == CRASH_EXIT  # normal mode: the hook fires again


async def test_power_cuts_are_not_a_crash_loop(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    for _ in range(3):
        await vu.restart()  # kill -9: a power cut, not a crash
    before = len(gw.frames)
    await vu.restart()
    hb = await gw.next(MsgType.HEARTBEAT, after=before)
    assert not hb.frame.body.flags & HeartbeatFlags.SAFE_MODE
    assert not [a for a in gw.of(MsgType.FAULT) if a.frame.body.code == FaultCode.SAFE_MODE]
