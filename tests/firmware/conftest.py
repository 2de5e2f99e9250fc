"""Fixtures for the firmware tests: real MicroPython units on ptys, a gateway end."""

from __future__ import annotations

import asyncio
import os
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import Config, load_config
from gateway.core.errors import VirtualUnitError
from gateway.sim import frozen32
from gateway.sim.vboard import VirtualUnit, prepare_unit_dir
from protocol import Ack, AckState, Codec, Deframer, Frame, MsgType, ProtocolError, Signal
from protocol.keys import TEST_KEY
from tests.support.timing import TIME_SCALE, scaled

ROOT = Path(__file__).resolve().parents[2]

# small timings so a test runs in seconds; the semantics are the same as in service. The
# watchdog's is scaled to the machine: a busy host can starve the firmware process for
# longer than a board's loop ever stalls, and a bite mid-test is not what a test tests
FAST: dict[str, Any] = {
    "heartbeat_ms": 60000,
    "long_press_ms": 1000,
    "stuck_ms": 4000,
    "cancel_window_ms": 10000,
    "incident_window_ms": 3000,
    "battery_poll_ms": 100,
    "wdt_ms": round(1500 * TIME_SCALE),
    "retry_first_ms": 200,
    "retry_cap_ms": 800,
    "boot_spread_ms": 200,
}


@dataclass
class Arrival:
    frame: Frame
    raw: bytes
    at: float


