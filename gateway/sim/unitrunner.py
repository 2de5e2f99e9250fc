"""A virtual unit for people: the real firmware on MicroPython, LED and buzzer on stdout.

``campusguard unit`` (gateway/cli/unit.py) runs it. The firmware's UART is a pty given by
the caller; control commands are read from stdin, one per line, as the virtual board's
control channel takes them (firmware/board/virtual.py), and every change of the LED and
the buzzer is printed. A watchdog reset or a crash restarts the firmware (the reset
circuit); Ctrl-C stops it for maintenance as mpremote's Ctrl-C stops a real unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import sys
import tty
from datetime import datetime
from pathlib import Path

from gateway.core.config import Unit
from gateway.flashing.unitfiles import CONFIG_FILE
from gateway.sim.vboard import CRASH_EXIT, WATCHDOG_EXIT, find_micropython, prepare_unit_dir

# what the virtual board's control channel takes from a person (firmware/board/virtual.py)
COMMANDS = {
    "button": "0|1",
    "checkin": "0|1",
    "tamper": "0|1",
    "mains": "0|1",
    "battery": "MV",
    "sounder": "0|1",
    "test": "",
    "mem": "",
}
RESTARTS_MAX = 5  # resets in a row before giving up (a crash loop)


def check_command(line: str) -> str | None:
    """None if ``line`` is a control command a person may type, else what is wrong."""
    words = line.split()
    if not words:
        return "empty"
    arg = COMMANDS.get(words[0])
    if arg is None:
        return f"unknown command {words[0]!r}"
    want = 1 if arg else 0
    if len(words) - 1 != want:
        return f"{words[0]} takes {arg or 'no argument'}"
    if arg == "0|1" and words[1] not in ("0", "1"):
        return f"{words[0]} takes 0 or 1"
    if arg == "MV" and not (words[1].isdigit() and 0 < int(words[1]) < 20000):
        return f"{words[0]} takes millivolts, e.g. 3700"
    return None


def _usage_line() -> str:
    return "commands: " + ", ".join(f"{c} {a}".strip() for c, a in COMMANDS.items())


def say(text: str) -> None:
    """Print one line, stamped with the time of day (what the person at the unit sees)."""
    print(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} {text}", flush=True)


class UnitRunner:
    """The firmware process, its control pty, stdin in and LED/buzzer changes out."""

    def __init__(self, flash: Path, uart: str, heapsize: str) -> None:
        """Nothing runs until :meth:`run`."""
        self.flash = flash
        self.uart = uart
        self.heapsize = heapsize
        self.exe = find_micropython()
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.ctl_master, self.ctl_slave = master, slave
        self.ctl_path = os.ttyname(slave)
        self._buf = bytearray()
        self._stop = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self) -> int:
        """Run (restarting after a reset) until Ctrl-C/SIGTERM; the exit status."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.ctl_master, self._on_ctl)
        with contextlib.suppress(ValueError, OSError, NotImplementedError):
            loop.add_reader(sys.stdin.fileno(), self._on_stdin)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        resets = 0
        try:
            while True:
                code = await self._run_once()
                if self._stop.is_set():
                    say("stopped" + (" for maintenance" if code == 0 else f" ({code})"))
                    return 0
                if code in (WATCHDOG_EXIT, CRASH_EXIT) and resets < RESTARTS_MAX:
                    resets += 1
                    why = "watchdog" if code == WATCHDOG_EXIT else "crash"
                    say(f"reset ({why}, see {self.flash / 'console.log'}): booting again")
                    continue
                say(f"firmware exited with {code} (see {self.flash / 'console.log'})")
                return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sys.stdin.fileno())
            loop.remove_reader(self.ctl_master)
            os.close(self.ctl_master)
            os.close(self.ctl_slave)

    async def _run_once(self) -> int:
        with open(self.flash / "console.log", "ab") as console:
            self.proc = await asyncio.create_subprocess_exec(
                self.exe,
                "-X",
                f"heapsize={self.heapsize}",
                "main.py",
                "--uart",
                self.uart,
                "--ctl",
                self.ctl_path,
                cwd=self.flash,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,  # Ctrl-C reaches it through us, once
            )
        exited = asyncio.ensure_future(self.proc.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # as mpremote's Ctrl-C: the firmware stops for maintenance (exit status 0)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(5):
                    await exited
            except TimeoutError:
                self.proc.kill()
                await exited
        stopping.cancel()
        self._on_ctl()
        return exited.result()

    def _on_ctl(self) -> None:
        while True:
            try:
                data = os.read(self.ctl_master, 4096)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._buf += data
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf = bytearray(rest)
            self._show(line.decode(errors="replace").strip())

    def _show(self, line: str) -> None:
        what, _, rest = line.partition(" ")
        if what in ("led", "buzzer"):
            say(f"{what} {rest}")
        elif what == "ready":
            say(f"ready (boot epoch {rest.split()[0]}); {_usage_line()}")
        elif what in ("log", "mem", "test"):
            say(line)
        elif what == "wdt":
            say("watchdog fired")

    def _on_stdin(self) -> None:
        line = sys.stdin.readline()
        if not line:  # end of input: the unit goes on running, alone
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            return
        line = line.strip()
        if not line:
            return
        problem = check_command(line)
        if problem is not None:
            say(f"{problem}; {_usage_line()}")
            return
        os.write(self.ctl_master, (line + "\n").encode())


def prepare(unit: Unit, key: bytes, flash: Path) -> bool:
    """Write the firmware, config and key into ``flash``, keeping the unit's state.

    A new flash also gets deploy's installation-test marker. True if it was new.
    """
    new = not (flash / CONFIG_FILE).exists()
    prepare_unit_dir(
        flash, unit, key, compiled=True, cache=flash.parent / ".fw-cache", install_test=new
    )
    return new
