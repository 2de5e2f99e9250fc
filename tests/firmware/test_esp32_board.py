"""The ESP32 board layer (firmware/board/esp32.py) on the real MicroPython binary.

No ESP32 is at hand, and CI runs the firmware only with the virtual board. These tests
run the real ``board/esp32.py`` on the MicroPython unix port with a stand-in ``machine``
module (``tests/firmware/esp32_machine.py``: the ESP32 port's Pin/ADC/UART/WDT API and
constants, recording what the board did) injected as ``sys.modules["machine"]`` before
``import board.esp32``. Each unit test runs a short MicroPython script that prints one
``RESULT {json}`` line; the assertions are made here. The last test boots the real
firmware (compiled, as deployed) on ``board.esp32`` and follows a press of the alarm
button to an ALARM frame on a pty, and the gateway's ACK back to the unit.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import Config
from gateway.flashing.unitfiles import FIRMWARE_DIR
from gateway.sim.vboard import find_micropython, prepare_unit_dir
from protocol import AlarmKind, MsgType
from protocol.keys import TEST_KEY
from tests.support.timing import scaled
from tests.firmware.conftest import FAST, GatewayEnd

HERE = Path(__file__).resolve().parent

# what every unit-test script starts with: the stand-in is `machine` before board.esp32
# imports it (the unix port's own machine module has no Pin, UART, ADC or WDT)
PRELUDE = """\
import json
import sys

sys.path.insert(0, {firmware!r})
sys.path.append({here!r})
import esp32_machine as machine

sys.modules["machine"] = machine
import asyncio
import micropython

import board.esp32 as esp32

