"""Supervision and guard duty wired into the running gateway (real broker, ptys, SQLite).

The gateway runs on a ManualClock: an hour of duty passes in one call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.core.clock import ManualClock
from gateway.core.config import Unit, load_config
from gateway.service.watchers import build_watchers
from protocol import Checkin, Frame, Heartbeat, HeartbeatFlags, Signal, SignalPattern
from tests.gateway.conftest import SITE, Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
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
        d
        for t, d in police.messages
        if t.startswith(f"campusguard/{SITE}/duty/gate")
        and isinstance(d, dict)
        and (kind is None or d.get("kind") == kind)
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
    config = load_config(Path(__file__).resolve().parents[2] / "boards.yaml")
    assert config.posts and config.timezone == "Asia/Shanghai"