class GatewayEnd:
    """The gateway's side of one unit's UART: decodes what arrives, sends ACK/SIGNAL."""

    def __init__(self, path: str, addr: int, key: bytes = TEST_KEY) -> None:
        self.addr = addr
        self.key = key
        self.codec = Codec({addr: key}, gateway=True)
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.deframer = Deframer()
        self.frames: list[Arrival] = []
        self.rejects: list[ProtocolError] = []
        self.wire = bytearray()
        self.first_byte_at: float | None = None
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)
        self._dl_seq = 0

    def _readable(self) -> None:
        self._read()

    def _read(self) -> bool:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, OSError):
            return False
        now = time.monotonic()
        if data and self.first_byte_at is None:
            self.first_byte_at = now
        self.wire += data
        for raw in self.deframer.feed(data):
            try:
                frame = self.codec.decode(raw)
            except ProtocolError as exc:
                self.rejects.append(exc)
                continue
            self.frames.append(Arrival(frame, raw, now))
        self._event.set()
        return bool(data)

    def mark(self) -> int:
        """The index of the next frame, once every byte in the pty now has been read.

        With the unit's process ended (the harness has then passed on all it wrote), the
        frames from the mark on are the next boot's: ``len(frames)`` alone may be taken
        before the last frames of the ended boot are read.
        """
        while self._read():
            pass
        return len(self.frames)

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)

    def of(self, mtype: MsgType) -> list[Arrival]:
        return [a for a in self.frames if a.frame.type == mtype]

    async def wait(
        self, pred: Callable[[list[Arrival]], bool], timeout: float = 3.0, what: str = ""
    ) -> None:
        """Wait until ``pred(frames)`` holds: ``timeout`` is an idle machine's patience,
        scaled to this one (tests/support/timing.py)."""
        await self._wait(pred, scaled(timeout))

    async def _wait(self, pred: Callable[[list[Arrival]], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self.frames):
                self._event.clear()
                await self._event.wait()

    async def next(
        self,
        mtype: MsgType | None = None,
        timeout: float = 6.0,
        after: int | None = None,
        pred: Callable[[Frame], bool] | None = None,
    ) -> Arrival:
        """The first frame (of ``mtype``, matching ``pred``) at index >= ``after``.

        ``timeout`` is patience, not a bound the firmware must meet: a unit's first frame
        after its process starts took over 5 s on a machine running three suites at once.

        Without ``after``, only frames that arrive from this call on count. A frame the
        unit sends at boot (the first heartbeat, boot_spread_ms after "ready", maybe 0 ms)
        can arrive before make_unit() has returned (~1 in 40 starts on a loaded host): wait
        for it with ``after=0``, or the wait ends only at the next one (60 s with FAST).
        """
        start = len(self.frames) if after is None else after

        def found(frames: list[Arrival]) -> bool:
            return any(
                (mtype is None or a.frame.type == mtype) and (pred is None or pred(a.frame))
                for a in frames[start:]
            )

        try:
            await self.wait(found, timeout)
        except TimeoutError:
            got = [a.frame for a in self.frames[start:]]
            raise AssertionError(f"no {mtype} within {scaled(timeout):.1f} s; got {got}") from None
        return next(
            a
            for a in self.frames[start:]
            if (mtype is None or a.frame.type == mtype) and (pred is None or pred(a.frame))
        )

    async def expect_none(
        self,
        mtype: MsgType,
        within: float,
        pred: Callable[[Frame], bool] | None = None,
        after: int | None = None,
    ) -> None:
        """Expect NO frame of ``mtype`` (matching ``pred``) at index >= ``after`` for
        ``within`` seconds: waits on the arrival event and fails as soon as one arrives."""
        start = len(self.frames) if after is None else after

        def found(frames: list[Arrival]) -> bool:
            return any(
                a.frame.type == mtype and (pred is None or pred(a.frame)) for a in frames[start:]
            )

        try:
            await self._wait(found, within)  # a window, not patience: not scaled
        except TimeoutError:
            return  # none came: as expected
        got = [a.frame for a in self.frames[start:] if a.frame.type == mtype]
        raise AssertionError(f"unexpected {mtype} within {within} s: {got}")

    def send_frame(self, body: Ack | Signal, epoch: int = 1, seq: int | None = None) -> bytes:
        if seq is None:
            self._dl_seq += 1
            seq = self._dl_seq
        wire = self.codec.encode(Frame(self.addr, epoch, seq, body))
        os.write(self.fd, wire)
        return wire

    def ack(self, frame: Frame, state: AckState = AckState.RECEIVED) -> bytes:
        return self.send_frame(Ack(frame.epoch, frame.seq, state))


async def expect_no_output(
    vu: VirtualUnit, bad: Callable[[VirtualUnit], bool], within: float, what: str
) -> None:
    """Expect the unit's LED/buzzer NOT to reach a state (``bad``) for ``within`` seconds:
    waits on the control channel's change event and fails as soon as it does."""
    try:
        await vu.wait_until(lambda: bad(vu), within, what, scaled=False)
    except VirtualUnitError:
        return  # it never happened: as expected
    raise AssertionError(f"unexpected {what}: led {vu.led!r}, buzzer {vu.buzzer!r}")


async def pause_between_bursts(cancel_gap_ms: int) -> None:
    """The user's pause between two bursts of presses, 1.5 x the unit's cancel gap: part
    of the gesture (stimulus timing, like VirtualUnit.click's gaps), not a wait for the
    unit. Tests that need it configure a short cancel_gap_ms so that it stays short."""
    await asyncio.sleep(cancel_gap_ms * 1.5 / 1000)


@pytest.fixture(scope="session")
def register() -> Config:
    return load_config(ROOT / "boards.yaml")


@pytest.fixture(scope="session")
def fw_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fw-cache")


UnitFactory = Callable[..., Awaitable[tuple[VirtualUnit, GatewayEnd]]]

MP64 = "mp64"
"""The PyPI MicroPython (64-bit unix port, modules loaded as .mpy): the default."""
FROZEN32 = "frozen32"
"""``make firmware32``: 32-bit, asyncio and the firmware frozen in (the ESP32's shape)."""
INTERPRETERS = (MP64, FROZEN32)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mp64_only: a virtual-board test that runs on the 64-bit interpreter only"
    )
    config.addinivalue_line(
        "markers", "frozen32_only: a virtual-board test of the 32-bit frozen build only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # the virtual-board suite runs on both interpreters
    if "make_unit" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("frozen32_only"):
        metafunc.parametrize("interp", (FROZEN32,), indirect=True)
    elif not metafunc.definition.get_closest_marker("mp64_only"):
        metafunc.parametrize("interp", INTERPRETERS, indirect=True)


@pytest.fixture(scope="session")
def frozen32_binary() -> Path:
    """The 32-bit frozen interpreter, built once (and cached in build/firmware32); the
    tests skip with one line without a MicroPython source, and fail under CI=true."""
    try:
        return frozen32.ensure()
    except frozen32.Frozen32BuildError as exc:
        if frozen32.in_ci() or frozen32.find_source() is not None:
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def interp(request: pytest.FixtureRequest) -> str:
    """Which interpreter ``make_unit`` runs the firmware on (``mp64`` unless parametrised)."""
    return str(getattr(request, "param", MP64))


@pytest.fixture
async def make_unit(
    tmp_path: Path, register: Config, fw_cache: Path, interp: str, request: pytest.FixtureRequest
) -> AsyncIterator[UnitFactory]:
    made: list[tuple[VirtualUnit, GatewayEnd]] = []
    exe = str(request.getfixturevalue("frozen32_binary")) if interp == FROZEN32 else None

    async def factory(
        unit_id: str = "shop-fruit",
        start: bool = True,
        install_test: bool = False,
        romfs: bool = False,
        **overrides: Any,
    ) -> tuple[VirtualUnit, GatewayEnd]:
        unit = register.units[unit_id]
        folder = prepare_unit_dir(
            tmp_path / unit_id,
            unit,
            TEST_KEY,
            overrides={**FAST, **overrides},
            compiled=True,
            cache=fw_cache,
            install_test=install_test,
            romfs=romfs,
            frozen=exe is not None,
        )
        # the default heap (DEFAULT_HEAPSIZE) is what a unit gets
        vu = VirtualUnit(
            folder, micropython=exe, romfs=False if exe else None, time_scale=TIME_SCALE
        )
        gw = GatewayEnd(vu.link_path, unit.addr)  # opened before the unit talks
        made.append((vu, gw))
        if start:
            await vu.start()
        return vu, gw

    yield factory
    for vu, gw in made:
        gw.close()
        await vu.stop()