out = {{}}
"""


def run_board(tmp_path: Path, body: str) -> tuple[dict[str, Any], str]:
    """Run PRELUDE + ``body`` on MicroPython; ``body`` fills the dict ``out``.

    Returns ``out`` (through JSON) and the script's whole stdout.
    """
    script = tmp_path / "job.py"
    script.write_text(
        PRELUDE.format(firmware=str(FIRMWARE_DIR), here=str(HERE))
        + textwrap.dedent(body)
        + '\nprint("RESULT", json.dumps(out))\n'
    )
    res = subprocess.run(
        [find_micropython(), str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, f"micropython failed:\n{res.stdout}\n{res.stderr}"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line:\n{res.stdout}"
    out: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return out, res.stdout


# Pin constants of the ESP32 port (ports/esp32/machine_pin.c), as the stand-in has them
IN, OUT = 1, 3
PULL_DOWN, PULL_UP = 1, 2
BOTH_EDGES = 1 | 2  # IRQ_RISING | IRQ_FALLING

# the ESP32 stubs `make` installs for mypy (firmware/mypy.ini): constants with values
ESP32_STUBS = Path(sys.prefix) / "esp32-stubs" / "machine.pyi"  # in the running venv


def int_constants(source: str) -> dict[str, int]:
    """Upper-case int constants, module level and per class ("Pin.IN"), of a module."""
    found: dict[str, int] = {}

    def scan(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                scan(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                value = node.value
                if (
                    isinstance(target, ast.Name)
                    and target.id.isupper()
                    and not target.id.startswith("_")
                    and isinstance(value, ast.Constant)
                    and type(value.value) is int
                ):
                    found[prefix + target.id] = value.value

    scan(ast.parse(source).body, "")
    return found


def test_standin_constants_are_the_esp32_ports() -> None:
    if not ESP32_STUBS.exists():
        pytest.skip("no ESP32 stubs (make installs them into .venv/esp32-stubs)")
    stub = int_constants(ESP32_STUBS.read_text())
    ours = int_constants((HERE / "esp32_machine.py").read_text())
    used = {"PWRON_RESET", "HARD_RESET", "WDT_RESET", "SOFT_RESET", "DEEPSLEEP_RESET"}
    used |= {f"Pin.{n}" for n in ("IN", "OUT", "PULL_UP", "PULL_DOWN", "IRQ_RISING")}
    used |= {"Pin.IRQ_FALLING", "ADC.ATTN_11DB"}
    assert used <= ours.keys()
    assert {name: stub.get(name) for name in ours} == ours
    pin = (ours["Pin.IN"], ours["Pin.OUT"], ours["Pin.PULL_DOWN"], ours["Pin.PULL_UP"])
    assert pin == (IN, OUT, PULL_DOWN, PULL_UP)  # what the tests here compare with
    assert ours["Pin.IRQ_RISING"] | ours["Pin.IRQ_FALLING"] == BOTH_EDGES


# ---------------------------------------------------------------- inputs


def test_inputs_levels_pulls_and_irq(tmp_path: Path) -> None:
    out, _ = run_board(
        tmp_path,
        """
        b = esp32.Board({"button": 13, "tamper": 4, "mains": 26})
        for name, n in (("button", 13), ("tamper", 4), ("mains", 26)):
            p = machine.pad(n)
            out[name] = [p.mode, p.pull, p.trigger]
        btn = b.input("button")
        out["button_idle"] = btn.value()  # pulled up: not pressed
        machine.pad(13).ext = 0  # the button pulls the pad to GND (no edge delivered)
        out["button_pressed"] = btn.value()
        machine.pad(13).ext = 1
        out["button_released"] = btn.value()
        # tamper: closed to GND while the case is shut; the pull-up makes open read 1
        tamper = b.input("tamper")
        machine.pad(4).ext = 0
        out["tamper_shut"] = tamper.value()
        machine.pad(4).ext = None
        out["tamper_open"] = tamper.value()
        # mains: high while present; a broken wire is pulled down: mains lost
        mains = b.input("mains")
        machine.pad(26).ext = 1
        out["mains_present"] = mains.value()
        machine.pad(26).ext = None
        out["mains_wire_broken"] = mains.value()
        out["no_checkin"] = b.input("checkin") is None


        async def flag_set(ms):
            try:
                await asyncio.wait_for_ms(btn.flag.wait(), ms)
            except asyncio.TimeoutError:
                return False
            return True


        def allocates(f, arg):
            # f(arg) with the heap locked: any allocation raises MemoryError (a
            # function: its locals, unlike module globals, need no heap)
            micropython.heap_lock()
            try:
                f(arg)
            except MemoryError:
                micropython.heap_unlock()
                return True
            micropython.heap_unlock()
            return False


        out["flag_before"] = asyncio.run(flag_set(30))
        p = machine.pad(13)
        out["control"] = allocates(lambda x: [x], 1)  # the lock does catch an allocation
        out["irq_allocates"] = allocates(p.handler, p.pin)  # as the pin's IRQ calls it
        out["flag_after_irq"] = asyncio.run(flag_set(200))
        out["flag_cleared"] = not asyncio.run(flag_set(30))
        # an edge as the ESP32 delivers it (the handler scheduled, a soft IRQ) wakes a
        # task waiting on the flag
        machine.drive(13, 0)
        out["flag_after_edge"] = asyncio.run(flag_set(200))
        """,
    )
    assert out["button"] == [IN, PULL_UP, BOTH_EDGES]
    assert out["tamper"] == [IN, PULL_UP, BOTH_EDGES]
    assert out["mains"] == [IN, PULL_DOWN, BOTH_EDGES]
    assert (out["button_idle"], out["button_pressed"], out["button_released"]) == (0, 1, 0)
    assert (out["tamper_shut"], out["tamper_open"]) == (0, 1)
    assert (out["mains_present"], out["mains_wire_broken"]) == (1, 0)
    assert out["no_checkin"] is True
    assert out["flag_before"] is False
    assert out["control"] is True
    assert out["irq_allocates"] is False, "the IRQ handler allocates"
    assert out["flag_after_irq"] is True
    assert out["flag_cleared"] is True
    assert out["flag_after_edge"] is True


# ---------------------------------------------------------------- reset cause


def test_reset_cause_mapping(tmp_path: Path) -> None:
    out, _ = run_board(
        tmp_path,
        """
        causes = {
            "PWRON": machine.PWRON_RESET, "HARD": machine.HARD_RESET,
            "WDT": machine.WDT_RESET, "SOFT": machine.SOFT_RESET,
            "DEEPSLEEP": machine.DEEPSLEEP_RESET, "unknown": 0,
        }
        for name, value in causes.items():
            machine.cause = value
            out[name] = esp32.Board({}).reset_cause()
        """,
    )
    assert out == {
        "PWRON": "power",
        "HARD": "power",
        "WDT": "wdt",
        "SOFT": "crash",
        "DEEPSLEEP": "crash",
        "unknown": "crash",
    }


# ---------------------------------------------------------------- outputs


def test_sounder_self_check(tmp_path: Path) -> None:
    out, _ = run_board(
        tmp_path,
        """
        b = esp32.Board({"buzzer": 15})
        p = machine.pad(15)
        out["ok_off"] = [b.sounder_ok(), p.out]
        b.buzzer(1)
        out["ok_on"] = [b.sounder_ok(), p.out]
        b.buzzer(0)
        p.ext = 0  # the line shorted to GND
        out["shorted_low"] = [b.sounder_ok(), p.out]
        b.buzzer(1)
        out["shorted_low_on"] = [b.sounder_ok(), p.out]
        b.buzzer(0)
        p.ext = 1  # shorted to 3V3
        out["shorted_high"] = [b.sounder_ok(), p.out]
        out["no_buzzer"] = esp32.Board({"led": 2}).sounder_ok()
        """,
    )
    assert out["ok_off"] == [True, 0]
    assert out["ok_on"] == [True, 1]  # the buzzer's level is restored
    assert out["shorted_low"] == [False, 0]
    assert out["shorted_low_on"] == [False, 1]
    assert out["shorted_high"] == [False, 0]
    assert out["no_buzzer"] is False


def test_led_and_buzzer_drive_their_pins(tmp_path: Path) -> None:
    out, stdout = run_board(
        tmp_path,
        """
        b = esp32.Board({"led": 2, "buzzer": 15})
        led, buz = machine.pad(2), machine.pad(15)
        out["init"] = [led.mode, led.out, buz.mode, buz.out]
        b.led(1)
        out["led_on"] = [led.out, buz.out]
        b.buzzer(1)
        b.led(0)
        out["buzzer_on"] = [led.out, buz.out]
        b.buzzer(0)
        out["off"] = [led.out, buz.out]
        bare = esp32.Board({})
        bare.led(1)  # no LED, no buzzer: nothing happens, nothing raises
        bare.buzzer(1)
        bare.unconfigured("no key")  # the LED it does not have
        out["bare_led_buzzer"] = "ok"
        b.unconfigured("no key")
        out["unconfigured"] = led.out
        """,
    )
    assert out["init"] == [OUT, 0, OUT, 0]
    assert out["led_on"] == [1, 0]
    assert out["buzzer_on"] == [0, 1]
    assert out["off"] == [0, 0]
    assert out["bare_led_buzzer"] == "ok"
    assert out["unconfigured"] == 1
    assert "campusguard: unconfigured: no key" in stdout


# ---------------------------------------------------------------- battery, UART


def test_battery_mv(tmp_path: Path) -> None:
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "unit.json").write_text(
        json.dumps({"pins": {"battery_adc": 35}, "battery_divider_x1000": 3000})
    )
    out, _ = run_board(
        tmp_path,
        f"""
        machine.pad(34).uv = 1850000  # a 3.7 V cell through a 1:2 divider
        b = esp32.Board({{"battery_adc": 34}})
        out["default_divider"] = b.battery_mv()
        out["divider_2500"] = esp32.Board({{"battery_adc": 34}}, 2500).battery_mv()
        machine.pad(35).uv = 1850000
        esp32._ROOT = {str(tmp_path / "unit") + "/"!r}
        out["from_unit_json"] = esp32.Board().battery_mv()
        out["no_adc"] = esp32.Board({{"led": 2}}).battery_mv()
        """,
    )
    # 1,850,000 uV x 2.000 = 3700 mV; the stand-in's ADC clips at 950 mV unless the board
    # set the 11 dB attenuation (2450 mV full scale)
    assert out["default_divider"] == 3700
    assert out["divider_2500"] == 4625
    assert out["from_unit_json"] == 5550
    assert out["no_adc"] == 0


def test_uart_pins_baud_and_timeout(tmp_path: Path) -> None:
    out, _ = run_board(
        tmp_path,
        """
        esp32.Board({}).uart(115200)
        esp32.Board({"uart_tx": 25, "uart_rx": 26}).uart(9600)
        out["args"] = [u.args for u in machine.uarts]
        """,
    )
    common = {"id": 1, "rxbuf": 512, "txbuf": 512, "timeout": 0}
    assert out["args"] == [
        {**common, "baudrate": 115200, "tx": 17, "rx": 16},
        {**common, "baudrate": 9600, "tx": 25, "rx": 26},
    ]


def test_rs485_driver_is_on_only_while_a_frame_is_written(tmp_path: Path) -> None:
    out, _ = run_board(
        tmp_path,
        """
        from link import Link

        out["without"] = esp32.Board({}).rs485_de() is None
        b = esp32.Board({"rs485_de": 25})
        out["at_start"] = [machine.pad(25).mode, machine.pad(25).out]
        link = Link(b.uart(115200), None, None, b.rs485_de())
        machine.watched.add(25)
        link.send(b"\\x01\\x02\\x03", 3)  # the first frame: a 0x00 goes before it
        link.send(bytearray(b"\\x09\\x04\\x05"), 2, 1)
        out["events"] = machine.events
        machine.events = []
        machine.flush_fails = True
        try:
            link.send(b"\\x06", 1)
        except OSError:
            out["raised"] = True
        out["after_timeout"] = machine.events
        out["sent"] = list(machine.uarts[-1].sent)
        """,
    )
    assert out["without"] is True
    assert out["at_start"] == [OUT, 0]  # listening from the moment the board starts
    on, off = ["pin", 25, 1], ["pin", 25, 0]
    assert out["events"] == [
        on, ["write", 1], ["write", 3], ["flush"], off,  # delimiter, frame, let go of the bus
        on, ["write", 2], ["flush"], off,
    ]  # fmt: skip
    # a flush that times out still drops the driver: a unit must never hold the bus
    assert out["raised"] is True
    assert out["after_timeout"] == [on, ["write", 1], ["flush"], off]
    assert out["sent"] == [0, 1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- watchdog, reset


def test_watchdog(tmp_path: Path) -> None:
    out, stdout = run_board(
        tmp_path,
        """
        b = esp32.Board({})
        b.wdt_feed()  # before wdt_start: no watchdog yet, nothing happens
        b.maintenance()  # nor is one started by a Ctrl-C before it runs
        out["before_start"] = len(machine.wdts)
        b.wdt_start(8000)
        b.wdt_feed()
        b.wdt_feed()
        out["started"] = [[w.timeout, w.feeds] for w in machine.wdts]
        b.maintenance()
        out["maintenance"] = [w.timeout for w in machine.wdts]
        """,
    )
    assert out["before_start"] == 0
    assert out["started"] == [[8000, 2]]
    assert out["maintenance"] == [8000, 2 * 60 * 60 * 1000]
    assert stdout.count("campusguard: stopped for maintenance") == 2


def test_crashed_prints_and_resets(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        PRELUDE.format(firmware=str(FIRMWARE_DIR), here=str(HERE))
        + textwrap.dedent(
            """
            try:
                esp32.Board({}).crashed(ValueError("boom"))
            except SystemExit:
                print("resets", machine.resets)
            """
        )
    )
    res = subprocess.run(
        [find_micropython(), str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "ValueError: boom" in res.stdout + res.stderr
    assert "resets 1" in res.stdout


# ---------------------------------------------------------------- unit.json


def test_board_reads_unit_json(tmp_path: Path) -> None:
    folder = tmp_path / "flash"
    folder.mkdir()
    pins = {"button": 13, "tamper": 14, "led": 2, "buzzer": 15, "battery_adc": 34}
    (folder / "unit.json").write_text(json.dumps({"addr": 257, "pins": pins}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "unit.json").write_text('{"pins": {"button": 13')
    (tmp_path / "empty").mkdir()  # no unit.json at all
    (tmp_path / "not_object").mkdir()  # valid JSON, not an object
    (tmp_path / "not_object" / "unit.json").write_text("[13, 4]")
    (tmp_path / "pins_list").mkdir()
    (tmp_path / "pins_list" / "unit.json").write_text(json.dumps({"pins": [13, 4]}))
    (tmp_path / "bad_divider").mkdir()
    (tmp_path / "bad_divider" / "unit.json").write_text(
        json.dumps({"pins": pins, "battery_divider_x1000": "2.1"})
    )
    out, _ = run_board(
        tmp_path,
        f"""
        for name in ("flash", "broken", "empty", "bad_divider", "not_object", "pins_list"):
            esp32._ROOT = {str(tmp_path) + "/"!r} + name + "/"
            before = machine.pads()
            b = esp32.Board()
            configured = [n for n in machine.pads() if n not in before]
            machine.pad(34).uv = 1850000
            out[name] = {{
                "root": b.root,
                "inputs": [n for n in ("button", "checkin", "tamper", "mains")
                           if b.input(n) is not None],
                "pads": configured,
                "battery": b.battery_mv(),
            }}
            b.led(1)  # without pins: does nothing
        """,
    )
    assert out["flash"]["root"] == str(folder) + "/"
    assert out["flash"]["inputs"] == ["button", "tamper"]
    assert out["flash"]["pads"] == [2, 13, 14, 15, 34]
    assert out["flash"]["battery"] == 3700
    # a bad battery divider costs the battery reading its calibration, not the unit its
    # button: the default divider, and every pin as configured
    assert out["bad_divider"]["inputs"] == ["button", "tamper"]
    assert out["bad_divider"]["battery"] == 3700
    for name in ("broken", "empty", "not_object", "pins_list"):
        assert out[name]["inputs"] == [], name
        assert out[name]["pads"] == [], name
        assert out[name]["battery"] == 0, name


# ---------------------------------------------------------------- end to end

# The real firmware on board.esp32, started the way main.py starts it on an ESP32 (main.py
# itself picks the virtual board off the ESP32: it tests sys.platform). The UART's far
# end is a pty: the stand-in UART reads and writes the pty's master, inherited as a
# non-blocking file descriptor (readinto returns None when nothing waits, as the ESP32's
# UART with timeout=0 does) and polled by asyncio through its descriptor (the stand-in
# answers ioctl GET_FILENO). The gateway side (GatewayEnd) opens the pty's slave path,
# as it opens a VirtualUnit's link path. Arguments after the stand-in's folder: levels
# at power-up, "N=LEVEL" (a shut case holds the tamper switch's pad low). A thread reads
# stdin, the outside world: "pin N LEVEL" drives GPIO N (its IRQ handler scheduled as the
# ESP32 port's ISR does), "report" prints what the board did as one JSON line.
DRIVER = """\
import _thread
import asyncio
import json
import sys

