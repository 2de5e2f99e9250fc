"""The gateway's own clock: ``clock_unsynced`` when the kernel says so or the clock reads
earlier than the journal; alarms still go out at once. Real SQLite journal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Config
from gateway.journal.store import Store
from gateway.service.watchers import build_watchers
from gateway.watch.clockwatch import CHECK_EVERY_S, ClockWatch, kernel_synced
from protocol import Alarm, AlarmKind
from tests.duty.helpers import RecordingOutlet, register
from tests.gateway.conftest import Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto

T = 1_796_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gateway.db", fsync=lambda fd: None)
    yield s
    s.close()


def journal_event_at(store: Store, at: float) -> None:
    with store.transaction():
        store.add_event(
            at=at,
            site="school",
            kind="online",
            unit="shop",
            post=None,
            code=381,
            qualifier=3,
            detail="{}",
        )


class Kernel:
    """What adjtimex would say, settable."""

    def __init__(self, synced: bool | None) -> None:
        self.synced = synced

    def __call__(self) -> bool | None:
        return self.synced


def watch(
    config: Config, store: Store, kernel: Kernel | None = None
) -> tuple[ClockWatch, RecordingOutlet]:
    outlet = RecordingOutlet()
    return ClockWatch(config, outlet, store, kernel=kernel), outlet


def test_a_clock_behind_the_journal_is_unsynced_until_it_catches_up(store: Store) -> None:
    """A Pi that booted without an RTC and without time sync reads 2026-01-01 or so."""
    journal_event_at(store, T)
    w, outlet = watch(register(), store)
    w.tick(T - 86400 * 30)
    assert [(e["kind"], e["code"], e["qualifier"]) for e in outlet.events] == [
        ("clock_unsynced", 626, 1)
    ]
    detail = outlet.events[0]["detail"]
    assert detail["behind_s"] == 86400 * 30 and detail["journal_latest"] == T
    assert json.loads(store.meta_get("clock") or "{}")["synced"] is False
    assert not w.synced
    for k in range(1, 10):
        w.tick(T - 86400 * 30 + k * CHECK_EVERY_S)
    assert len(outlet.events) == 1  # once, not every minute
    w.tick(T + 5)  # time sync stepped the clock forward
    assert [(e["kind"], e["qualifier"]) for e in outlet.events][-1] == ("clock_unsynced", 3)
    assert w.synced and json.loads(store.meta_get("clock") or "{}")["synced"] is True


def test_a_step_back_while_running_is_seen(store: Store) -> None:
    w, outlet = watch(register(), store)
    w.tick(T)
    w.tick(T + 100)
    assert outlet.events == []
    w.tick(T + 10)  # 90 s back
    assert [e["qualifier"] for e in outlet.events] == [1]


def test_the_kernel_says_unsynchronised(store: Store) -> None:
    kernel = Kernel(False)
    w, outlet = watch(register(), store, kernel)
    w.tick(T)
    assert outlet.events[0]["detail"]["kernel_synced"] is False
    kernel.synced = True
    w.tick(T + 1)  # not asked again before the next check
    assert len(outlet.events) == 1
    w.tick(T + CHECK_EVERY_S)
    assert [e["qualifier"] for e in outlet.events] == [1, 3]


def test_a_synchronised_kernel_outweighs_a_journal_stamped_in_the_future(store: Store) -> None:
    journal_event_at(store, T + 3600)  # written by a clock that was ahead
    w, outlet = watch(register(), store, Kernel(True))
    w.tick(T)
    assert outlet.events == []


def test_a_restart_does_not_raise_it_twice(store: Store) -> None:
    journal_event_at(store, T)
    first, _ = watch(register(), store)
    first.tick(T - 3600)
    again, outlet2 = watch(register(), store)
    again.tick(T - 3500)
    assert outlet2.events == []
    again.tick(T + 1)
    assert [e["qualifier"] for e in outlet2.events] == [3]


def test_kernel_synced_reads_adjtimex() -> None:
    assert kernel_synced() in (True, False, None)


async def test_alarms_still_go_out_at_once_with_an_unsynced_clock(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=4)
    clock = ManualClock(T)
    async with running_gateway(site, broker, clock=clock) as gw:
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, clock))
        await gw.relay.connected.wait()
        await site.port.wait_ack(unit.send(Alarm(AlarmKind.PANIC, 1, 5)))
        await police.wait_for(lambda: bool(police.alarms()))
    early = ManualClock(T - 7 * 86400)  # the next boot: no RTC, no time sync yet
    async with running_gateway(site, broker, clock=early) as gw:
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, early))
        await gw.relay.connected.wait()
        await police.wait_for(lambda: bool(police.events("clock_unsynced")))
        ev = police.events("clock_unsynced")[0]
        assert ev["code"] == 626 and ev["qualifier"] == 1 and ev["unit"] is None
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 9000))
        await site.port.wait_ack(frame)
        await police.wait_for(lambda: len(police.alarms()) == 2)
