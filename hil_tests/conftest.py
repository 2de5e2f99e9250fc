"""Hardware-in-the-loop harness: whole units, the real gateway, a real broker, the police.

Options (in the spirit of Espressif's pytest-embedded):

    --port PORT        a real unit's USB serial port (repeatable, or 'A|B'); with it the
                       scenarios that a real board can play run on the boards
    --unit UNIT        the register id of the unit on each --port (same order)
    --jig-gpio LINE    the Pi's GPIO line wired across each unit's button (same order;
                       'gpiochip0:17' or a sysfs number '17'); without it the harness
                       presses through the unit's REPL (see hil_tests/README.md)
    --hil-config PATH  the register of the real units (default boards.yaml)
    --hil-keydir DIR   their keys (default keys/)
    --hil-unix-uart PTY  the harness's own test: each --port is a MicroPython unix port's
                       REPL on a pty, and this pty its board's UART (same order)

LED and buzzer checks a real board leaves to a person are recorded as "not checked" and
the scenario goes on; the run ends with a summary of what was checked and what was not.

Without --port every scenario runs on virtual boards: MicroPython processes running the
real firmware, each deployed through ``campusguard deploy`` (mpremote) once per distinct
unit image for the session, each with its own pty link; units share links through
:class:`gateway.sim.fleet.TappedRelay`, as on an RS-485 bus or a radio channel.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.core.broker import BrokerSettings
from gateway.core.config import load_config
from gateway.security.brokerconfig import Accounts
from gateway.sim.fleet import DUTYROOM, Fleet, FleetPlan, FleetUnit
from gateway.sim.localbroker import LocalBroker
from gateway.sim.police import Police
from hil_tests.realboard import LEDGER, RealRig, RealUnit, real_rig_options
from tests.support.timing import TIME_SCALE

# One register for every virtual scenario: small timings so each runs in seconds. Every
# module builds its fleet from this plan (or fewer units of it), so the flash images are
# the same across modules and each is deployed through mpremote once per session.
HIL_PLAN = FleetPlan(
    units=10,
    links=2,
    guard_post=True,
    gateway_id="hil-gw",
    heartbeat_s=10,
    missed_heartbeats=3,
    long_press_ms=1500,
    cancel_window_s=10,
    incident_window_s=10,
    checkin_interval_min=5,
    grace_min=1,
    ladder=(("prompt_guard", 0), ("security_lead", 1), ("police", 2)),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("campusguard-hil", "CampusGuard hardware-in-the-loop")
    group.addoption("--port", action="append", default=[], help="a real unit's serial port")
    group.addoption("--unit", action="append", default=[], help="register id per --port")
    group.addoption(
        "--jig-gpio", action="append", default=[], help="GPIO line across each unit's button"
    )
    group.addoption("--hil-config", default="boards.yaml", help="register of the real units")
    group.addoption("--hil-keydir", default="keys", help="key directory of the real units")
    group.addoption(
        "--hil-unix-uart",
        action="append",
        default=[],
        help="the harness's self-test: --port is a MicroPython unix port REPL, this its UART",
    )


def _split(values: list[str]) -> list[str]:
    return [p for v in values for p in v.split("|") if p]


@pytest.fixture(scope="session")
def real_boards(request: pytest.FixtureRequest) -> list[tuple[str, str, str | None]]:
    """(port, unit, jig line) per real board; empty: virtual boards."""
    return real_rig_options(
        _split(request.config.getoption("--port")),
        _split(request.config.getoption("--unit")),
        _split(request.config.getoption("--jig-gpio")),
    )


@pytest.fixture(autouse=True)
def _ledger_scenario(request: pytest.FixtureRequest) -> None:
    """Checks a real board leaves to a person are recorded against this scenario."""
    LEDGER.scenario = request.node.nodeid


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """What the run checked and what it did not (LED and buzzer on real boards, scenarios
    that need a virtual board's powers)."""
    stats = terminalreporter.stats
    reports = [r for key in ("passed", "failed", "skipped", "error") for r in stats.get(key, [])]
    # the HIL scenarios only (make test runs tests/ in the same session)
    reports = [
        r
        for r in reports
        if r.nodeid.startswith("hil_tests/") and (r.when == "call" or r.outcome != "passed")
    ]
    if not reports:
        return
    real = bool(config.getoption("--port"))
    tr = terminalreporter
    tr.section("CampusGuard HIL: what was checked" + (" on real boards" if real else ""))
    seen: set[str] = set()
    for r in reports:
        if r.nodeid in seen:
            continue
        seen.add(r.nodeid)
        name = r.nodeid.split("::")[-1]
        if r.outcome == "skipped":
            reason = r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr)
            tr.write_line(f"NOT RUN      {name}: {reason.removeprefix('Skipped: ')}")
            continue
        missing = LEDGER.of(r.nodeid)
        verdict = "CHECKED" if r.outcome == "passed" else "FAILED"
        if missing and r.outcome == "passed":
            verdict = "CHECKED BUT"
        tr.write_line(f"{verdict:<12} {name}")
        for what in missing:
            tr.write_line(f"  not checked: {what}")
    outcomes = [r.outcome for r in {r.nodeid: r for r in reports}.values()]
    tr.write_line(
        f"{outcomes.count('passed')} scenarios ran to the end, "
        f"{len(outcomes) - outcomes.count('passed') - outcomes.count('skipped')} failed, "
        f"{outcomes.count('skipped')} not run; {len(LEDGER.not_checked)} checks left to a person"
    )


