"""Real units on the bench: deploy with ``campusguard deploy``, press through a jig or the REPL.

The gateway runs in this process on the register's links (the Pi's UART / RS-485 / radio
ports named in boards.yaml); the units under test are deployed with a HIL copy of the
register (``incident_window_s`` 10, ``long_press_ms`` 1500, ``cancel_window_s`` 10, so
scenarios run in seconds) and must be on those links.

Pressing the button:

* ``--jig-gpio LINE``: a GPIO line of the Pi pulls the unit's button input to GND through
  the jig (hil_tests/README.md has the wiring). Driven low = pressed, released to
  high-impedance = up. Uses the ``gpiod`` Python binding (libgpiod 2) when installed,
  else ``/sys/class/gpio``.
* otherwise the REPL: the harness stops the firmware over USB (mpremote's Ctrl-C, the
  maintenance path a deploy uses), then starts it again with ``mpremote exec
  --no-follow`` under a driver that replaces the button pin by a soft input and reads
  ``button 1`` / ``button 0`` lines from the USB console, the same words the virtual
  board's control channel takes. Everything else (UART, LED, buzzer, watchdog, flash)
  is the real board. The unit is power-cycled (``mpremote reset``) at the end.

What the harness cannot see on a real board (the LED, the buzzer) is recorded in
:data:`LEDGER` as "not checked" and the scenario goes on; the run ends with a summary of
what was checked and what was not (hil_tests/conftest.py).

Neither path has run against hardware in CI (there is none); the REPL path runs in
``tests/sim/test_hil_realboard.py`` against the MicroPython unix port with its REPL on a
pty, driven through mpremote like a USB port (``--hil-unix-uart``: the board's UART is a
pty, through the ``machine`` stand-in ``tests/firmware/esp32_machine.py``). The code
fails with a one-line message when a port or a GPIO line is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import Config, Unit, load_config
from gateway.security.signkeys import provision_one_room
from gateway.service.assembly import Gateway, Settings
from gateway.service.watchers import build_watchers
from gateway.sim.fleet import DUTYROOM
from gateway.sim.localbroker import LocalBroker
from gateway.sim.police import Police

CANCEL_PAUSE_S = 0.8  # the firmware's cancel_gap_ms (700) and a margin
ROOT = Path(__file__).resolve().parents[1]
ESP32_STANDIN = ROOT / "tests" / "firmware"  # esp32_machine.py: `machine` on the unix port

HIL_TIMINGS = {"incident_window_s": 10, "long_press_ms": 1500, "cancel_window_s": 10}

# MicroPython, run on the unit by `mpremote exec --no-follow`: the firmware with a soft
# button driven from the USB console (the REPL's stdin).
REPL_DRIVER = """
import sys, asyncio, select
from board.esp32 import Board
import startup

class _Soft:
    def __init__(self):
        self.flag = asyncio.ThreadSafeFlag()
        self.level = 0
    def value(self):
        return self.level

class _JigBoard(Board):
    def __init__(self):
        super().__init__()
        self._inputs["button"] = _Soft()
    def start(self, a):
        self._jig = asyncio.create_task(self._console())
    async def _console(self):
        poll = select.poll()
        poll.register(sys.stdin, select.POLLIN)
        line = ""
        while True:
            if not poll.poll(0):
                await asyncio.sleep_ms(5)
                continue
            ch = sys.stdin.read(1)
            if ch != "\\n":
                if ch >= " ":  # mpremote leaves "\\r\\x02" (raw REPL off) on its way out
                    line += ch
                continue
            words, line = line.split(), ""
            if len(words) == 2 and words[0] == "button":
                b = self._inputs["button"]
                b.level = 1 if words[1] == "1" else 0
                b.flag.set()
                print("jig button", b.level)

_board = _JigBoard()
_unit = startup.build(_board)  # main.py's wiring, with the jig's board
if _unit is not None:
    try:
        asyncio.run(_unit.run(startup.boot))
    except KeyboardInterrupt:  # mpremote's Ctrl-C: stop for maintenance, as main.py does
        _unit.stop()
        _board.maintenance()
"""


# Before REPL_DRIVER on the unix port (--hil-unix-uart): the ESP32 board's `machine` is
# the stand-in, its UART the pty UART_PATH (raw, reads return what is there), the tamper
# switch shut; board.esp32 reads the unit's files in the REPL's working folder.
UNIX_PRELUDE = """
import sys, os, json, termios
sys.path.append(STANDIN)
import esp32_machine
sys.modules["machine"] = esp32_machine
_w = open(UART_PATH, "r+b")
termios.setraw(_w.fileno())
_a = termios.tcgetattr(_w.fileno())
_a[6][6] = 0
_a[6][5] = 0
termios.tcsetattr(_w.fileno(), termios.TCSANOW, _a)
esp32_machine.wire = _w
with open("unit.json") as _f:
    _pins = json.load(_f).get("pins", {})
