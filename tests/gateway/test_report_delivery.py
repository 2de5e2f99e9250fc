"""The monthly report on the 30th: the timer's calendar (checked by systemd-analyze), the
stated period, delivery to a folder and to the outbox (retained, signed), and the gateway's
own downtime and the major situations in it; all on a fixed clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.dutyroom.delivery import deliver
from gateway.dutyroom.report import due_period, period_window
from gateway.journal.store import Store
from gateway.security.envelope import parse, verify
from gateway.security.signkeys import gateway_kid, read_public, write_pair
from tests.gateway.conftest import Police, Site, running_gateway
from tests.patrol.helpers import register
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

ROOT = Path(__file__).resolve().parents[2]
TIMER = ROOT / "systemd" / "campusguard-report.timer"
SERVICE = ROOT / "systemd" / "campusguard-report.service"
CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
TZ = ZoneInfo("Asia/Shanghai")


def local(*args: int) -> float:
    return datetime(*args, tzinfo=TZ).timestamp()  # type: ignore[misc]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_timer_fires_on_the_30th_and_on_the_last_day_of_february() -> None:
    calendars = re.findall(r"^OnCalendar=(.+)$", TIMER.read_text(), re.M)
    assert calendars == ["*-*-30 06:00:00 Asia/Shanghai", "*-02~01 06:00:00 Asia/Shanghai"]
    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            "--base-time=2026-12-31 00:00:00 UTC",
            "--iterations=13",
            *calendars,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    when = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", result.stdout)
    # 06:00 in Shanghai is 22:00 UTC the day before
    fired = sorted(
        {
            datetime.fromisoformat(w + "+00:00").astimezone(TZ).date()
            for w in when
            if w < "2028-12-31"
        }
    )
    months = [(d.year, d.month) for d in fired]
    assert len(months) == len(set(months))  # once a month, never twice
    for d in fired:
        assert d.day == (30 if d.month != 2 else (29 if d.year % 4 == 0 else 28)), d
    assert date(2027, 2, 28) in fired and date(2028, 2, 29) in fired
    assert date(2027, 3, 30) in fired and date(2027, 1, 30) in fired
    assert all(datetime.fromisoformat(w).hour == 22 for w in when)


def test_the_timer_starts_the_delivering_service() -> None:
    service = SERVICE.read_text()
    assert "Unit=campusguard-report.service" in TIMER.read_text()
    assert "Persistent=true" in TIMER.read_text()  # a run missed while off runs at boot
    assert re.search(r"^ExecStart=\S+ report --period --deliver ", service, re.M)
    # the journal's owner: the same dynamic user as the gateway
    gateway = (ROOT / "systemd" / "campusguard-gateway.service").read_text()
    for unit in (service, gateway):
        assert "User=campusguard" in unit and "StateDirectory=campusguard" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_report_units_verify_without_any_warning(tmp_path: Path) -> None:
    for src in (TIMER, SERVICE):
        text = src.read_text().replace("/opt/campusguard/.venv/bin/campusguard", CAMPUSGUARD)
        (tmp_path / src.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("now", "period"),
    [
        ((2027, 3, 30, 6, 0), "2027-03"),
        ((2027, 3, 31, 12, 0), "2027-03"),
        ((2027, 3, 29, 23, 59), "2027-02"),
        ((2027, 2, 28, 6, 0), "2027-02"),
        ((2027, 2, 27, 6, 0), "2027-01"),
        ((2028, 2, 29, 6, 0), "2028-02"),
        ((2028, 2, 28, 6, 0), "2028-01"),
        ((2027, 1, 5, 6, 0), "2026-12"),
    ],
)
def test_the_period_due_on_a_fixed_clock(now: tuple[int, ...], period: str) -> None:
    assert due_period(local(*now), TZ) == period


def test_periods_cover_every_day_once() -> None:
    w = period_window("2027-03", TZ)
    assert (w.start, w.end) == (local(2027, 2, 28), local(2027, 3, 30))
    w = period_window("2027-02", TZ)
    assert (w.start, w.end) == (local(2027, 1, 30), local(2027, 2, 28))
    months = [f"{y}-{m:02d}" for y in (2027, 2028) for m in range(1, 13)]
    for a, b in itertools.pairwise(months):
        assert period_window(a, TZ).end == period_window(b, TZ).start


def _journal(tmp_path: Path) -> tuple[Path, Path]:
    """A journal with the gateway's life, a police rung and events around the period."""
    db, keydir = tmp_path / "gw.db", tmp_path / "keys"
    write_pair(keydir, gateway_kid("gw-test"))
    store = Store(db)
    rows = [
        # (at, kind, unit, route, detail)
        (local(2027, 2, 27, 12), "gateway_start", "gw-test", None, {"down_s": 60.0}),
        (
            local(2027, 3, 3, 8),
            "gateway_start",
            "gw-test",
            None,
            {"down_since": local(2027, 3, 3, 7, 35), "down_s": 1500.0, "clean": False},
        ),
        (local(2027, 3, 10, 9), "broker_lost", "gw-test", None, {}),
        (local(2027, 3, 10, 9, 2), "broker_back", "gw-test", None, {"outage_s": 120.0}),
        (
            local(2027, 3, 29, 23),
            "patrol_escalation",
            None,
            "run",
            {"step": "police", "action": "No patrol round on route run"},
        ),
        (local(2027, 3, 30, 0, 30), "broker_lost", "gw-test", None, {}),
    ]
    with store.transaction():
        for at, kind, unit, route, detail in rows:
            store.add_event(
                at=at,
                site="school",
                kind=kind,
                unit=unit,
                post=None,
                code=None,
                qualifier=None,
                detail=json.dumps(detail),
                route=route,
            )
    store.close()
    return db, keydir


