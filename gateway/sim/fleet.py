"""A virtual school on this machine: N units (the real firmware), L links, the gateway.

    async with Fleet(workdir, FleetPlan(units=10, links=2), broker_url=url) as fleet:
        unit = fleet.units["shop-02"]
        await unit.press()                         # the button, through the control pty
        ...                                        # police.expect_alarm(unit, within=1.0)

What :class:`Fleet` builds, in this order:

1. a register (boards.yaml) for the plan: units on links round-robin, a guard post with
   its duty post when ``plan.guard_post``; a key per unit (``campusguard keygen`` format);
2. each unit's flash folder: ``provision="mpremote"`` deploys it with
   ``campusguard deploy UNIT --unix-port`` through mpremote to a MicroPython REPL on a
   socat pty (the installer's path; images are cached by unit config + key + firmware,
   so an identical unit is deployed once and copied), ``"fast"`` writes the same files
   directly (:func:`gateway.sim.vboard.prepare_unit_dir`, compiled);
3. one :class:`~gateway.sim.linkrelay.LinkRelay` per link (several units share it, as on an
   RS-485 bus or a radio channel) with an :class:`~gateway.sim.linkrelay.Impairment` and a
   seed; a link may also carry a rogue transmitter (:class:`RogueRadio`);
4. the gateway, in-process with its watchers (``gateway="inprocess"``) or as the
   ``campusguard gateway`` process (``"process"``: it can be SIGKILLed), on a
   :class:`~gateway.core.clock.ScaledClock` when ``clock_speed`` is not 1;
5. every unit's firmware process, started in parallel once the gateway listens.

``async with`` tears everything down in reverse order and never swallows an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.arc.wiring import plan_arc
from gateway.core.broker import BrokerSettings
from gateway.core.clock import Clock, ScaledClock, SystemClock
from gateway.core.config import Config, Link, Unit, load_config
from gateway.core.errors import FleetError, VirtualUnitError
from gateway.flashing.unitfiles import CONFIG_FILE, FIRMWARE_DIR, firmware_files, unit_config
from gateway.security.signkeys import provision_one_room
from gateway.service.assembly import Gateway, Settings
from gateway.service.watchers import build_watchers
from gateway.sim.linkrelay import Impairment, LinkRelay
from gateway.sim.vboard import DEFAULT_HEAPSIZE, VirtualUnit, find_micropython, prepare_unit_dir
from protocol import Codec, Deframer, Frame, ProtocolError
from protocol.keys import read_key, write_new_key

log = logging.getLogger(__name__)

Provision = Literal["fast", "mpremote"]
GatewayMode = Literal["inprocess", "process"]

DEPLOY_TIMEOUT_S = 120.0
PROMPT_TIMEOUT_S = 60.0  # a MicroPython start on a loaded machine; seconds idle
_ROLES = ("shop", "home", "campus")
_PLACES = {
    "shop": "Shop at No. {n} Hexi Road, opposite the east gate",
    "home": "Household {n}, lane behind the west wall",
    "campus": "Campus building {n}, duty desk on the ground floor",
    "guard_post": "North gate guard post (boarding entrance)",
}
_PINS = "{button: 13, tamper: 4, led: 2, buzzer: 15, battery_adc: 34, uart_tx: 17, uart_rx: 16}"
_GUARD_PINS = (
    "{button: 13, checkin: 27, tamper: 4, led: 2, buzzer: 15, battery_adc: 34,"
    " uart_tx: 17, uart_rx: 16}"
)


DUTYROOM = "police"
"""The duty room of a fleet: its key pair shares the fleet's key directory."""


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """What the virtual school looks like; timings as in boards.yaml."""

    units: int = 10
    links: int = 2
    guard_post: bool = True
    gateway_id: str = "demo-gw"
    site: str = "hexi-primary"
    timezone: str = "Asia/Shanghai"
    heartbeat_s: int = 60
    missed_heartbeats: int = 3
    long_press_ms: int = 3000
    cancel_window_s: int = 30
    incident_window_s: int = 120
    test_interval_h: int = 24
    post_id: str = "north-gate"
    checkin_interval_min: int = 60
    grace_min: int = 5
    ladder: tuple[tuple[str, int], ...] = (
        ("prompt_guard", 0),
        ("security_lead", 5),
        ("police", 10),
    )
    baud: int = 115200

    def link_ids(self) -> list[str]:
        """``bus-a``, ``radio-b``, then ``link-c`` ..."""
        named = ["bus-a", "radio-b"]
        return [named[i] if i < 2 else f"link-{chr(ord('a') + i)}" for i in range(self.links)]

    def unit_ids(self) -> list[str]:
        """``guard-01`` (with a guard post), then ``shop-02``, ``home-03``, ``campus-04`` ..."""
        out = []
        first = 2 if self.guard_post else 1
        for i in range(1, self.units + 1):
            if i < first:
                out.append("guard-01")
            else:
                out.append(f"{_ROLES[(i - first) % len(_ROLES)]}-{i:02d}")
        return out


