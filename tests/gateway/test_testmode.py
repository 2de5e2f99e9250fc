"""Test (maintenance) mode: alarms still go out, marked test: true; the report counts them
apart; the mode ends by itself. Real Mosquitto, the gateway in-process, a real journal."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core.clock import ManualClock
from gateway.dutyroom.report import monthly, render
from gateway.journal.store import Store
from gateway.pipeline.testmode import parse_duration, set_mode
from gateway.service.watchers import build_watchers
from protocol import AckState, Alarm, AlarmKind
from tests.gateway.conftest import GATEWAY_ID, SITE, Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
T = 1_767_225_600.0  # 2026-01-01T00:00:00Z (ManualClock's default)


def installer(db: Path, scope: str, target: str, at: float, until_: float) -> None:
    """What `campusguard test-mode` does: its own connection to the live journal."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    set_mode(conn, scope, target, at=at, until=until_, by="installer Chen")
    conn.close()


async def test_alarms_in_test_mode_go_out_marked_and_the_mode_ends_by_itself(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock(T)
    a, b = site.unit("shop-a", epoch=8), site.unit("shop-b", epoch=8)
    async with running_gateway(site, broker, clock=clock) as gw:
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, clock))
        await gw.relay.connected.wait()
        installer(site.db, "unit", "shop-a", T, T + 2 * 3600)
        clock.advance(1)
        await police.wait_for(lambda: bool(police.events("test_mode")))
        begun = police.events("test_mode")[0]
        assert begun["qualifier"] == 1 and begun["unit"] == "shop-a" and begun["code"] == 607
        await site.port.wait_ack(a.send(Alarm(AlarmKind.PANIC, 1, 10)), AckState.RECEIVED)
        await site.port.wait_ack(b.send(Alarm(AlarmKind.PANIC, 1, 10)), AckState.RECEIVED)
        await police.wait_for(lambda: len(police.alarms()) == 2)
        marks = {m["unit"]: m["test"] for m in police.alarms()}
        assert marks == {"shop-a": True, "shop-b": False}  # the police see both, at once
        # two hours later the mode has ended by itself
        clock.advance(2 * 3600)
        await police.wait_for(lambda: len(police.events("test_mode")) == 2)
        assert police.events("test_mode")[1]["qualifier"] == 3
        await site.port.wait_ack(a.send(Alarm(AlarmKind.PANIC, 1, 900_000)))
        await police.wait_for(lambda: len({m["incident"] for m in police.alarms()}) == 3)
        latest = [m for m in police.alarms() if m["incident"] == f"{GATEWAY_ID}-shop-a-8-1"]
        assert latest and latest[0]["test"] is False
        # a whole site
        installer(site.db, "site", SITE, T + 2 * 3600 + 10, T + 3 * 3600)
        clock.advance(20)
        await site.port.wait_ack(b.send(Alarm(AlarmKind.PANIC, 1, 900_000)))
        await police.wait_for(lambda: len({m["incident"] for m in police.alarms()}) == 4)
        assert [m["test"] for m in police.alarms(incident=f"{GATEWAY_ID}-shop-b-8-1")] == [True]
        await until(lambda: gw.store.pending_count() == 0)
        rows = dict(gw.store.conn.execute("SELECT id, test FROM incidents").fetchall())
        assert sorted(rows.values()) == [0, 0, 1, 1]
        report = monthly(gw.store.conn, "2026-01", ZoneInfo("UTC"), now=T + 86400)
    alarms = report["sites"][0]["alarms"]
    assert alarms["total"] == 2 and alarms["test_mode_alarms"] == 2
    assert "in test mode (installers' tests, not counted above): 2" in render(report, "md")


def test_the_command_sets_lists_and_ends_a_mode(tmp_path: Path, site: Site) -> None:
    Store(site.db, fsync=lambda fd: None).close()  # the gateway's journal
    base = [CAMPUSGUARD, "test-mode", "--db", str(site.db), "--config", str(site.config_path)]

    def cg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=60, check=False
        )

    ok = cg("shop-a", "--for", "2h", "--by", "installer Chen")
    assert ok.returncode == 0, ok.stderr
    assert "unit shop-a: test mode until" in ok.stdout
    assert "shop-a" in cg("--list").stdout
    site_mode = cg(SITE, "--for", "30m")
    assert site_mode.returncode == 0 and f"site {SITE}" in site_mode.stdout
    assert cg("shop-a", "--end").stdout.strip() == "unit shop-a: test mode ended"
    assert "shop-a" not in cg("--list").stdout
    for bad, words in (
        (("nowhere", "--for", "2h"), "neither a unit nor a site"),
        (("shop-a", "--for", "2 weeks"), "give a duration like"),
        (("shop-a", "--for", "30d"), "between 1 s and 7 days"),
        (("shop-a",), "give --for DURATION"),
    ):
        res = cg(*bad)
        assert res.returncode == 2 and words in res.stderr, (bad, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [CAMPUSGUARD, "test-mode", "shop-a", "--for", "1h", "--db", str(tmp_path / "no.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no journal at" in missing.stderr


def test_durations() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("90s") == 90
    assert parse_duration("1.5d") == 1.5 * 86400 and parse_duration("30m") == 1800