unit, fd, standin = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, unit)
sys.path.append(standin)
import esp32_machine as machine

sys.modules["machine"] = machine
machine.wire = open(fd, "r+b")
for arg in sys.argv[4:]:
    n, level = arg.split("=")
    machine.pad(int(n)).ext = int(level)
import board.esp32

board.esp32._ROOT = unit + "/"


def outside():
    while True:
        words = sys.stdin.readline().split()
        if not words:
            return
        if words[0] == "pin":
            machine.drive(int(words[1]), int(words[2]))
        elif words[0] == "report":
            pads = {}
            for n in machine.pads():
                p = machine.pad(n)
                pads[str(n)] = [p.mode, p.pull, p.trigger]
            running = app._app
            print("report", json.dumps({
                "uarts": [u.args for u in machine.uarts],
                "wdts": [[w.timeout, w.feeds] for w in machine.wdts],
                "pads": pads,
                "pending_alarms": -1 if running is None else running.outbox.pending(1),
            }))


import app
import startup

b = board.esp32.Board()
_thread.start_new_thread(outside, ())
unit = startup.build(b)  # what main.py does on an ESP32
try:
    asyncio.run(unit.run(startup.boot))
except KeyboardInterrupt:
    unit.stop()
    b.maintenance()
"""


# a unit's heap (DEFAULT_HEAPSIZE, 80K) and room for what an ESP32 does not carry: the
# stand-in machine module compiled from source (~8 KB), the driver, JSON and a thread
E2E_HEAPSIZE = "96K"


class Driver:
    """The MicroPython process running DRIVER: its stdout lines, its stdin commands."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._event.set()
        self._event.set()

    async def line(self, prefix: str, timeout: float = 5.0, start: int = 0) -> str:
        """The first output line from index ``start`` on that starts with ``prefix``
        (waits for it)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for ln in self.lines[start:]:
                        if ln.startswith(prefix):
                            return ln
                    if self._reader.done():
                        raise AssertionError(f"micropython ended without {prefix!r}")
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"no {prefix!r} line within {timeout} s") from None

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")

    async def report(self) -> dict[str, Any]:
        """Ask the unit for a report now; the parsed answer."""
        start = len(self.lines)
        self.send("report")
        return dict(json.loads((await self.line("report ", start=start)).removeprefix("report ")))

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        # only while it runs: Popen.kill() of an exited child reaps it behind asyncio's back
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        await self._reader


async def test_firmware_on_esp32_board_sends_alarm(
    tmp_path: Path, register: Config, fw_cache: Path
) -> None:
    unit = register.units["shop-fruit"]  # button on GPIO 13, UART on the default 17/16
    folder = prepare_unit_dir(
        tmp_path / unit.id, unit, TEST_KEY, overrides=FAST, compiled=True, cache=fw_cache
    )
    driver_py = tmp_path / "esp32_driver.py"
    driver_py.write_text(DRIVER)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        gw = GatewayEnd(os.ttyname(slave), unit.addr)  # raw; opened before the unit talks
    finally:
        os.close(slave)
    try:
        proc = await asyncio.create_subprocess_exec(
            find_micropython(),
            "-X",
            f"heapsize={E2E_HEAPSIZE}",
            str(driver_py),
            str(folder),
            str(master),
            str(HERE),
            f"{unit.pins['tamper']}=0",  # the case is shut
            cwd=folder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=(master,),
        )
    except BaseException:
        gw.close()
        os.close(master)
        raise
    drv = Driver(proc)
    try:
        ready = await drv.line("campusguard: ready")
        epoch = int(ready.split()[3])
        await gw.next(MsgType.HEARTBEAT, after=0, timeout=5.0)  # the boot heartbeat
        start = len(gw.frames)
        drv.send(f"pin {unit.pins['button']} 0")  # pressed: the button pulls it to GND
        alarm = await gw.next(MsgType.ALARM, after=start, timeout=2.0)
        drv.send(f"pin {unit.pins['button']} 1")
        body = alarm.frame.body
        assert (body.kind, body.presses) == (AlarmKind.PANIC, 1)
        assert alarm.frame.epoch == epoch
        # the downlink: the ACK reaches the unit through the stand-in UART, and the unit
        # takes it: its outbox no longer holds the ALARM (so no more retransmissions)
        assert (await drv.report())["pending_alarms"] == 1
        gw.ack(alarm.frame)
        try:
            async with asyncio.timeout(scaled(3.0)):
                while (report := await drv.report())["pending_alarms"] != 0:
                    pass
        except TimeoutError:
            raise AssertionError("the unit still holds the ALARM after the ACK") from None
        # the supervisor feeds the watchdog on its tick (every 100-500 ms)
        try:
            async with asyncio.timeout(scaled(3.0)):
                while True:
                    report = await drv.report()
                    if any(feeds for _, feeds in report["wdts"]):
                        break
        except TimeoutError:
            raise AssertionError("the unit never fed its watchdog") from None
    except AssertionError as exc:
        await drv.stop()
        raise AssertionError(f"{exc}\n--- micropython:\n" + "\n".join(drv.lines)) from None
    finally:
        await drv.stop()
        gw.close()
        os.close(master)
    assert gw.rejects == []
    assert gw.of(MsgType.FAULT) == []  # the tamper switch reads shut: no tamper FAULT
    assert report["uarts"] == [
        {"id": 1, "baudrate": 115200, "tx": 17, "rx": 16, "rxbuf": 512, "txbuf": 512, "timeout": 0}
    ]
    assert len(report["wdts"]) == 1
    wdt_timeout, feeds = report["wdts"][0]
    assert wdt_timeout == FAST["wdt_ms"]
    assert feeds > 0  # the supervisor feeds it
    assert report["pads"][str(unit.pins["button"])] == [IN, PULL_UP, BOTH_EDGES]
    assert report["pads"][str(unit.pins["led"])][0] == OUT
