"""`campusguard report`: figures checked against a hand-built history in a real journal."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.cli.main import main
from gateway.dutyroom.report import duration, month_window, monthly, per_site, render
from gateway.journal.store import insert_event
from tests.duty.helpers import open_db, post, register

SH = ZoneInfo("Asia/Shanghai")
MONTH = "2026-02"
MONTH_S = 28 * 86400.0


def t(day: int, h: int = 0, mi: int = 0, s: int = 0, mo: int = 2) -> float:
    return datetime(2026, mo, day, h, mi, s, tzinfo=SH).timestamp()


def incident(
    conn: sqlite3.Connection,
    iid: str,
    kind: str,
    at: float,
    *,
    ack: float | None = None,
    cancelled: bool = False,
    disposition: str | None = None,
    unit: str = "shop",
    site: str = "school",
    presses: int = 1,
) -> None:
    conn.execute(
        "INSERT INTO incidents(id, site, unit, place, kind, first_press_at, received_at, presses, "
        "state, cancelled_at, police_ack_at, disposition, last_epoch, last_seq) "
        "VALUES (?, ?, ?, 'somewhere', ?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
        (
            iid,
            site,
            unit,
            kind,
            at,
            at + 0.1,
            presses,
            "police_ack" if ack is not None else "open",
            at + 5 if cancelled else None,
            None if ack is None else at + ack,
            disposition,
        ),
    )


def event(
    conn: sqlite3.Connection,
    kind: str,
    at: float,
    *,
    unit: str | None = None,
    post_id: str | None = None,
    q: int | None = None,
    code: int | None = None,
    site: str = "school",
    **detail: object,
) -> None:
    insert_event(
        conn,
        at=at,
        site=site,
        unit=unit,
        post=post_id,
        kind=kind,
        code=code,
        qualifier=q,
        detail=json.dumps(detail),
    )


def answered(
    conn: sqlite3.Connection,
    missed: float,
    rungs: int,
    acked: float,
    via: str,
    by: str,
    overdue_min: float,
    **detail: object,
) -> None:
    """A missed check-in at the gate at ``missed`` (``detail``: its own), the first
    ``rungs`` steps of its ladder five minutes apart from then, and its acknowledgement at
    ``acked`` (``via``, ``by``, ``overdue_min`` minutes after the check-in was due)."""
    event(conn, "missed_checkin", missed, post_id="gate", q=1, code=102, **detail)
    for i, step in enumerate(("prompt_guard", "security_lead", "police")[:rungs]):
        event(conn, "escalation", missed + 5 * 60 * i, post_id="gate", step=step)
    event(
        conn,
        "acknowledged",
        acked,
        post_id="gate",
        q=3,
        code=102,
        via=via,
        by=by,
        minutes_overdue=overdue_min,
    )


@pytest.fixture
def history(db_path: Path) -> Path:
    """February 2026 at a school, by hand; the expected figures are in the tests."""
    conn = open_db(db_path)
    # alarms: 6 in the month, one just before it, one at another site
    incident(conn, "a", "panic", t(2, 10), ack=30, disposition="genuine", presses=3)
    incident(conn, "b", "panic", t(3, 9), ack=50, cancelled=True, disposition="false_alarm")
    incident(conn, "c", "medical", t(10, 14), ack=90, disposition="genuine", unit="home")
    incident(conn, "d", "duress", t(11, 2), ack=20, disposition="genuine", unit="guard")
    incident(conn, "e", "silent", t(12, 8), cancelled=True)
    incident(conn, "g", "panic", t(28, 23, 59, 59), ack=70, disposition="test")
    incident(conn, "before", "panic", t(31, 23, 59, mo=1), ack=5)
    incident(conn, "elsewhere", "fire", t(5, 5), ack=10, site="other", unit="x")
    # the shop: offline since January, back 02:00 on the 1st; out 1.5 h on the 5th; dead at the end
    event(conn, "offline", t(31, 20, mo=1), unit="shop", q=1, code=381)
    event(conn, "online", t(1, 2), unit="shop", q=3, code=381)
    event(conn, "offline", t(5, 10), unit="shop", q=1, code=381)
    event(conn, "online", t(5, 11, 30), unit="shop", q=3, code=381)
    event(conn, "offline", t(28, 23), unit="shop", q=1, code=381)
    event(conn, "low_battery", t(6, 1), unit="shop", q=1, code=302)
    event(conn, "low_battery", t(7, 1), unit="shop", q=3, code=302)
    event(conn, "low_battery", t(20, 1), unit="shop", q=1, code=302)
    event(conn, "tamper", t(8, 15), unit="shop", q=1, code=383)
    event(conn, "tamper", t(8, 15, 5), unit="shop", q=3, code=383)
    for d in (1, 2, 3):
        event(conn, "test", t(d, 3), unit="shop", q=1, code=602, test="periodic")
    event(conn, "test", t(4, 3), unit="shop", q=1, code=601, test="manual")
    event(conn, "test_failed", t(2, 3), unit="shop", q=1, code=307)
    event(conn, "test_missing", t(25, 4), unit="shop", q=1, code=354)
    event(conn, "watchdog_reset", t(9, 4), unit="home", q=1, code=305)
    # the guard post on the 5th and later
    for m in (0, 50, 100, 150):
        event(conn, "checkin", t(5, 1, m % 60) + (m // 60) * 3600, post_id="gate", status="on_time")
    event(conn, "checkin", t(5, 5), post_id="gate", status="on_time", duress=True)
    event(conn, "checkin", t(5, 6, 2), post_id="gate", status="late", minutes_late=2.0)
    event(conn, "checkin", t(6, 6, 2), post_id="gate", status="late", minutes_late=2.0)
    event(conn, "checkin", t(7, 12), post_id="gate", status="off_duty")
    answered(conn, t(5, 7, 5), 2, t(5, 7, 12), "checkin", "guard", 12.0, minutes_overdue=5.0)
    answered(conn, t(9, 3, 5), 3, t(9, 3, 17), "duty_ack", "Lead Li", 17.0)
    event(conn, "missed_checkin", t(31, 23, mo=1), post_id="gate", q=1, code=102)  # January
    conn.close()
    return db_path


def config():  # type: ignore[no-untyped-def]
    return register([post([{"days": "mon-sun", "start": "00:00", "end": "24:00"}])])


def test_monthly_figures(history: Path) -> None:
    conn = sqlite3.connect(history)
    data = monthly(conn, MONTH, SH, config=config(), now=t(1, mo=4))
    conn.close()
    assert data["from"] == "2026-02-01 00:00" and data["to"] == "2026-03-01 00:00"
    sites = per_site(data)
    assert set(sites) == {"school", "other"}
    s = sites["school"]
    assert s["name"] == "Test Boarding School"
    assert s["alarms"] == {
        "total": 6,
        "by_kind": {"duress": 1, "medical": 1, "panic": 3, "silent": 1},
        "presses": 8,
        "police_acked": 5,
        "not_acked": 1,
        "ack_median_s": 50.0,
        "ack_worst_s": 90.0,
        "ack_worst_incident": "c",
        "cancelled": 2,
        "false_alarms": 1,
        "genuine": 3,
        "tests": 1,
        "test_mode_alarms": 0,
    }
    units = {u["unit"]: u for u in s["units"]}
    assert list(units) == ["shop", "home", "guard"]
    shop = units["shop"]
    assert shop["offline_s"] == 2 * 3600 + 1.5 * 3600 + 3600
    assert shop["availability"] == round(1 - 4.5 * 3600 / MONTH_S, 6)
    assert shop["offline"] == 2
    assert (shop["low_battery"], shop["tamper"], shop["mains_lost"]) == (2, 1, 0)
    assert (shop["tests"], shop["manual_tests"], shop["test_failed"], shop["test_missing"]) == (
        3,
        1,
        1,
        1,
    )
    assert shop["alarms"] == 4 and shop["place"] == "Shop at the gate"
    assert units["home"]["availability"] == 1.0 and units["home"]["watchdog_reset"] == 1
    assert units["home"]["alarms"] == 1
    (gate,) = s["duty"]
    assert gate == {
        "post": "gate",
        "place": "North gate post",
        "due": 9,
        "on_time": 5,
        "late": 2,
        "missed": 2,
        "compliance": round(5 / 9, 4),
        "escalations": 5,
        "by_step": {"prompt_guard": 2, "security_lead": 2, "police": 1},
        "acknowledged_by_checkin": 1,
        "acknowledged_by_duty": 1,
        "worst_overdue_min": 17.0,
        "duress_checkins": 1,
        "off_duty_checkins": 1,
    }
    assert sites["other"]["alarms"]["by_kind"] == {"fire": 1}


def test_availability_counts_only_what_the_journal_observed(history: Path) -> None:
    conn = sqlite3.connect(history)
    # asked in the middle of the month: 4.5 h offline? no: only up to "now"
    data = monthly(conn, MONTH, SH, now=t(15))
    shop = next(u for u in per_site(data)["school"]["units"] if u["unit"] == "shop")
    assert shop["offline_s"] == 3.5 * 3600
    assert shop["availability"] == round(1 - 3.5 * 3600 / (14 * 86400), 6)
    # a month before the journal began: nothing observed
    empty = monthly(conn, "2025-06", SH, now=t(15))
    assert empty["observed_from"] is None
    assert all(u["availability"] is None for s in empty["sites"] for u in s["units"])
    conn.close()


def test_markdown_month(history: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "boards.yaml"
    cfg.write_text(Path("boards.yaml").read_text())
    rc = main(["report", "--month", MONTH, "--db", str(history), "--tz", "Asia/Shanghai"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "# CampusGuard monthly report 2026-02" in out
    assert "| gate | 9 | 5 | 2 | 2 | 55.56 % | 5 (2 / 2 / 1) | 1 / 1 | 17.0 min | 1 |" in out
    assert "median 50 s, worst 1 min 30 s (c)" in out
    assert (
        f"| shop |  | {(1 - 4.5 * 3600 / MONTH_S) * 100:.3f} % | 4 h 30 min | 2 | 2 | 1 | 0 |"
        in out
    )


def test_csv_and_json_month(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "report",
        "--month",
        MONTH,
        "--db",
        str(history),
        "--tz",
        "Asia/Shanghai",
        "--site",
        "school",
    ]
    assert main([*base, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["site"] for s in data["sites"]] == ["school"]
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    got = {(r["section"], r["subject"], r["metric"]): r["value"] for r in rows}
    assert got[("duty", "gate", "missed")] == "2"
    assert got[("duty", "gate", "escalations_police")] == "1"
    assert got[("alarms", "panic", "count")] == "3"
    assert got[("alarms", "", "ack_median_s")] == "50.0"
    assert got[("units", "shop", "offline_s")] == str(4.5 * 3600)


def test_daily_duty_log(history: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "day.md"
    base = ["report", "--day", "2026-02-05", "--db", str(history), "--tz", "Asia/Shanghai"]
    rc = main([*base, "-o", str(out_file)])
    assert rc == 0 and capsys.readouterr().out == ""
    text = out_file.read_text()
    assert "### Post gate: 7 check-ins due, 5 on time, 1 late, 1 missed, 2 escalations" in text
    assert "| 05:00:00 | checkin | on time, DURESS |" in text
    assert "| 06:02:00 | checkin | late (2.0 min) |" in text
    assert "| 07:10:00 | escalation | security_lead" in text
    assert "| 07:12:00 | acknowledged | by guard via checkin, 12.0 min overdue |" in text
    assert "| 10:00:00 | shop | unit silent: supervision lost | E381 |" in text
    assert "| 11:30:00 | shop | unit heard again: supervision restored | R381 |" in text
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert sum(1 for r in rows if r["kind"] == "checkin") == 6
    # the daily log lists the other site too, with its alarm
    assert main([*base, "--format", "json"]) == 0
    day = json.loads(capsys.readouterr().out)
    assert per_site(day)["other"]["alarms"][0]["kind"] == "fire"
    assert per_site(day)["other"]["alarms"][0]["police_ack_s"] == 10.0


def test_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history: Path
) -> None:
    assert main(["report", "--month", MONTH, "--db", str(tmp_path / "nope.db")]) == 2
    assert "no journal database at" in capsys.readouterr().err
    (tmp_path / "empty.db").write_bytes(b"")
    assert main(["report", "--month", MONTH, "--db", str(tmp_path / "empty.db")]) == 2
    assert "not a CampusGuard journal" in capsys.readouterr().err
    assert main(["report", "--month", MONTH, "--db", str(history), "--site", "nowhere"]) == 2
    assert "no site 'nowhere'" in capsys.readouterr().err
    assert main(["report", "--month", MONTH, "--db", str(history), "--tz", "Mars/Base"]) == 2
    assert "unknown time zone" in capsys.readouterr().err
    for bad in (["--month", "2026-13"], ["--month", "26-01"], ["--day", "2026-02-30"], []):
        with pytest.raises(SystemExit) as exc:
            main(["report", *bad, "--db", str(history)])
        assert exc.value.code == 2
    assert "is not a day" in capsys.readouterr().err


def test_default_db_is_in_the_state_directory(
    history: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(history.parent))
    assert main(["report", "--month", MONTH, "--tz", "Asia/Shanghai", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["month"] == MONTH
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.chdir(history.parent)
    assert main(["report", "--month", MONTH]) == 2
    assert "var/gateway.db" in capsys.readouterr().err


def test_month_windows_and_durations() -> None:
    w = month_window("2026-12", SH)
    assert w.start == t(1, mo=12) and w.end == datetime(2027, 1, 1, tzinfo=SH).timestamp()
    assert [duration(x) for x in (None, 42, 190, 7500, 90000)] == [
        "-",
        "42 s",
        "3 min 10 s",
        "2 h 05 min",
        "1 d 1 h",
    ]
    with pytest.raises(ValueError):
        render({"report": "monthly"}, "xml")
