"""``first_press_at`` from the unit's uptime: never a 2^32 ms cycle (49.7 days) off.

The incident book runs on a real SQLite journal; a unit is modelled as a boot instant on
the gateway's clock and an uptime counter that may drift against it. Heartbeats give the
gateway the boot estimate exactly as the pipeline takes it (``received_at - uptime_s``,
whole seconds).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.dutyroom.report import monthly
from gateway.journal.store import Store
from gateway.pipeline.incidents import IncidentBook
from protocol import Alarm, AlarmKind, Frame
from tests.gateway.conftest import Site, make_site

U32 = 1 << 32
SH = ZoneInfo("Asia/Shanghai")


@dataclass
class Unit:
    """A unit that booted at ``boot`` (gateway time) and whose ms counter runs ``1 + drift``."""

    boot: float
    drift: float = 0.0

    def uptime_ms(self, t: float) -> int:
        return math.floor((t - self.boot) * 1000.0 * (1.0 + self.drift))

    def heartbeat_uptime_s(self, t: float) -> int:
        return self.uptime_ms(t) // 1000


@pytest.fixture
async def book_site(tmp_path: Path) -> AsyncIterator[tuple[Site, Store, IncidentBook]]:
    site = make_site(tmp_path)
    store = Store(site.db, fsync=lambda fd: None)
    book = IncidentBook(store, site.config, prefix="campusguard", event=lambda **kw: None)
    yield site, store, book
    store.close()
    site.port.close()


def press(
    site: Site, store: Store, book: IncidentBook, unit: Unit, pressed: float, received: float
) -> dict[str, object]:
    """The unit pressed at ``pressed`` (gateway time); its ALARM arrives at ``received``."""
    cfg = site.config.units["shop-a"]
    press_ms = unit.uptime_ms(pressed) % U32
    seq = int(received * 10) % 60000
    frame = Frame(cfg.addr, 1, seq, Alarm(AlarmKind.PANIC, 1, press_ms))
    with store.transaction():
        iid = book.on_alarm(cfg, frame, frame.body, received, "bus-a")  # type: ignore[arg-type]
    row = store.conn.execute(
        "SELECT payload FROM outbox WHERE incident = ? ORDER BY id DESC", (iid,)
    ).fetchone()
    return dict(json.loads(row[0]))


def heartbeat(site: Site, store: Store, unit: Unit, at: float) -> None:
    """What the pipeline does with a HEARTBEAT received at ``at``."""
    cfg = site.config.units["shop-a"]
    with store.transaction():
        store.boot_set(cfg.addr, 1, at - unit.heartbeat_uptime_s(at))


def close_all(store: Store, book: IncidentBook) -> None:
    """Close what is open, so that the next press opens an incident of its own."""
    store.conn.execute("UPDATE incidents SET state = 'closed'")
    book.reload()


def ts(text: object) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=SH).timestamp()


def test_press_just_after_a_heartbeat_is_not_a_cycle_early(
    book_site: tuple[Site, Store, IncidentBook],
) -> None:
    """The live case: the boot estimate is ~1 s late, press_ms lies ahead of the uptime."""
    site, store, book = book_site
    unit = Unit(boot=T0 - 3600.999)  # the heartbeat rounds 3600.999 s of uptime down to 3600
    heartbeat(site, store, unit, T0)
    msg = press(site, store, book, unit, pressed=T0 + 0.2, received=T0 + 0.25)
    assert msg["first_press_source"] == "unit_uptime"
    lead = ts(msg["received_at"]) - ts(msg["first_press_at"])
    assert 0.0 <= lead <= 5.0, lead
    # never earlier than the real press beyond the estimate's error (1 s rounding)
    assert ts(msg["first_press_at"]) >= T0 + 0.2 - 1.0


def test_press_across_the_2_32_wrap(book_site: tuple[Site, Store, IncidentBook]) -> None:
    """Uptime past 2^32 ms: press_ms has wrapped to a small value."""
    site, store, book = book_site
    unit = Unit(boot=T0 - U32 / 1000.0 - 10.4)  # 10.4 s past the wrap at the heartbeat
    heartbeat(site, store, unit, T0)
    msg = press(site, store, book, unit, pressed=T0 + 5.0, received=T0 + 5.05)
    assert ts(msg["first_press_at"]) == pytest.approx(T0 + 5.0, abs=1.0)
    close_all(store, book)
    # and a press just before the wrap, received just after it
    unit2 = Unit(boot=T0 + 100 - U32 / 1000.0 + 0.3)  # wraps at T0 + 100.3
    heartbeat(site, store, unit2, T0 + 99.0)
    msg = press(site, store, book, unit2, pressed=T0 + 100.1, received=T0 + 100.6)
    assert ts(msg["first_press_at"]) == pytest.approx(T0 + 100.1, abs=1.0)
    assert ts(msg["first_press_at"]) <= ts(msg["received_at"])


@pytest.mark.parametrize("drift", [-200e-6, 200e-6])
def test_press_with_clock_drift(book_site: tuple[Site, Store, IncidentBook], drift: float) -> None:
    """A unit's crystal 200 ppm off, 40 days after boot, heartbeats every 60 s."""
    site, store, book = book_site
    unit = Unit(boot=T0 - 40 * 86400.0, drift=drift)
    for k in range(-5, 1):
        heartbeat(site, store, unit, T0 + 60.0 * k)
    for delay in (0.1, 3.0, 59.0):
        msg = press(site, store, book, unit, pressed=T0 + delay, received=T0 + delay + 0.05)
        first, received = ts(msg["first_press_at"]), ts(msg["received_at"])
        assert first <= received
        assert first == pytest.approx(T0 + delay, abs=2.0), (drift, delay)
        close_all(store, book)


def test_first_press_never_after_received(book_site: tuple[Site, Store, IncidentBook]) -> None:
    site, store, book = book_site
    unit = Unit(boot=T0 - 1000.9)
    heartbeat(site, store, unit, T0)
    # the unit's counter says 1.5 s after the estimate: allowed, but clamped to received_at
    msg = press(site, store, book, unit, pressed=T0 + 1.0, received=T0 + 0.1)
    assert ts(msg["first_press_at"]) <= ts(msg["received_at"])
    assert msg["first_press_source"] == "unit_uptime"


def test_monthly_report_counts_a_press_after_a_heartbeat_in_its_month(
    book_site: tuple[Site, Store, IncidentBook],
) -> None:
    site, store, book = book_site
    unit = Unit(boot=T0 - 86400 * 3 - 0.95)
    heartbeat(site, store, unit, T0)
    press(site, store, book, unit, pressed=T0 + 0.1, received=T0 + 0.2)
    report = monthly(store.conn, "2026-12", SH, config=site.config, now=T0 + 60)
    alarms = report["sites"][0]["alarms"]
    assert alarms["total"] == 1
    previous = monthly(store.conn, "2026-10", SH, config=site.config, now=T0 + 60)
    assert all(s["alarms"]["total"] == 0 for s in previous["sites"])