@pytest.fixture
def virtual_only(real_boards: list[tuple[str, str, str | None]]) -> None:
    """Skip a scenario that needs powers a real board does not give the harness."""
    if real_boards:
        pytest.skip("needs virtual-only powers (SIGKILL of a unit, an impaired link, a clock)")


@pytest.fixture(scope="session")
def hil_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session folder: one key directory and one image cache for every virtual fleet."""
    root = tmp_path_factory.mktemp("hil")
    (root / "keys").mkdir()
    (root / "images").mkdir()
    return root


def _real_gateway(request: pytest.FixtureRequest) -> dict[str, list[str]]:
    """The real boards' register's gateway, which needs a broker account too."""
    path = request.config.getoption("--hil-config", default=None)
    if not request.config.getoption("--port", default=None) or not path:
        return {}
    return {load_config(path).gateway_id: ["+"]}


def fleet_for(
    root: Path, name: str, broker_url: str | BrokerSettings, plan: FleetPlan = HIL_PLAN, **kw: Any
) -> Fleet:
    """A virtual fleet for one module, deployed through mpremote (images shared)."""
    return Fleet(
        root / name,
        plan,
        broker_url=broker_url,
        provision="mpremote",
        image_cache=root / "images",
        keydir=root / "keys",
        **kw,
    )


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalBroker]:
    """A private Mosquitto per module (persistent: a restart keeps sessions), locked down
    as broker-config writes it (TLS, a user per client, the ACL)."""
    accounts = Accounts(
        gateways={HIL_PLAN.gateway_id: ["+"], **_real_gateway(request)},
        dutyrooms={DUTYROOM: ["+"]},
    )
    with LocalBroker(tmp_path_factory.mktemp("mqtt"), persistent=True, accounts=accounts) as b:
        yield b


@dataclass
class VirtualRig:
    """A fleet and the police, handing each scenario units nobody used yet."""

    fleet: Fleet
    police: Police
    used: set[str] = field(default_factory=set)

    async def take(self, link: str | None = None) -> FleetUnit:
        """A fresh (never pressed) non-guard unit, on ``link`` if given."""
        for u in self.fleet.units.values():
            if u.id in self.used or u.spec.role == "guard_post":
                continue
            if link is not None and u.link != link:
                continue
            self.used.add(u.id)
            return u
        raise RuntimeError("the fleet has no unused unit left: raise HIL units")


Rig = VirtualRig | RealRig
Unit = FleetUnit | RealUnit


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(
    hil_root: Path,
    broker: LocalBroker,
    real_boards: list[tuple[str, str, str | None]],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Rig]:
    """The module's units, gateway and police: virtual by default, real with --port."""
    keydir = Path(request.config.getoption("--hil-keydir")) if real_boards else hil_root / "keys"
    police = Police(
        broker.settings(f"dutyroom-{DUTYROOM}"),
        keydir=keydir,
        dutyroom=DUTYROOM,
        identifier=f"police-{request.module.__name__}",
        time_scale=TIME_SCALE,
    )
    await police.start()
    try:
        if real_boards:
            real = RealRig(
                real_boards,
                Path(request.config.getoption("--hil-config")),
                Path(request.config.getoption("--hil-keydir")),
                broker,
                police,
                hil_root / "real",
                unix_uarts=_split(request.config.getoption("--hil-unix-uart")),
            )
            async with real:
                yield real
            return
        opts = getattr(request.module, "FLEET", {})
        name = request.module.__name__.rsplit(".", 1)[-1]
        fleet = fleet_for(hil_root, name, broker.settings(f"gateway-{HIL_PLAN.gateway_id}"), **opts)
        police.clock = fleet.clock.now  # acks dated on the fleet's (perhaps faster) clock
        t0 = time.monotonic()
        async with fleet:
            if fleet.gateway_mode == "inprocess":
                await fleet.wait_connected()
            await police.wait_for(
                lambda: len(police.events("test")) >= len(fleet.units), 20, "installation tests"
            )
            print(f"\nfleet {fleet.dir.name}: up in {time.monotonic() - t0:.1f} s {fleet.timings}")
            yield VirtualRig(fleet, police)
    finally:
        await police.stop()