if "tamper" in _pins:
    esp32_machine.pad(_pins["tamper"]).ext = 0
import board.esp32
board.esp32._ROOT = os.getcwd() + "/"
"""


class RealBoardError(Exception):
    """A real board or its jig cannot be reached."""


@dataclass
class Ledger:
    """What the harness could not check on a real board, per scenario (for the summary)."""

    scenario: str = ""
    not_checked: list[tuple[str, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Record a check of the running scenario as not made (and let it go on)."""
        self.not_checked.append((self.scenario, what))

    def of(self, scenario: str) -> list[str]:
        """What was not checked in ``scenario``."""
        return [what for s, what in self.not_checked if s == scenario]


LEDGER = Ledger()
"""The session's record of checks a real board leaves to a person (conftest.py sets
``scenario`` before each one and prints the summary)."""


def real_rig_options(
    ports: list[str], units: list[str], jigs: list[str]
) -> list[tuple[str, str, str | None]]:
    """Pair --port, --unit and --jig-gpio; a usage error is a one-line pytest failure."""
    if not ports:
        if units or jigs:
            raise pytest.UsageError("--unit/--jig-gpio need --port (the unit's USB port)")
        return []
    if len(units) != len(ports):
        raise pytest.UsageError(
            f"give one --unit per --port ({len(ports)} ports, {len(units)} units)"
        )
    if jigs and len(jigs) != len(ports):
        raise pytest.UsageError("give one --jig-gpio per --port, or none (REPL presses)")
    for port in ports:
        if not os.path.exists(port):
            raise pytest.UsageError(f"--port {port}: no such device (is the unit plugged in?)")
    return [
        (p, u, jigs[i] if jigs else None) for i, (p, u) in enumerate(zip(ports, units, strict=True))
    ]


def _mpremote() -> str:
    beside = Path(sys.executable).parent / "mpremote"
    return str(beside) if beside.exists() else shutil.which("mpremote") or "mpremote"


class GpioJig:
    """One GPIO line of the Pi wired across a unit's button (low = pressed)."""

    def __init__(self, spec: str) -> None:
        """``gpiochip0:17`` (libgpiod) or ``17`` (sysfs number)."""
        chip, _, line = spec.rpartition(":")
        self.chip = chip or "gpiochip0"
        self.line = int(line)
        self._request: Any = None
        self._sysfs: Path | None = None
        try:
            self._gpiod: Any = importlib.import_module("gpiod")
        except ImportError:
            self._gpiod = None

    def open(self) -> None:
        """Claim the line, released (high-impedance)."""
        if self._gpiod is not None:
            return  # requested per press: an input line is high-impedance
        base = Path("/sys/class/gpio")
        if not base.exists():
            raise RealBoardError("no gpiod module and no /sys/class/gpio: install python3-libgpiod")
        self._sysfs = base / f"gpio{self.line}"
        if not self._sysfs.exists():
            (base / "export").write_text(str(self.line))
        (self._sysfs / "direction").write_text("in")

    def down(self) -> None:
        """Pull the button input to GND."""
        if self._gpiod is not None:
            g = self._gpiod
            settings = g.LineSettings(
                direction=g.line.Direction.OUTPUT, output_value=g.line.Value.INACTIVE
            )
            self._request = g.request_lines(
                f"/dev/{self.chip}", consumer="campusguard-jig", config={self.line: settings}
            )
            return
        assert self._sysfs is not None
        (self._sysfs / "direction").write_text("low")

    def up(self) -> None:
        """Let go (the unit's pull-up takes the input high)."""
        if self._gpiod is not None:
            if self._request is not None:
                self._request.release()
                self._request = None
            return
        assert self._sysfs is not None
        (self._sysfs / "direction").write_text("in")

    def close(self) -> None:
        """Release the line."""
        self.up()


