"""The watchdog: a hung main loop ends the unit; the next boot reports it."""

from __future__ import annotations

from gateway.sim.vboard import WATCHDOG_EXIT
from protocol import FaultCode, MsgType
from tests.firmware.conftest import UnitFactory


async def test_hung_loop_is_reset_by_the_watchdog(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.hang()
    assert await vu.wait_exit(timeout=5) == WATCHDOG_EXIT
    before = gw.mark()
    await vu.start()
    fault = await gw.next(MsgType.FAULT, after=before)
    assert fault.frame.body.code == FaultCode.WATCHDOG_RESET
    assert fault.frame.body.active == 1
    # a plain power cycle is not a watchdog reset. The mark is taken between the boots:
    # after start() returns, the next boot's heartbeat may be in already (it can follow
    # "ready" at once), and the wait for one would run on to the next, 60 s later
    await vu.kill()
    later = gw.mark()
    await vu.start()
    await gw.next(MsgType.HEARTBEAT, after=later)
    assert not [a for a in gw.frames[later:] if a.frame.type == MsgType.FAULT]