def test_delivery_to_a_folder_and_retained_in_the_outbox(tmp_path: Path) -> None:
    db, keydir = _journal(tmp_path)
    out = tmp_path / "reports"
    now = local(2027, 3, 30, 6)
    done = deliver(db, register(), "2027-03", TZ, out, keydir=keydir, prefix="campusguard", now=now)
    assert sorted(p.name for p in done.files) == [
        "campusguard-gw-test-2027-03.csv",
        "campusguard-gw-test-2027-03.json",
        "campusguard-gw-test-2027-03.md",
    ]
    data = json.loads((out / "campusguard-gw-test-2027-03.json").read_text())
    assert data["from"] == "2027-02-28 00:00" and data["to"] == "2027-03-30 00:00"
    assert data["covers"].startswith("2027-02-28 to 2027-03-29")
    g = data["gateway"]
    # 27 February and 30 March are outside the period
    assert (g["starts"], g["unclean_ends"], g["downtime_s"]) == (1, 1, 1500.0)
    assert (g["broker_outages"], g["broker_outage_s"]) == (1, 120.0)
    assert [m["what"] for m in data["major"]] == ["gateway offline", "police called"]
    md = (out / "campusguard-gw-test-2027-03.md").read_text()
    assert "## Major situations" in md and "25 min" in md and "Covers 2027-02-28" in md
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT topic, payload, retain, sent_at FROM outbox").fetchall()
    conn.close()
    assert [(r[0], r[2], r[3]) for r in rows] == [("campusguard/school/report/2027-03", 1, None)]
    key = read_public(keydir / f"{gateway_kid('gw-test')}.pub")
    body = verify(rows[0][0], parse(rows[0][1].encode()), key)
    assert body["gateway"] == "gw-test" and body["period"] == "2027-03"
    assert body["site"]["site"] == "school" and body["gateway_life"]["downtime_s"] == 1500.0
    # a second run replaces the files and queues the month again (retained: the latest wins)
    deliver(db, register(), "2027-03", TZ, out, keydir=keydir, prefix="campusguard", now=now)
    assert len(list(out.iterdir())) == 3


def test_the_command_delivers_and_a_missing_key_is_one_line(tmp_path: Path) -> None:
    db, keydir = _journal(tmp_path)
    write_pair(keydir, gateway_kid("hx-gw1"))  # the shipped register's gateway
    config = tmp_path / "boards.yaml"
    doc = yaml.safe_load((ROOT / "boards.yaml").read_text())
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "reports"
    base = [CAMPUSGUARD, "report", "--period", "2027-03", "--deliver", str(out)]
    base += ["--config", str(config), "--db", str(db)]
    ok = subprocess.run([*base, "--keydir", str(keydir)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "queued campusguard/hexi-primary/report/2027-03 (retained)" in ok.stdout
    bad = subprocess.run([*base, "--keydir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    nodeliver = subprocess.run(
        [CAMPUSGUARD, "report", "--period", "2027-03", "--deliver", str(out), "--db", str(db)],
        capture_output=True,
        text=True,
    )
    assert nodeliver.returncode == 2 and "--deliver needs --period and --config" in nodeliver.stderr


def test_the_gateway_notices_rows_another_process_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    assert store.changed_elsewhere() is False
    with store.transaction():
        store.enqueue(at=1.0, topic="t/own", payload="{}")
    assert store.changed_elsewhere() is False  # its own commit
    other = sqlite3.connect(tmp_path / "gw.db")
    other.execute(
        "INSERT INTO outbox(created_at, topic, payload, qos, retain) VALUES (2, 't/x', '{}', 1, 1)"
    )
    other.commit()
    other.close()
    assert store.changed_elsewhere() is True
    assert store.changed_elsewhere() is False
    store.close()


async def test_a_running_gateway_publishes_a_delivered_report(
    tmp_path: Path, site: Site, broker: Mosquitto, police: Police
) -> None:
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        done = await asyncio.to_thread(
            deliver,
            site.db,
            site.config,
            "2027-03",
            TZ,
            tmp_path / "reports",
            keydir=site.keydir,
            prefix="campusguard",
            now=time.time(),
        )
        (topic,) = done.topics
        # another process queued it: the gateway notices and publishes it, signed
        await police.wait_for(lambda: any(m.topic == topic for m in police.messages), timeout=10)
        body = next(m.payload for m in police.messages if m.topic == topic)
        assert body["period"] == "2027-03" and body["gateway_life"]["starts"] == 0
        await until(lambda: gw.store.pending_count() == 0)  # PUBACKs are marked in batches