def register_yaml(plan: FleetPlan, ports: Mapping[str, str] | None = None) -> str:
    """boards.yaml for ``plan``; ``ports`` maps link id to its device (default /dev/null)."""
    if plan.units < 1 or plan.links < 1:
        raise FleetError("a fleet needs at least one unit and one link")
    ports = ports or {}
    links = plan.link_ids()
    lines = [
        "# generated by gateway.sim.fleet for a virtual school",
        "version: 1",
        f"gateway: {{id: {plan.gateway_id}, site: {plan.site}, timezone: {plan.timezone}}}",
        "defaults:",
        f"  heartbeat_s: {plan.heartbeat_s}",
        f"  missed_heartbeats: {plan.missed_heartbeats}",
        f"  long_press_ms: {plan.long_press_ms}",
        f"  cancel_window_s: {plan.cancel_window_s}",
        f"  test_interval_h: {plan.test_interval_h}",
        f"  incident_window_s: {plan.incident_window_s}",
        "links:",
    ]
    for lid in links:
        lines.append(f"  - {{id: {lid}, port: '{ports.get(lid, '/dev/null')}', baud: {plan.baud}}}")
    lines += [
        "sites:",
        f"  - id: {plan.site}",
        "    name: Hexi Road Primary School and Kindergarten (boarding)",
        "    address: 88 Hexi Road",
        "    position: [0, 0]",
        "    security_lead: {name: Zhang Wei, phone: '+86 138 0000 0100'}",
        "units:",
    ]
    for i, uid in enumerate(plan.unit_ids()):
        role = uid.split("-")[0]
        role = "guard_post" if role == "guard" else role
        lines += [
            f"  - id: {uid}",
            f"    addr: {256 + i + 1}",
            f"    zone: {i + 1}",
            f"    site: {plan.site}",
            f"    place: '{_PLACES[role].format(n=i + 1)}'",
            f"    owner: 'Holder of {uid}, +86 138 0000 {i + 1:04d}'",
            f"    role: {role}",
            f"    link: {links[i % len(links)]}",
            f"    pins: {_GUARD_PINS if role == 'guard_post' else _PINS}",
            f"    position: {_position(i, plan.units, role)}",
        ]
    if plan.guard_post:
        lines += [
            "posts:",
            f"  - id: {plan.post_id}",
            f"    site: {plan.site}",
            "    unit: guard-01",
            f"    checkin_interval_min: {plan.checkin_interval_min}",
            f"    grace_min: {plan.grace_min}",
            "    shifts:",
            "      - {days: mon-sun, start: '00:00', end: '24:00'}",
            "    escalation:",
            *(f"      - {{step: {s}, after_min: {m}}}" for s, m in plan.ladder),
        ]
    return "\n".join(lines) + "\n"


def _position(i: int, n: int, role: str) -> list[int]:
    """Where unit ``i`` of ``n`` stands on the site plan (metres from the campus centre).

    The guard post is at the campus's north gate; the others on a ring around it.
    """
    if role == "guard_post":
        return [0, 40]
    angle = 2 * math.pi * i / max(1, n)
    return [round(90 * math.sin(angle)), round(-90 * math.cos(angle))]


# ---------------------------------------------------------------------- provisioning


def _firmware_hash() -> str:
    h = hashlib.sha256()
    for rel in firmware_files(FIRMWARE_DIR):
        h.update(str(rel).encode())
        h.update((FIRMWARE_DIR / rel).read_bytes())
    return h.hexdigest()


