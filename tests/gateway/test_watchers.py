"""Supervision and guard duty wired into the running gateway (real broker, ptys, SQLite).

The gateway runs on a ManualClock: an hour of duty passes in one call.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Unit, load_config
from gateway.core.errors import GatewayError
from gateway.service.assembly import Gateway, Settings
from gateway.service.sdnotify import Notifier
from gateway.service.watchers import WATCHER_FAILURE_LIMIT, GuardedWatcher, build_watchers
from protocol import Checkin, Frame, Heartbeat, HeartbeatFlags, Signal, SignalPattern
from tests.duty.helpers import RecordingOutlet
from tests.gateway.conftest import GATEWAY_USER, SITE, Police, Site, running_gateway
from tests.gateway.test_service import NotifySocket
from tests.support.mosquitto import Mosquitto
from tests.support.register import SHIPPED
from tests.support.timing import scaled

POSTS = """
posts:
  - id: gate
    site: test-school
    unit: guard-n
    checkin_interval_min: 60
    grace_min: 5
    shifts:
      - {days: mon-sun, start: "00:00", end: "24:00"}
    escalation:
      - {step: prompt_guard, after_min: 0}
      - {step: security_lead, after_min: 5}
      - {step: police, after_min: 10}
"""


def duty_messages(police: Police, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        m.payload
        for m in police.messages
        if m.topic.startswith(f"campusguard/{SITE}/duty/gate")
        and isinstance(m.payload, dict)
        and (kind is None or m.payload.get("kind") == kind)
    ]


async def test_missed_checkin_walks_the_ladder_then_checkin_acknowledges(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    site.config_path.write_text(site.config_path.read_text() + POSTS)
    site.config = load_config(site.config_path)
    clock = ManualClock()
    guard = site.unit("guard-n", epoch=4)
    async with running_gateway(site, broker, clock=clock) as gw:
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, clock))
        await gw.relay.connected.wait()
        guard.send(Checkin(0, 1000))
        await police.wait_for(lambda: bool(duty_messages(police, "checkin")))

        clock.advance(65 * 60 + 0.5)  # interval and grace over: missed, prompt the guard
        await police.wait_for(lambda: bool(duty_messages(police, "missed_checkin")))
        await site.port.wait_for(
            lambda: any(
                isinstance(f.body, Signal) and f.body.pattern is SignalPattern.PROMPT_CHECKIN
                for f in site.port.downlinks
            ),
            timeout=5,
        )
        assert not [d for d in duty_messages(police) if d["detail"].get("step") == "police"]

        clock.advance(10 * 60)  # nobody answered: lead at +5, police at +10 min
        await police.wait_for(
            lambda: any(d["detail"].get("step") == "police" for d in duty_messages(police)),
            timeout=5,
        )
        guard.send(Checkin(0, 2000))
        await police.wait_for(lambda: bool(duty_messages(police, "acknowledged")), timeout=5)


class TickCounter:
    """A watcher that only counts the pipeline's ticks, to wait for "a tick has passed"."""

    def __init__(self) -> None:
        self.ticks = 0
        self.changed = asyncio.Event()

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        pass

    def on_link(self, link: str, up: bool, at: float) -> None:
        pass

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        pass

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.changed.set()

    async def wait_ticks(self, n: int) -> None:
        target = self.ticks + n
        async with asyncio.timeout(scaled(5)):
            while self.ticks < target:
                self.changed.clear()
                await self.changed.wait()