class ReplJig:
    """The unit's USB console as the button: the firmware runs under :data:`REPL_DRIVER`."""

    def __init__(self, port: str, unix_uart: str | None = None) -> None:
        """``port`` is the unit's USB serial port; ``unix_uart``: the board is the
        MicroPython unix port with its REPL on ``port`` and its UART on this pty."""
        self.port = port
        self.unix_uart = unix_uart
        self.console: list[str] = []  # what the unit printed (the last 500 lines)
        self._serial: Any = None
        self._drain: threading.Thread | None = None

    def _chain(self, *commands: str) -> list[str]:
        # the unix port's REPL soft-resets (and exits) unless mpremote resumes it
        return [
            _mpremote(),
            "connect",
            self.port,
            *(["resume"] if self.unix_uart else []),
            *commands,
        ]

    def open(self) -> None:
        """Restart the firmware under the driver and keep the console open."""
        import serial  # pyserial: the gateway's dependency

        code = REPL_DRIVER
        if self.unix_uart is not None:
            prelude = UNIX_PRELUDE.replace("STANDIN", repr(str(ESP32_STANDIN)))
            code = prelude.replace("UART_PATH", repr(self.unix_uart)) + code
        res = subprocess.run(
            self._chain("exec", "--no-follow", code),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if res.returncode != 0:
            raise RealBoardError(f"{self.port}: mpremote exec failed: {res.stderr.strip()}")
        self._serial = serial.Serial(self.port, 115200, timeout=0.2)
        # read what the unit prints: a console nobody reads can fill and stall the unit
        self._drain = threading.Thread(target=self._read_console, daemon=True)
        self._drain.start()

    def _read_console(self) -> None:
        ser = self._serial
        buf = b""
        while self._serial is ser and ser is not None:
            try:
                buf += ser.read(4096)
            except (OSError, TypeError, AttributeError):
                return  # closed under us
            *lines, buf = buf.split(b"\n")
            self.console += [ln.decode(errors="replace").rstrip() for ln in lines]
            del self.console[:-500]

    def _say(self, line: str) -> None:
        if self._serial is None:
            raise RealBoardError(f"{self.port}: the REPL jig is not open")
        self._serial.write(line.encode() + b"\n")
        self._serial.flush()

    def down(self) -> None:
        """Soft button down."""
        self._say("button 1")

    def up(self) -> None:
        """Soft button up."""
        self._say("button 0")

    def close(self) -> None:
        """Close the console and power-cycle the unit back to its own firmware."""
        ser, self._serial = self._serial, None
        if self._drain is not None:
            self._drain.join(2.0)
        if ser is not None:
            ser.close()
        if self.unix_uart is not None:
            return  # the unix port has no reset; its process ends with the test's REPL
        subprocess.run(
            [_mpremote(), "connect", self.port, "reset"],
            capture_output=True,
            timeout=30,
            check=False,
        )


class RealUnit:
    """A unit on the bench with the same story helpers as a virtual one (no LED readout)."""

    def __init__(self, spec: Unit, port: str, jig: GpioJig | ReplJig) -> None:
        """``spec`` from the register, ``port`` its USB port, ``jig`` what presses it."""
        self.spec = spec
        self.port = port
        self.jig = jig
        self.pressed_at: float | None = None
        self.presses: list[float] = []
        self.released_at: float | None = None  # when the last tap let go

    @property
    def id(self) -> str:
        """Register id."""
        return self.spec.id

    @property
    def link(self) -> str:
        """Its link in the register."""
        return self.spec.link

    async def _tap(self, down_s: float) -> None:
        self.presses.append(time.monotonic())
        self.jig.down()
        await asyncio.sleep(down_s)  # the finger on the button
        self.jig.up()
        self.released_at = time.monotonic()

    async def press(self, down_s: float = 0.08) -> None:
        """One short press (latency counts from the button going down)."""
        self.pressed_at = time.monotonic()
        await self._tap(down_s)

    async def hold(self, seconds: float) -> None:
        """Keep the button down ``seconds``."""
        self.pressed_at = time.monotonic()
        await self._tap(seconds)

    async def click(self, times: int, down_s: float = 0.08, up_s: float = 0.15) -> None:
        """Quick presses; latency counts from the first."""
        self.pressed_at = time.monotonic()
        for i in range(times):
            await self._tap(down_s)
            if i + 1 < times:
                await asyncio.sleep(up_s)

    async def cancel(self, presses: int = 5) -> None:
        """The cancel gesture: after a pause longer than the unit's gap, 5 quick presses."""
        # the burst must not join the presses before it (firmware/README.md, cancel
        # gesture): wait only for what is left of the gap since the last press
        since = time.monotonic() - self.presses[-1] if self.presses else CANCEL_PAUSE_S
        if since < CANCEL_PAUSE_S:
            await asyncio.sleep(CANCEL_PAUSE_S - since)
        for i in range(presses):
            await self._tap(0.08)
            if i + 1 < presses:
                await asyncio.sleep(0.2)

    def mark(self) -> None:
        """Nothing to mark: the harness cannot see a real unit's LED."""

    async def expect_led(self, state: str, within: float = 5.0) -> None:
        """A real unit's LED is not wired to the harness: recorded as not checked (look
        at the unit), and the scenario goes on."""
        LEDGER.note(f"{self.id}: LED {state!r} within {within:g} s (look at the unit)")

    async def expect_buzzer(self, state: str, within: float = 5.0) -> None:
        """Likewise for the buzzer (listen)."""
        LEDGER.note(f"{self.id}: buzzer {state!r} within {within:g} s (listen)")

    def shown_since_mark(self) -> tuple[list[str], list[str]]:
        """Unknown on a real unit: recorded as not checked; nothing seen is returned, so
        a silence check passes only in the harness's eyes (the summary says so)."""
        LEDGER.note(f"{self.id}: LED and buzzer stayed silent (look and listen)")
        return [], []


def hil_register(source: Path, units: list[str], out: Path) -> Path:
    """A copy of the register with short timings for the units under test."""
    data = yaml.safe_load(source.read_text())
    for entry in data.get("units", []):
        if entry.get("id") in units:
            entry.update(HIL_TIMINGS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


class RealRig:
    """Real boards, the in-process gateway on the register's links, and the police."""

    def __init__(
        self,
        boards: list[tuple[str, str, str | None]],
        config: Path,
        keydir: Path,
        broker: LocalBroker,
        police: Police,
        workdir: Path,
        unix_uarts: list[str] | None = None,
    ) -> None:
        """``boards``: (port, unit id, jig line or None) per board; ``unix_uarts``: the
        boards are MicroPython unix ports on ptys, with these UART ptys (same order)."""
        self.boards = boards
        self.unix_uarts = unix_uarts or []
        self.keydir = keydir
        self.broker = broker
        self.police = police
        self.dir = workdir
        self.register = hil_register(config, [u for _, u, _ in boards], workdir / "boards-hil.yaml")
        self.config: Config = load_config(self.register)
        self.units: list[RealUnit] = []
        self._gateway: Gateway | None = None
        self._task: asyncio.Task[None] | None = None
        self._next = 0

    def _deploy(self, port: str, unit: str) -> None:
        res = subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "deploy", unit, "--port", port,
             "--config", str(self.register), "--keydir", str(self.keydir),
             *(["--unix-port"] if self.unix_uarts else [])],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RealBoardError(res.stderr.strip() or f"deploy {unit} to {port} failed")

    async def __aenter__(self) -> RealRig:
        """Deploy every board, start the gateway, wait for each installation test."""
        unknown = [u for _, u, _ in self.boards if u not in self.config.units]
        if unknown:
            raise RealBoardError(f"--unit {', '.join(unknown)}: not in {self.register}")
        provision_one_room(self.keydir, self.config.gateway_id, DUTYROOM)
        settings = Settings(
            db_path=self.dir / "gateway.db",
            keydir=self.keydir,
            broker=self.broker.settings(f"gateway-{self.config.gateway_id}"),
        )
        gw = Gateway(self.config, settings)
        gw.attach(build_watchers(self.config, gw.outlet, gw.store, gw.clock))
        self._gateway = gw
        self._task = asyncio.create_task(gw.run(), name="gateway")
        await gw.ready.wait()
        since = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(self._deploy, p, u) for p, u, _ in self.boards))
        for i, (port, uid, line) in enumerate(self.boards):
            uart = self.unix_uarts[i] if self.unix_uarts else None
            jig: GpioJig | ReplJig = GpioJig(line) if line else ReplJig(port, uart)
            await asyncio.to_thread(jig.open)
            self.units.append(RealUnit(self.config.units[uid], port, jig))
        await self.police.wait_for(
            lambda: all(self.police.events("test", unit=u.id, since=since) for u in self.units),
            60,
            "installation test from every deployed board",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Release the jigs, stop the gateway."""
        for u in self.units:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(u.jig.close)
        if self._gateway is not None and self._task is not None:
            self._gateway.stop()
            await self._task

    async def take(self, link: str | None = None) -> RealUnit:
        """The next board, once its last incident window is over (a fresh incident), and
        as a never-pressed unit to the police's expectations (``pressed_at`` None).

        One board plays every scenario, so both matter. The gateway's incident window
        runs from the unit's last ALARM, and a hold sends one at long_press_ms, while
        the button is still down: the quiet is counted from the last release, not the
        last press (from the press, a hold's duress update was 9.5 s old when the next
        scenario pressed, and its 12 chatter presses joined the duress incident). And a
        scenario that starts its press in a task and then expects the alarm "since the
        press" (duress) must not get the previous scenario's press time: that matched
        the last scenario's alarm at once, then gave the duress update a deadline
        already past.
        """
        candidates = [u for u in self.units if link is None or u.link == link] or self.units
        unit = candidates[self._next % len(candidates)]
        self._next += 1
        if unit.released_at is not None:
            quiet = unit.released_at + unit.spec.incident_window_s + 1.0 - time.monotonic()
            if quiet > 0:
                await asyncio.sleep(quiet)  # real time must pass for a new incident
        unit.pressed_at = None
        return unit