def deploy_virtual(
    unit_id: str,
    register: Path,
    keydir: Path,
    flash: Path,
    *,
    micropython: str | None = None,
    timeout: float = DEPLOY_TIMEOUT_S,
) -> None:
    """Deploy a unit as an installer does: ``campusguard deploy UNIT --unix-port``.

    The target is the MicroPython unix port with its REPL on a socat pty and its
    filesystem in ``flash`` (blocking; run it in a thread). Raises :class:`FleetError`.
    """
    flash.mkdir(parents=True, exist_ok=True)
    repl = flash.parent / f".{flash.name}.repl"
    with repl_pty(flash, repl, unit_id, micropython):
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "deploy",
            unit_id,
            "--port",
            str(repl),
            "--config",
            str(register),
            "--keydir",
            str(keydir),
            "--unix-port",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            raise FleetError(f"deploy {unit_id}: {res.stderr.strip() or res.stdout.strip()}")
        log.debug("%s: %s", unit_id, res.stdout.strip().splitlines()[0])


@contextlib.contextmanager
def repl_pty(cwd: Path, link: Path, name: str, micropython: str | None = None) -> Iterator[None]:
    """The MicroPython unix port in ``cwd``, its REPL on a pty at ``link``, prompt printed.

    As an ESP32's USB port; stopped on exit. Raises :class:`FleetError` (``name``: whose).
    """
    socat = shutil.which("socat")
    if socat is None:
        raise FleetError("socat is not installed (sudo apt-get install socat)")
    exe = micropython or find_micropython()
    proc = subprocess.Popen(
        [
            socat,
            f"pty,raw,echo=0,link={link}",
            f"EXEC:{exe} -X heapsize=2M,pty,raw,echo=0,stderr,setsid,ctty",
        ],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    held = -1
    try:
        deadline = time.monotonic() + 5.0
        while not link.exists():  # polling a condition (socat made the pty) with a deadline
            if proc.poll() is not None or time.monotonic() > deadline:
                raise FleetError(f"{name}: socat did not make the REPL pty")
            time.sleep(0.01)
        # held open until the end: the pty's last reader closing would hang it up, and
        # socat ends on the hangup before the next one (mpremote) opens it
        held = _wait_for_prompt(name, link, time.monotonic() + PROMPT_TIMEOUT_S)
        yield
    finally:
        if held >= 0:
            os.close(held)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(FileNotFoundError):
            link.unlink()


def _wait_for_prompt(unit_id: str, repl: Path, deadline: float) -> int:
    """Return once the unix port's REPL printed its prompt on ``repl``: the open pty's fd.

    socat makes the pty before MicroPython runs behind it: bytes mpremote sends earlier
    meet a terminal not yet set up (on a loaded machine, 1 deploy in 10 then failed with
    EIO, "could not enter raw repl" or no answer at all).
    """
    fd = os.open(repl, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        seen = b""
        while b">>> " not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                raise FleetError(f"{unit_id}: no MicroPython prompt on {repl}")
            try:
                seen = (seen + os.read(fd, 512))[-16:]
            except OSError as exc:  # EIO: MicroPython ended behind socat
                raise FleetError(f"{unit_id}: MicroPython ended before its prompt: {exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def image_key(unit: Unit, key: bytes) -> str:
    """What makes two deployed flash images identical: unit config, key, firmware."""
    h = hashlib.sha256(json.dumps(unit_config(unit), sort_keys=True).encode())
    h.update(key)
    h.update(_firmware_hash().encode())
    return h.hexdigest()[:20]


def apply_overrides(unit_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Merge test timings the register cannot express (``heartbeat_ms``...) into unit.json."""
    if not overrides:
        return
    path = unit_dir / CONFIG_FILE
    cfg = json.loads(path.read_text())
    cfg.update(overrides)
    path.write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")


def slow_fsync(low_ms: float, high_ms: float, seed: int = 0) -> Callable[[int], None]:
    """An fsync that also takes a random ``low_ms``..``high_ms`` (uniform), as a Pi's SD card.

    A Pi's SD card takes 1-20 ms. The journal calls it in its worker thread, so the wait
    holds the ACKs that wait for the disk, not the event loop.
    """
    rng = random.Random(seed)

    def fsync(fd: int) -> None:
        time.sleep(rng.uniform(low_ms, high_ms) / 1000)
        os.fsync(fd)

    return fsync


# ---------------------------------------------------------------------- the wire


@dataclass(frozen=True, slots=True)
class Heard:
    """One uplink frame as a listener on the link heard it (raw wire bytes, 0x00-ended)."""

    link: str
    sender: str
    wire: bytes
    at: float  # time.monotonic()
    passed: bool  # False: the cable was out (the relay was paused), the gateway never got it


class TappedRelay(LinkRelay):
    """A :class:`LinkRelay` with a receiver on the line: it hears every uplink frame.

    What a scanner on the radio channel (or a probe on the RS-485 pair) would record.
    """

    def __init__(
        self,
        link: str,
        unit_paths: dict[str, str | int],
        impairment: Impairment | None = None,
        seed: int = 0,
    ) -> None:
        """As :class:`LinkRelay`; ``link`` names the link in what is heard."""
        super().__init__(unit_paths, impairment, seed, tap=self._hear)
        self.link = link
        self.heard: list[Heard] = []

    def _hear(self, sender: str, frame: bytes, paused: bool) -> None:
        if sender != "gateway":
            self.heard.append(Heard(self.link, sender, frame, time.monotonic(), not paused))
            del self.heard[:-4096]


class RogueRadio:
    """A transmitter on a shared link that is not a registered unit (or claims to be one)."""

    def __init__(self, link: str) -> None:
        """Open a pty pair; the relay takes :attr:`path` as one more sender."""
        self.link = link
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.sent = 0

    def send(self, wire: bytes) -> None:
        """Put raw bytes on the link (a frame with its 0x00 delimiter, or garbage)."""
        os.write(self._master, wire)
        self.sent += 1

    def drain(self) -> None:
        """Throw away what the gateway sent (downlinks reach every sender on the link)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._master, 4096):
                pass

    def close(self) -> None:
        """Close the pty pair."""
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------- a unit


class FleetUnit:
    """One virtual unit as a test or the demo drives it: press, hold, watch its LED."""

    def __init__(self, spec: Unit, vu: VirtualUnit) -> None:
        """``spec`` is its register entry, ``vu`` the firmware process."""
        self.spec = spec
        self.vu = vu
        self.pressed_at: float | None = None
        """``time.monotonic()`` when the button last went down (what latency counts from)."""
        self.presses: list[float] = []
        self._led_mark = 0
        self._buzzer_mark = 0

    @property
    def id(self) -> str:
        """Register id."""
        return self.spec.id

    @property
    def addr(self) -> int:
        """Wire address."""
        return self.spec.addr

    @property
    def link(self) -> str:
        """The link the unit is wired to."""
        return self.spec.link

    @property
    def led(self) -> str:
        """The LED pattern now."""
        return self.vu.led

    @property
    def buzzer(self) -> str:
        """The buzzer pattern now."""
        return self.vu.buzzer

    @property
    def led_history(self) -> list[str]:
        """Every LED pattern since the first boot."""
        return self.vu.led_history

    @property
    def buzzer_history(self) -> list[str]:
        """Every buzzer pattern since the first boot."""
        return self.vu.buzzer_history

    def __repr__(self) -> str:
        return f"FleetUnit({self.id!r}, addr={self.addr}, link={self.link!r})"

    def mark(self) -> None:
        """From now on, ``expect_led``/``expect_buzzer`` look only at what comes next."""
        self._led_mark = len(self.vu.led_history)
        self._buzzer_mark = len(self.vu.buzzer_history)

    def _down(self) -> None:
        self.mark()
        self.pressed_at = time.monotonic()
        self.presses.append(self.pressed_at)

    async def press(self, down_s: float = 0.08) -> None:
        """One short press: the button goes down (latency counts from here), then up."""
        self._down()
        await self.vu.press()
        await asyncio.sleep(down_s)  # how long a finger stays on the button
        await self.vu.release()

    async def hold(self, seconds: float) -> None:
        """Press and keep the button down ``seconds`` (past long_press_ms: duress)."""
        self._down()
        await self.vu.press()
        await asyncio.sleep(seconds)  # the hold itself
        await self.vu.release()

    async def click(self, times: int, down_s: float = 0.08, up_s: float = 0.15) -> None:
        """``times`` quick presses; latency counts from the first."""
        for i in range(times):
            if i == 0:
                await self.press(down_s)
            else:
                self.presses.append(time.monotonic())
                await self.vu.press()
                await asyncio.sleep(down_s)
                await self.vu.release()
            if i + 1 < times:
                await asyncio.sleep(up_s)

    async def cancel(self, presses: int = 5) -> None:
        """The cancel gesture: a pause (> 700 ms), then 5 quick presses, then a pause.

        Each press of the gesture still goes out as an ALARM; the unit sends CANCEL once
        the burst is followed by its 700 ms pause.
        """
        await asyncio.sleep(0.8)  # the pause that separates the gesture from the alarm
        self.mark()
        for i in range(presses):
            self.presses.append(time.monotonic())
            await self.vu.press()
            await asyncio.sleep(0.08)
            await self.vu.release()
            if i + 1 < presses:
                await asyncio.sleep(0.2)

    async def checkin(self, duress: bool = False) -> None:
        """The guard's check-in button (a guard post); ``duress``: held past long_press_ms."""
        self.mark()
        await self.vu.checkin(duress, long_press_s=self.spec.long_press_ms / 1000 + 0.3)

    async def _expect(self, what: str, state: str, within: float) -> None:
        history = self.vu.led_history if what == "led" else self.vu.buzzer_history
        mark = self._led_mark if what == "led" else self._buzzer_mark
        try:
            # VirtualUnit wakes this condition at every line from the unit's control pty
            await self.vu.wait_until(lambda: state in history[mark:], within, f"{what} {state}")
        except VirtualUnitError:
            raise AssertionError(
                f"{self.id}: {what} never showed {state!r} within {within} s "
                f"(since the last action: {history[mark:]})"
            ) from None

    async def expect_led(self, state: str, within: float = 5.0) -> None:
        """The LED shows ``state`` (now, or at some moment since the last press/check-in)."""
        await self._expect("led", state, within)

    async def expect_buzzer(self, state: str, within: float = 5.0) -> None:
        """The buzzer played ``state`` since the last press/check-in (or plays it now)."""
        await self._expect("buzzer", state, within)

    def shown_since_mark(self) -> tuple[list[str], list[str]]:
        """LED and buzzer patterns since the last press/check-in (a silent unit shows none)."""
        return self.vu.led_history[self._led_mark :], self.vu.buzzer_history[self._buzzer_mark :]

    async def start(self, timeout: float = 15.0) -> None:
        """Power the unit up (boot, epoch stored, link up)."""
        await self.vu.start(timeout)

    async def kill(self) -> None:
        """Cut the power at once (SIGKILL of the firmware)."""
        await self.vu.kill()

    async def reboot(self, timeout: float = 15.0) -> None:
        """Power-cycle: what was pending on flash goes out again after the boot."""
        self.mark()
        await self.vu.restart(timeout)


# ---------------------------------------------------------------------- the gateway


class GatewayProcess:
    """``campusguard gateway`` as a child process: it can be SIGKILLed like a real crash."""

    def __init__(
        self,
        register: Path,
        db: Path,
        keydir: Path,
        broker: BrokerSettings | Sequence[BrokerSettings],
        *,
        clock_speed: float = 1.0,
        log_path: Path | None = None,
        fsync_delay_ms: tuple[float, float] | None = None,
    ) -> None:
        """Nothing runs until :meth:`start`. ``broker``: one, or the nodes of one cluster."""
        nodes = [broker] if isinstance(broker, BrokerSettings) else list(broker)
        self.env = {**os.environ, **nodes[0].environ()}
        self.cmd = [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "-v",
            "gateway",
            "--config",
            str(register),
            "--db",
            str(db),
            "--keydir",
            str(keydir),
            *BrokerSettings.cli_args_of(nodes),
            "--clock-speed",
            str(clock_speed),
            *(
                ["--fsync-delay-ms", f"{fsync_delay_ms[0]:g}:{fsync_delay_ms[1]:g}"]
                if fsync_delay_ms
                else []
            ),
        ]
        self.log_path = log_path or db.with_suffix(".log")
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self, timeout: float = 15.0) -> None:
        """Start the service and wait for its ``ready`` log line (links and journal up)."""
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self.starts += 1
        self._reader = asyncio.create_task(self._read(self.proc), name="gateway-log")
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            await self.kill()
            raise FleetError(
                f"the gateway did not get ready in {timeout} s (see {self.log_path})"
            ) from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        with self.log_path.open("ab") as out:
            async for line in proc.stderr:
                out.write(line)
                out.flush()
                if b" ready: " in line:
                    self.ready.set()

    async def _wait(self) -> int:
        if self.proc is None:
            return 0
        code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: the gateway dies mid-whatever (no offline status, no clean close)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self._wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (the service says offline and closes the journal)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await self._wait()
            except TimeoutError:
                await self.kill()
        await self._wait()


# ---------------------------------------------------------------------- the fleet


@dataclass
class _Started:
    gateway: Gateway | None = None
    task: asyncio.Task[None] | None = None
    process: GatewayProcess | None = None
    relays: dict[str, TappedRelay] = field(default_factory=dict)


class Fleet:
    """Units, links, gateway: one async context manager."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        plan: FleetPlan | None = None,
        *,
        broker_url: str | BrokerSettings | Sequence[BrokerSettings],
        impairment: Impairment | Mapping[str, Impairment] | None = None,
        seed: int = 0,
        provision: Provision = "fast",
        image_cache: str | os.PathLike[str] | None = None,
        keydir: str | os.PathLike[str] | None = None,
        firmware: Mapping[str, Any] | None = None,
        install_test: bool = True,
        gateway: GatewayMode = "inprocess",
        clock_speed: float = 1.0,
        heapsize: str = DEFAULT_HEAPSIZE,
        prefix: str = "campusguard",
        rogues: Sequence[str] = (),
        concurrency: int = 8,
        arc: Sequence[str] = (),
        arc_key_file: str | os.PathLike[str] | None = None,
        fsync_delay_ms: tuple[float, float] | None = None,
    ) -> None:
        """Describe the fleet; :meth:`start` (or ``async with``) builds and runs it.

        ``firmware``: keys merged into every unit.json (timings the register cannot
        express, e.g. ``heartbeat_ms`` for a unit living on the accelerated clock).
        ``keydir``: reuse keys there (missing ones are made). ``rogues``: link ids that
        carry a :class:`RogueRadio`. ``arc``: ``--arc`` URLs of a receiving centre
        (in-process gateway only), with ``arc_key_file`` for a single one.
        ``fsync_delay_ms``: each journal fsync also takes a random (low, high) ms, as on
        a Pi's SD card (:func:`slow_fsync`).
        """
        self.dir = Path(workdir)
        self.plan = plan or FleetPlan()
        if isinstance(broker_url, str):
            self.brokers = [BrokerSettings.from_url(broker_url)]
        elif isinstance(broker_url, BrokerSettings):
            self.brokers = [broker_url]
        else:
            self.brokers = list(broker_url)  # the nodes of one cluster, in order
        self.broker = self.brokers[0]
        links = self.plan.link_ids()
        if isinstance(impairment, Impairment) or impairment is None:
            self.impairments = {lid: impairment or Impairment() for lid in links}
        else:
            self.impairments = {lid: impairment.get(lid, Impairment()) for lid in links}
        self.seed = seed
        self.provision = provision
        self.image_cache = Path(image_cache) if image_cache else self.dir / "images"
        self.keydir = Path(keydir) if keydir else self.dir / "keys"
        self.firmware = dict(firmware or {})
        self.install_test = install_test
        self.gateway_mode = gateway
        self.clock_speed = clock_speed
        self.clock: Clock = ScaledClock(clock_speed) if clock_speed != 1.0 else SystemClock()
        self.heapsize = heapsize
        self.prefix = prefix
        self.concurrency = concurrency
        self.arc = tuple(arc)
        if self.arc and gateway != "inprocess":
            raise FleetError("arc: only with the in-process gateway")
        self.arc_key_file = Path(arc_key_file) if arc_key_file else None
        self.fsync_delay_ms = fsync_delay_ms
        self.register = self.dir / "boards.yaml"
        self.db = self.dir / "var" / "gateway.db"
        self.units: dict[str, FleetUnit] = {}
        self.rogues: dict[str, RogueRadio] = {lid: RogueRadio(lid) for lid in rogues}
        self.config: Config | None = None
        self.timings: dict[str, float] = {}
        """Seconds each phase of :meth:`start` took (keys, provision, relays, gateway, units)."""
        self._s = _Started()

    # ------------------------------------------------------------------ accessors

    @property
    def gateway(self) -> Gateway:
        """The in-process gateway (``gateway="inprocess"``)."""
        if self._s.gateway is None:
            raise FleetError("no in-process gateway running")
        return self._s.gateway

    @property
    def gateway_process(self) -> GatewayProcess:
        """The gateway process (``gateway="process"``)."""
        if self._s.process is None:
            raise FleetError("no gateway process")
        return self._s.process

    @property
    def relays(self) -> dict[str, TappedRelay]:
        """Link id -> its relay (impairment, ``paused``, ``stats``, ``heard``)."""
        return self._s.relays

    def unit(self, uid: str) -> FleetUnit:
        """A unit by id."""
        return self.units[uid]

    def on_link(self, link: str) -> list[FleetUnit]:
        """The units wired to ``link``."""
        return [u for u in self.units.values() if u.link == link]

    @property
    def guard(self) -> FleetUnit:
        """The guard post's unit."""
        for u in self.units.values():
            if u.spec.role == "guard_post":
                return u
        raise FleetError("this fleet has no guard post")

    def key(self, uid: str) -> bytes:
        """A unit's key (the harness knows them all; the rogue does not)."""
        return read_key(self.keydir, uid)

    def heard(self, unit: str | None = None) -> list[tuple[Heard, Frame]]:
        """Uplink frames heard on every link, decoded with the register's keys."""
        if self.config is None:
            return []
        keys = {u.addr: self.key(u.id) for u in self.config.units.values()}
        codec = Codec(keys, gateway=True)
        out = []
        for relay in self.relays.values():
            for h in list(relay.heard):
                if unit is not None and h.sender != unit:
                    continue
                for raw in Deframer().feed(b"\x00" + h.wire):
                    try:
                        out.append((h, codec.decode(raw)))
                    except ProtocolError:
                        continue
        return out

    def rejects(self) -> Counter[str]:
        """The in-process gateway's reject counters by reason."""
        return self.gateway.receiver.rejects()

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Fleet:
        """Build and start everything."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Tear down (never swallows the exception)."""
        await self.stop()

    async def start(self) -> None:
        """Keys, register, unit folders, relays, gateway, units (in that order)."""
        t = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.register.write_text(register_yaml(self.plan))
        config = load_config(self.register)
        for uid in config.units:
            if not (self.keydir / f"{uid}.key").exists():
                write_new_key(self.keydir, uid)
        provision_one_room(self.keydir, config.gateway_id, DUTYROOM)
        self.timings["keys"] = time.monotonic() - t

        t = time.monotonic()
        await self._provision(config)
        self.timings["provision"] = time.monotonic() - t

        t = time.monotonic()
        for uid, spec in config.units.items():
            vu = VirtualUnit(self.dir / "units" / uid, heapsize=self.heapsize, name=uid)
            self.units[uid] = FleetUnit(spec, vu)
        for i, lid in enumerate(self.plan.link_ids()):
            paths: dict[str, str | int] = {u.id: u.vu.link_path for u in self.on_link(lid)}
            if lid in self.rogues:
                paths["rogue"] = self.rogues[lid].path
            relay = TappedRelay(lid, paths, self.impairments[lid], seed=self.seed * 1000 + i)
            await relay.start()
            self._s.relays[lid] = relay
        ports = {lid: r.gateway_path for lid, r in self.relays.items()}
        self.register.write_text(register_yaml(self.plan, ports))
        self.config = load_config(self.register)
        self.timings["relays"] = time.monotonic() - t

        t = time.monotonic()
        await self.start_gateway()
        self.timings["gateway"] = time.monotonic() - t

        t = time.monotonic()
        sem = asyncio.Semaphore(self.concurrency)

        async def boot(u: FleetUnit) -> None:
            async with sem:
                await u.start()

        await asyncio.gather(*(boot(u) for u in self.units.values()))
        self.timings["units"] = time.monotonic() - t
        log.info(
            "fleet up: %d units on %d links (%s)",
            len(self.units),
            len(self.relays),
            ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()),
        )

    async def _provision(self, config: Config) -> None:
        units_dir = self.dir / "units"
        units_dir.mkdir(parents=True, exist_ok=True)
        fw_cache = self.dir / "fw-cache"
        fw_cache.mkdir(exist_ok=True)
        if self.provision == "fast":
            for uid, spec in config.units.items():
                prepare_unit_dir(
                    units_dir / uid,
                    spec,
                    self.key(uid),
                    overrides={"baud": config.links[spec.link].baud, **self.firmware},
                    compiled=True,
                    cache=fw_cache,
                    install_test=self.install_test,
                )
            return
        sem = asyncio.Semaphore(max(1, min(self.concurrency, 6)))

        async def one(spec: Unit) -> None:
            async with sem:
                await asyncio.to_thread(self._deploy_one, spec)

        await asyncio.gather(*(one(spec) for spec in config.units.values()))

    def _deploy_one(self, spec: Unit) -> None:
        image = self.image_cache / image_key(spec, self.key(spec.id))
        if not image.exists():
            tmp = image.with_name(image.name + f".{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            deploy_virtual(spec.id, self.register, self.keydir, tmp)
            with contextlib.suppress(OSError):
                tmp.rename(image)  # another fleet may have deployed the same image meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        target = self.dir / "units" / spec.id
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(image, target)
        if not self.install_test:
            (target / "install.test").unlink(missing_ok=True)
        apply_overrides(target, self.firmware)

    async def start_gateway(self, timeout: float = 15.0) -> None:
        """Start the gateway (again) on the same journal; return when it is ready."""
        if self.config is None:
            raise FleetError("start the fleet first")
        if self.gateway_mode == "process":
            if self._s.process is None:
                self._s.process = GatewayProcess(
                    self.register,
                    self.db,
                    self.keydir,
                    self.brokers,
                    clock_speed=self.clock_speed,
                    log_path=self.dir / "gateway.log",
                    fsync_delay_ms=self.fsync_delay_ms,
                )
            self.db.parent.mkdir(parents=True, exist_ok=True)
            await self._s.process.start(timeout)
            return
        links = {lid: Link(lid, r.gateway_path, self.plan.baud) for lid, r in self.relays.items()}
        settings = Settings(
            db_path=self.db,
            keydir=self.keydir,
            broker=self.broker,
            more_brokers=tuple(self.brokers[1:]),
            links=links,
            prefix=self.prefix,
            clock=self.clock,
            arc=plan_arc(self.config, self.keydir, self.arc, self.arc_key_file)
            if self.arc
            else None,
            fsync=slow_fsync(*self.fsync_delay_ms) if self.fsync_delay_ms else os.fsync,
        )
        gw = Gateway(self.config, settings)
        gw.attach(build_watchers(self.config, gw.outlet, gw.store, gw.clock))
        self._s.gateway = gw
        self._s.task = asyncio.create_task(gw.run(), name="gateway")
        ready = asyncio.ensure_future(gw.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._s.task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if self._s.task.done():
                self._s.task.result()  # raises what the gateway raised
            raise FleetError(f"the gateway did not get ready in {timeout} s")

    async def stop_gateway(self) -> None:
        """Stop the gateway cleanly (SIGTERM for the process)."""
        if self._s.process is not None:
            await self._s.process.stop()
            return
        gw, task = self._s.gateway, self._s.task
        self._s.gateway, self._s.task = None, None
        if gw is not None and task is not None:
            gw.stop()
            await task

    async def kill_gateway(self) -> None:
        """SIGKILL the gateway process (``gateway="process"`` only)."""
        await self.gateway_process.kill()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Until the in-process gateway is connected to the broker."""
        async with asyncio.timeout(timeout):
            await self.gateway.relay.connected.wait()

    def unplug(self, link: str) -> None:
        """Pull the link's cable: nothing passes either way until :meth:`plug`."""
        self.relays[link].paused = True

    def plug(self, link: str) -> None:
        """Put the cable back."""
        self.relays[link].paused = False

    async def stop(self) -> None:
        """Units off, gateway stopped, relays closed; the folder stays for a post-mortem."""
        errors: list[BaseException] = []

        async def quiet(coro: Any) -> None:
            try:
                await coro
            except Exception as exc:  # teardown goes on; the first error is raised at the end
                errors.append(exc)

        await asyncio.gather(*(quiet(u.vu.stop()) for u in self.units.values()))
        await quiet(self.stop_gateway())
        for relay in self.relays.values():
            await quiet(relay.stop())
        self._s.relays.clear()
        for rogue in self.rogues.values():
            rogue.close()
        if errors:
            raise FleetError(f"teardown: {errors[0]!r}") from errors[0]


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (nearest-rank), of latencies in seconds."""
    if not samples_s:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    xs = sorted(samples_s)

    def rank(p: float) -> float:
        i = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 1)) - 1))
        return xs[i] * 1000

    return {
        "p50": round(rank(0.50), 1),
        "p99": round(rank(0.99), 1),
        "max": round(xs[-1] * 1000, 1),
    }
