"""Ctrl-C on a running unit (a person at a virtual unit's terminal; mpremote's Ctrl-C
before a deploy on an ESP32) stops it for maintenance, whichever task it interrupts.

After asyncio.run ends with KeyboardInterrupt, MicroPython's asyncio still names the last
task that ran as the current one, and ``Task.cancel()`` of it raised ``RuntimeError:
can't cancel self`` from ``app.stop()`` / ``board.stop()`` (2 of 4 tries by hand)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.core.config import Config
from gateway.sim.vboard import find_micropython, prepare_unit_dir
from protocol import MsgType
from protocol.keys import TEST_KEY
from tests.firmware.conftest import FAST, FROZEN32, GatewayEnd, UnitFactory
from tests.firmware.test_esp32_board import DRIVER, E2E_HEAPSIZE, HERE, Driver


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to one thread of another process (Linux tgkill)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = 234 if os.uname().machine == "x86_64" else 131  # aarch64: 131
    if libc.syscall(sys_tgkill, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


async def test_ctrl_c_after_the_control_task_ran_is_a_clean_maintenance_stop(
    make_unit: UnitFactory,
) -> None:
    vu, _ = await make_unit()
    # the control task answers `mem` and is then the last task that ran, the one
    # MicroPython's asyncio still calls current when the interrupt ends asyncio.run
    await vu.mem()
    assert vu.pid is not None
    _tgkill(vu.pid, vu.pid, signal.SIGINT)  # the main thread, as the terminal's Ctrl-C mostly
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
    _tgkill(vu.pid, vu.pid, signal.SIGINT)  # the main thread, as the terminal's Ctrl-C mostly
    code = await vu.wait_exit()
    console = (vu.unit_dir / "console.log").read_text()
    assert "can't cancel self" not in console and "Traceback" not in console, console
    assert code == 0, console


async def test_ctrl_c_on_an_esp32_board_stops_for_maintenance(
    tmp_path: Path, register: Config, fw_cache: Path
) -> None:
    """mpremote's Ctrl-C before a deploy: the firmware on board.esp32 (stand-in machine)
    interrupted right after its own tasks sent an alarm stops for maintenance (watchdog
    stretched), not with "can't cancel self"."""
    unit = register.units["shop-fruit"]
    folder = prepare_unit_dir(
        tmp_path / unit.id, unit, TEST_KEY, overrides=FAST, compiled=True, cache=fw_cache
    )
    driver_py = tmp_path / "esp32_driver.py"
    driver_py.write_text(DRIVER)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        gw = GatewayEnd(os.ttyname(slave), unit.addr)
    finally:
        os.close(slave)
    proc = await asyncio.create_subprocess_exec(
        find_micropython(),
        "-X",
        f"heapsize={E2E_HEAPSIZE}",
        str(driver_py),
        str(folder),
        str(master),
        str(HERE),
        f"{unit.pins['tamper']}=0",
        cwd=folder,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        pass_fds=(master,),
    )
    drv = Driver(proc)
    try:
        await drv.line("campusguard: ready")
        await gw.next(MsgType.HEARTBEAT, after=0, timeout=5.0)
        start = len(gw.frames)
        drv.send(f"pin {unit.pins['button']} 0")
        await gw.next(MsgType.ALARM, after=start, timeout=2.0)
        _tgkill(proc.pid, proc.pid, signal.SIGINT)  # mpremote's Ctrl-C: the main VM
        await drv.line("campusguard: stopped for maintenance", timeout=5.0)
    except AssertionError as exc:
        await drv.stop()
        raise AssertionError(f"{exc}\n--- micropython:\n" + "\n".join(drv.lines)) from None
    finally:
        await drv.stop()
        gw.close()
        os.close(master)
    out = "\n".join(drv.lines)
    assert "can't cancel self" not in out and "Traceback" not in out, out


async def test_ctrl_c_landing_in_the_watchdog_thread_still_stops_the_unit(
    make_unit: UnitFactory,
) -> None:
    """SIGINT goes to any thread of the process; in the virtual board's watchdog thread
    it ended that thread (no watchdog any more) and the unit ran on (~1 in 6 tries)."""
    vu, _ = await make_unit()
    assert vu.pid is not None
    threads = sorted(int(t) for t in os.listdir(f"/proc/{vu.pid}/task"))
    others = [t for t in threads if t != vu.pid]
    assert len(others) == 1, threads  # the watchdog thread
    _tgkill(vu.pid, others[0], signal.SIGINT)
    code = await vu.wait_exit()
    console = (vu.unit_dir / "console.log").read_text()
    assert "Unhandled exception in thread" not in console, console
    # What matters: the unit stops (it never runs on without its watchdog). The PyPI
    # interpreter hosts MicroPython inside CPython, and its teardown after a SIGINT sent to
    # this thread crashed (SIGSEGV) in ~1 of 6 full-suite runs under load, never alone:
    # a crash of the host process, after the firmware's clean stop. The 32-bit frozen
    # build's teardown aborted the same way once under load (exit 1 with only "FATAL:
    # uncaught NLR" on the console; 1 of ~10 runs of this test, never alone): the unit
    # stopped all the same.
    teardown_abort = code == 1 and console.strip().startswith("FATAL: uncaught NLR")
    assert code in (0, -signal.SIGSEGV) or teardown_abort, (code, console)


# The virtual board's own part of a Ctrl-C stop, run with nothing between the watchdog's
# start and the stop: the unit's main thread does not wait for the watchdog thread to run.
_STOP_BEFORE_THE_WATCHDOG_RAN = """
import sys
from board.virtual import Board
board = Board(["--uart", sys.argv[1], "--ctl", sys.argv[1]])
board.wdt_start(60000)
board.maintenance()  # main.py's Ctrl-C stop: sys.exit(0), the watchdog ended first
"""


async def test_a_stop_before_the_watchdog_thread_ran_is_not_a_watchdog_reset(
    make_unit: UnitFactory, interp: str, request: pytest.FixtureRequest
) -> None:
    """On a loaded host the watchdog thread ran its first line only after a Ctrl-C right
    after boot had stopped the main thread: it found the watchdog ended before it began,
    took that for a missed feed and killed the unit as a watchdog reset (exit 3, about 1
    in 4 runs of this file beside three busy loops). Here the stop follows the start at
    once, which loses that race nearly every time on any host."""
    vu, _ = await make_unit(start=False)  # a unit folder with the firmware, not running
    frozen = interp == FROZEN32
    exe = str(request.getfixturevalue("frozen32_binary")) if frozen else find_micropython()
    job = vu.unit_dir / "stop_job.py"  # beside the firmware: `board` imports from there
    job.write_text(_STOP_BEFORE_THE_WATCHDOG_RAN)
    cause = vu.unit_dir / "reset.cause"
    master, slave = os.openpty()
    try:
        for _ in range(3):
            res = subprocess.run(
                [exe, str(job), os.ttyname(slave)],
                cwd=vu.unit_dir,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            got = (res.returncode, cause.read_text() if cause.exists() else None)
            # not (-SIGKILL, "wdt\n"): the watchdog thread's reset. The host's teardown
            # crash after a clean stop (see the last test) is the interpreter's, not this
            assert got in ((0, None), (-signal.SIGSEGV, None)), (got, res.stdout + res.stderr)
    finally:
        os.close(master)
        os.close(slave)
