"""Ctrl-C on a running unit (a person at a virtual unit's terminal; mpremote's Ctrl-C
before a deploy on an ESP32) stops it for maintenance, whichever task it interrupts.

After asyncio.run ends with KeyboardInterrupt, MicroPython's asyncio still names the last
task that ran as the current one, and ``Task.cancel()`` of it raised ``RuntimeError:
can't cancel self`` from ``app.stop()`` / ``board.stop()`` (2 of 4 tries by hand)."""

from __future__ import annotations

import os
import signal

from protocol import MsgType
from tests.firmware.conftest import UnitFactory


async def test_ctrl_c_after_the_control_task_ran_is_a_clean_maintenance_stop(
    make_unit: UnitFactory,
) -> None:
    vu, _ = await make_unit()
    # the control task answers `mem` and is then the last task that ran, the one
    # MicroPython's asyncio still calls current when the interrupt ends asyncio.run
    await vu.mem()
    assert vu.pid is not None
    os.kill(vu.pid, signal.SIGINT)
    code = await vu.wait_exit()
    console = (vu.unit_dir / "console.log").read_text()
    assert "can't cancel self" not in console, console
    assert code == 0, console


async def test_ctrl_c_after_the_supervisor_ran_is_a_clean_maintenance_stop(
    make_unit: UnitFactory,
) -> None:
    vu, gw = await make_unit()
    # the unit's own tasks (button, outbox, link) run last: the alarm is on the wire
    await vu.click()
    await gw.next(MsgType.ALARM)
    assert vu.pid is not None
    os.kill(vu.pid, signal.SIGINT)
    code = await vu.wait_exit()
    console = (vu.unit_dir / "console.log").read_text()
    assert "can't cancel self" not in console and "Traceback" not in console, console
    assert code == 0, console