async def test_silent_unit_goes_offline_once_and_comes_back(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock()
    shop = site.unit("shop-a", epoch=2)
    ticks = TickCounter()
    async with running_gateway(site, broker, clock=clock) as gw:
        gw.attach([*build_watchers(site.config, gw.outlet, gw.store, clock), ticks])
        await gw.relay.connected.wait()
        await site.port.wait_ack(shop.send(Heartbeat(3700, 10, 0x0100, HeartbeatFlags(0))))
        clock.advance(3 * 60 + 31)  # 3.5 heartbeats of silence at 60 s each
        await police.wait_for(
            lambda: any(d["unit"] == "shop-a" for d in police.events("offline")), timeout=5
        )
        for _ in range(5):  # it stays silent for long: still one event, no storm
            clock.advance(600)
            await ticks.wait_ticks(2)
        await site.port.wait_ack(shop.send(Heartbeat(3700, 20, 0x0100, HeartbeatFlags(0))))
        clock.advance(40)
        await site.port.wait_ack(shop.send(Heartbeat(3700, 60, 0x0100, HeartbeatFlags(0))))
        await police.wait_for(lambda: bool(police.events("online")), timeout=5)
        mine = [d for d in police.events() if d["unit"] == "shop-a"]
        assert [(d["kind"], d["qualifier"]) for d in mine] == [("offline", 1), ("online", 3)]
        # units never heard at all are not installed: a notice, never offline
        offline = sorted(d["unit"] for d in police.events("offline"))
        assert offline == ["shop-a"]
        assert {"guard-n", "shop-b"} <= {d["unit"] for d in police.events("not_installed")}


def test_repo_register_builds_its_watchers(tmp_path: Path) -> None:
    """The committed boards.yaml has a post and a time zone the duty watch accepts."""
    config = load_config(SHIPPED)
    assert config.posts and config.timezone == "Asia/Shanghai"


class Broken:
    """A watcher whose tick raises (as ``DutyWatch.tick`` on a broken table would, five
    times a second) until it is ``fixed``; its frames fail when ``bad_frames``."""

    def __init__(self) -> None:
        self.fixed = False
        self.bad_frames = False
        self.ticks = 0

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        if self.bad_frames:
            raise KeyError(unit.id)

    def on_link(self, link: str, up: bool, at: float) -> None:
        pass

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        pass

    def tick(self, now: float) -> None:
        self.ticks += 1
        if not self.fixed:
            raise RuntimeError("duty table gone")


async def test_a_watcher_whose_tick_raises_is_reported_and_the_service_restarts(
    tmp_path: Path,
    site: Site,
    broker: Mosquitto,
    police: Police,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ns = NotifySocket(tmp_path / "notify.sock")
    # systemd's watchdog every 2 s: a health check every second
    notifier = Notifier({"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "2000000"})
    settings = Settings(db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER))
    broken = Broken()
    gw = Gateway(site.config, settings, watchers=[broken], notifier=notifier)
    caplog.set_level(logging.ERROR, logger="gateway.service.watchers")
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        await police.wait_for(lambda: bool(police.events("watcher_failed")), timeout=10)
        ev = police.events("watcher_failed")[0]
        assert (ev["code"], ev["qualifier"]) == (300, 1)
        detail = ev["detail"]
        assert (detail["watcher"], detail["call"]) == ("Broken", "tick")
        assert detail["failures"] == WATCHER_FAILURE_LIMIT
        assert detail["error"] == "RuntimeError: duty table gone"
        # the health check fails while it keeps failing: the service gives up (systemd
        # restarts it: Restart=on-failure), where it used to report healthy for ever
        with pytest.raises(ExceptionGroup) as failed:
            async with asyncio.timeout(scaled(10)):
                await task
    finally:
        if not task.done():
            task.cancel()
        ns.close()
    assert failed.group_contains(
        GatewayError, match=r"unhealthy 3 times in a row: watcher Broken failing"
    )
    assert not gw.healthy
    assert broken.ticks > WATCHER_FAILURE_LIMIT  # it went on being called
    # counted on every call, logged (with the traceback) once, not five times a second
    lines = [r for r in caplog.records if "watcher Broken failed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None, [r.getMessage() for r in lines]
    assert len(police.events("watcher_failed")) == 1


def test_watcher_guard_counts_reports_once_and_restores(tmp_path: Path) -> None:
    outlet = RecordingOutlet()
    broken = Broken()
    clock = iter(range(0, 10_000, 10))  # 10 s between calls: a log line each minute
    guard = GuardedWatcher(broken, outlet, SITE, limit=3, monotonic=lambda: float(next(clock)))
    guard.tick(1.0)
    guard.tick(2.0)
    assert not guard.failing and outlet.events == []
    guard.tick(3.0)
    assert guard.failing and guard.failures == 3
    for t in range(4, 10):
        guard.tick(float(t))  # still failing: reported once
    assert [(e["kind"], e["code"], e["qualifier"], e["at"]) for e in outlet.events] == [
        ("watcher_failed", 300, 1, 3.0)
    ]
    broken.fixed = True
    guard.tick(10.0)
    assert not guard.failing and guard.failures == 9
    assert [(e["qualifier"], e["at"]) for e in outlet.events][1:] == [(3, 10.0)]
    assert outlet.events[1]["detail"]["failures"] == 9


def test_a_watcher_failing_on_every_frame_fails_although_its_ticks_work() -> None:
    outlet = RecordingOutlet()
    broken = Broken()
    broken.fixed, broken.bad_frames = True, True
    guard = GuardedWatcher(broken, outlet, SITE, limit=3)
    unit = load_config(SHIPPED).units["shop-fruit"]
    hb = Frame(unit.addr, 1, 1, Heartbeat(3700, 1, 0x0100, HeartbeatFlags(0)))
    for i in range(3):
        guard.tick(float(i))  # a working tick between the failing frames
        guard.on_frame(unit, hb, float(i))
    assert guard.failing
    assert [(e["qualifier"], e["detail"]["call"]) for e in outlet.events] == [(1, "frame")]
