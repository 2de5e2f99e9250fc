"""The monthly statistics per site and the daily duty log (``campusguard report``).

The figures come from the journal's shared tables (``incidents`` and ``events``, see
gateway/journal/schema.py), so any gateway database can be reported on, also a copy taken off the
Raspberry Pi. Months and days are calendar months and days in the schools' local time
(``--tz``, default the system's zone). Field meanings are in gateway/README.md, section
"Supervision, guard duty and reports".
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from gateway.core.config import Config
from gateway.core.contact_id import KINDS, NEW, RESTORE, describe
from gateway.core.errors import ReportError
from gateway.service.lifecycle import MAJOR_DOWN_S

FORMATS = ("md", "csv", "json")
ESCALATION_STEPS = ("prompt_guard", "security_lead", "police")
PATROL_STEPS = ("remind_leader", "security_lead", "police")
UNIT_EVENT_COLUMNS = (
    "low_battery",
    "tamper",
    "mains_lost",
    "button_stuck",
    "safe_mode",
    "storage_fault",
    "watchdog_reset",
    "link_lost",
)


# -- what is asked for -------------------------------------------------------------------


def check_month(text: str) -> str:
    """``text`` if it is a month (YYYY-MM), else ValueError saying how to write one."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise ValueError(f"{text!r} is not a month: use YYYY-MM, e.g. 2026-03")
    return text


def check_day(text: str) -> str:
    """``text`` if it is a day (YYYY-MM-DD), else ValueError saying how to write one."""
    try:
        d = date.fromisoformat(text)
    except ValueError:
        d = None
    if d is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) or d.year < 1970:
        raise ValueError(f"{text!r} is not a day: use YYYY-MM-DD")
    return text


def default_db() -> Path:
    """``$STATE_DIRECTORY/gateway.db`` when set (systemd), else ``var/gateway.db``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "gateway.db"
    return Path("var") / "gateway.db"


def report_period(text: str, tz: tzinfo, now: float) -> str:
    """``--period``'s month: ``text`` (YYYY-MM), or the latest one due at ``now`` for "due"."""
    return due_period(now, tz) if text == "due" else check_month(text)


def make_report(
    db: Path,
    tz: tzinfo,
    *,
    config: Config | None = None,
    site: str | None = None,
    month: str | None = None,
    day: str | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    """The report asked for, from the journal at ``db`` (read-only).

    One of ``period`` (the month whose report is due on its 30th), ``month`` (a calendar
    month) or ``day`` (the duty log). ReportError when the journal will not do.
    """
    conn = open_journal(db)
    try:
        if period:
            return monthly(conn, period, tz, config=config, site=site, period=True)
        if month:
            return monthly(conn, month, tz, config=config, site=site)
        if day:
            return daily(conn, day, tz, config=config, site=site)
        raise ReportError("no report asked for: give a month, a day or a period")
    finally:
        conn.close()


def open_journal(path: Path) -> sqlite3.Connection:
    """Open the journal read-only; ReportError when it is missing or not a journal."""
    if not path.is_file():
        raise ReportError(f"no journal database at {path} (give --db PATH)")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot read the journal: {exc}") from exc
    missing = {"events", "incidents"} - names
    if missing:
        conn.close()
        raise ReportError(
            f"{path} is not a CampusGuard journal (no {', '.join(sorted(missing))} table)"
        )
    return conn


# -- time -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A calendar month or day in local time, as UTC seconds ``[start, end)``."""

    label: str
    start: float
    end: float
    tz: tzinfo


def month_window(month: str, tz: tzinfo) -> Window:
    """The local calendar month ``YYYY-MM``."""
    y, m = (int(x) for x in check_month(month).split("-"))
    start = datetime(y, m, 1, tzinfo=tz)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    return Window(month, start.timestamp(), end.timestamp(), tz)


REPORT_DAY = 30
"""The monthly report is due on the 30th (the last day in February): a city's rule."""


def report_day(year: int, month: int) -> date:
    """The day the report of ``year-month`` is due: the 30th, or February's last day."""
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, min(REPORT_DAY, (nxt - timedelta(days=1)).day))


def period_window(month: str, tz: tzinfo) -> Window:
    """The reporting period due in ``YYYY-MM``.

    From the report day of the month before (00:00 local) up to this month's report day
    (00:00), so that every day falls in exactly one period: e.g. 2027-03 is 28 February
    to 29 March, 2027-02 is 30 January to 27 February.
    """
    y, m = (int(x) for x in check_month(month).split("-"))
    end = report_day(y, m)
    start = report_day(y - (m == 1), (m - 2) % 12 + 1)
    return Window(
        month,
        datetime(start.year, start.month, start.day, tzinfo=tz).timestamp(),
        datetime(end.year, end.month, end.day, tzinfo=tz).timestamp(),
        tz,
    )


def due_period(now: float, tz: tzinfo) -> str:
    """The latest period whose report day has come by ``now``: ``YYYY-MM``."""
    today = datetime.fromtimestamp(now, tz).date()
    if today >= report_day(today.year, today.month):
        return f"{today.year:04d}-{today.month:02d}"
    y, m = today.year - (today.month == 1), (today.month - 2) % 12 + 1
    return f"{y:04d}-{m:02d}"


def day_window(day: str, tz: tzinfo) -> Window:
    """The local calendar day ``YYYY-MM-DD``."""
    d = date.fromisoformat(check_day(day))
    start = datetime(d.year, d.month, d.day, tzinfo=tz)
    n = d + timedelta(days=1)
    return Window(
        day, start.timestamp(), datetime(n.year, n.month, n.day, tzinfo=tz).timestamp(), tz
    )


def _local(t: float | None, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz).strftime(fmt)


def duration(seconds: float | None) -> str:
    """A span for people: ``42 s``, ``3 min 10 s``, ``2 h 05 min``, ``1 d 3 h``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


# -- reading ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the ``events`` table."""

    id: int
    at: float
    site: str
    unit: str | None
    post: str | None
    kind: str
    code: int | None
    qualifier: int | None
    detail: Mapping[str, Any]
    route: str | None = None


def _events(conn: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[Event]:
    out = []
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(events)")}
    route = "route" if "route" in columns else "NULL"  # a journal from before patrols
    for row in conn.execute(
        f"SELECT id, at, site, unit, post, kind, code, qualifier, detail, {route} FROM events "
        f"WHERE {where} ORDER BY at, id",
        tuple(params),
    ):
        try:
            detail = json.loads(row[8] or "{}")
        except ValueError:
            detail = {"raw": row[8]}
        out.append(
            Event(
                int(row[0]),
                float(row[1]),
                str(row[2]),
                row[3],
                row[4],
                str(row[5]),
                row[6],
                row[7],
                detail if isinstance(detail, dict) else {"value": detail},
                row[9],
            )
        )
    return out


def _incidents(conn: sqlite3.Connection, w: Window, site: str | None) -> list[dict[str, Any]]:
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM incidents WHERE first_press_at >= ? AND first_press_at < ? "
            + ("AND site = ? " if site else "")
            + "ORDER BY first_press_at, id",
            (w.start, w.end, site) if site else (w.start, w.end),
        ).fetchall()
    finally:
        conn.row_factory = None
    return [dict(r) for r in rows]


def _journal_span(conn: sqlite3.Connection) -> tuple[float | None, float | None]:
    row = conn.execute(
        "SELECT min(t), max(t) FROM (SELECT min(at) AS t FROM events UNION ALL "
        "SELECT max(at) FROM events UNION ALL SELECT min(first_press_at) FROM incidents "
        "UNION ALL SELECT max(first_press_at) FROM incidents)"
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def _sites(
    conn: sqlite3.Connection, config: Config | None, site: str | None, w: Window
) -> list[str]:
    found: list[str] = list(config.sites) if config else []
    for (s,) in conn.execute(
        "SELECT DISTINCT site FROM events WHERE at < ? UNION "
        "SELECT DISTINCT site FROM incidents WHERE first_press_at < ? ORDER BY 1",
        (w.end, w.end),
    ):
        if s not in found:
            found.append(str(s))
    if site is not None:
        if site not in found:
            raise ReportError(f"no site {site!r} in the journal or the register")
        return [site]
    return found


# -- the monthly report -----------------------------------------------------------------


def monthly(
    conn: sqlite3.Connection,
    month: str,
    tz: tzinfo,
    *,
    config: Config | None = None,
    site: str | None = None,
    now: float | None = None,
    period: bool = False,
) -> dict[str, Any]:
    """The monthly statistics for ``month`` (``YYYY-MM``, local time) as plain data.

    With ``period`` the days are the reporting period due on the 30th of ``month``
    (:func:`period_window`), else the calendar month. Availability is measured over the
    part of it that the journal observed: from the later of its start and the journal's
    first record, to the earlier of its end and ``now`` (default: the real time).
    """
    w = period_window(month, tz) if period else month_window(month, tz)
    first, _ = _journal_span(conn)
    now = time.time() if now is None else now
    obs_start = max(w.start, first) if first is not None else w.start
    obs_end = min(w.end, now)
    out: dict[str, Any] = {
        "report": "monthly",
        "month": month,
        "tz": str(tz),
        "from": _local(w.start, tz),
        "to": _local(w.end, tz),
        "observed_from": _local(obs_start, tz) if obs_end > obs_start else None,
        "observed_to": _local(obs_end, tz) if obs_end > obs_start else None,
        "covers": (
            f"{_local(w.start, tz, '%Y-%m-%d')} to "
            f"{_local(w.end - 1, tz, '%Y-%m-%d')} (the report day of the month before to the"
            " day before this month's; report day: the 30th, February's last day)"
            if period
            else "the calendar month"
        ),
        "gateway": _gateway(conn, w, config),
        "sites": [],
    }
    for s in _sites(conn, config, site, w):
        out["sites"].append(_site_month(conn, s, w, config, obs_start, obs_end))
    out["major"] = _major(out, conn, w, site)
    return out


def _gateway(conn: sqlite3.Connection, w: Window, config: Config | None) -> dict[str, Any]:
    """The gateway's own life in the period (gateway/service/lifecycle.py)."""
    where = "kind IN ('gateway_start', 'gateway_stop', 'broker_lost', 'broker_back')"
    where += " AND at >= ? AND at < ?"
    params: tuple[Any, ...] = (w.start, w.end)
    if config is not None:
        where += " AND unit = ?"
        params += (config.gateway_id,)
    events = _events(conn, where, params)
    starts = [e for e in events if e.kind == "gateway_start"]
    downs: list[dict[str, Any]] = [
        {
            "from": _local(float(e.detail["down_since"]), w.tz, "%Y-%m-%d %H:%M:%S"),
            "to": _local(e.at, w.tz, "%Y-%m-%d %H:%M:%S"),
            "down_s": float(e.detail["down_s"]),
            "clean": e.detail.get("clean"),
        }
        for e in starts
        if isinstance(e.detail.get("down_s"), int | float) and "down_since" in e.detail
    ]
    backs = [e for e in events if e.kind == "broker_back"]
    return {
        "starts": len(starts),
        "clean_stops": sum(1 for e in events if e.kind == "gateway_stop"),
        "unclean_ends": sum(1 for e in starts if e.detail.get("clean") is False),
        "downtime_s": round(sum(float(d["down_s"]) for d in downs), 3),
        "down": downs,
        "broker_outages": sum(1 for e in events if e.kind == "broker_lost"),
        "broker_outage_s": round(sum(float(e.detail.get("outage_s", 0)) for e in backs), 3),
    }


def _major(
    data: Mapping[str, Any], conn: sqlite3.Connection, w: Window, site: str | None
) -> list[dict[str, Any]]:
    """Major situations, each reported at once when it happened.

    Duress, the police called by a duty or patrol ladder, the gateway away over 10 min.
    """
    out: list[dict[str, Any]] = []
    for inc in _incidents(conn, w, site):
        if inc["kind"] == "duress" and not inc.get("test"):
            at = float(inc["first_press_at"])
            out.append(
                {"at": at, "time": _local(at, w.tz), "site": inc["site"], "what": "duress",
                 "detail": f"{inc['unit']} at {inc['place']} ({inc['id']})"}
            )  # fmt: skip
    where = "kind IN ('escalation', 'patrol_escalation') AND at >= ? AND at < ?"
    for e in _events(conn, where, (w.start, w.end)):
        if e.detail.get("step") == "police" and (site is None or e.site == site):
            subject = f"post {e.post}" if e.post else f"patrol {e.route}"
            out.append(
                {"at": e.at, "time": _local(e.at, w.tz), "site": e.site,
                 "what": "police called", "detail": f"{subject}: {e.detail.get('action', '')}"}
            )  # fmt: skip
    for d in data["gateway"]["down"]:
        if d["down_s"] > MAJOR_DOWN_S:
            out.append(
                {"at": 0.0, "time": d["from"][:16], "site": None, "what": "gateway offline",
                 "detail": f"{duration(d['down_s'])} ({d['from']} to {d['to']})"}
            )  # fmt: skip
    return sorted(out, key=lambda m: m["time"])


def _site_month(
    conn: sqlite3.Connection,
    site: str,
    w: Window,
    config: Config | None,
    obs_start: float,
    obs_end: float,
) -> dict[str, Any]:
    cfg_site = config.sites.get(site) if config else None
    everything = _incidents(conn, w, site)
    # alarms from units in test (maintenance) mode are counted apart, not as alarms
    incidents = [i for i in everything if not i.get("test")]
    alarms = _alarms(incidents)
    alarms["test_mode_alarms"] = len(everything) - len(incidents)
    events = _events(conn, "site = ? AND at >= ? AND at < ?", (site, w.start, w.end))
    return {
        "site": site,
        "name": cfg_site.name if cfg_site else site,
        "alarms": alarms,
        "units": _units(conn, site, w, config, events, incidents, obs_start, obs_end),
        "duty": _duty(site, config, events),
        "patrol": _patrol(site, config, events),
    }


def _alarms(incidents: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind = Counter(str(i["kind"]) for i in incidents)
    acked = [i for i in incidents if i["police_ack_at"] is not None]
    times = [float(i["police_ack_at"]) - float(i["first_press_at"]) for i in acked]
    worst = max(
        acked, key=lambda i: float(i["police_ack_at"]) - float(i["first_press_at"]), default=None
    )
    dispositions = Counter(str(i["disposition"]) for i in incidents if i["disposition"])
    return {
        "total": len(incidents),
        "by_kind": dict(sorted(by_kind.items())),
        "presses": sum(int(i["presses"]) for i in incidents),
        "police_acked": len(acked),
        "not_acked": len(incidents) - len(acked),
        "ack_median_s": round(statistics.median(times), 3) if times else None,
        "ack_worst_s": round(max(times), 3) if times else None,
        "ack_worst_incident": worst["id"] if worst else None,
        "cancelled": sum(1 for i in incidents if i["cancelled_at"] is not None),
        "false_alarms": dispositions.get("false_alarm", 0),
        "genuine": dispositions.get("genuine", 0),
        "tests": dispositions.get("test", 0),
    }


def _offline_seconds(
    conn: sqlite3.Connection, site: str, unit: str, start: float, end: float
) -> tuple[float, int]:
    """Seconds ``unit`` was reported offline in ``[start, end)``, and offline events in it."""
    if end <= start:
        return 0.0, 0
    before = conn.execute(
        "SELECT kind FROM events WHERE site = ? AND unit = ? AND kind IN ('offline', 'online') "
        "AND at < ? ORDER BY at DESC, id DESC LIMIT 1",
        (site, unit, start),
    ).fetchone()
    down_since: float | None = start if before is not None and before[0] == "offline" else None
    total, count = 0.0, 0
    for kind, at in conn.execute(
        "SELECT kind, at FROM events WHERE site = ? AND unit = ? AND kind IN ('offline', 'online') "
        "AND at >= ? AND at < ? ORDER BY at, id",
        (site, unit, start, end),
    ):
        if kind == "offline":
            count += 1
            if down_since is None:
                down_since = float(at)
        elif down_since is not None:
            total += float(at) - down_since
            down_since = None
    if down_since is not None:
        total += end - down_since
    return total, count


def _units(
    conn: sqlite3.Connection,
    site: str,
    w: Window,
    config: Config | None,
    events: list[Event],
    incidents: list[dict[str, Any]],
    obs_start: float,
    obs_end: float,
) -> list[dict[str, Any]]:
    names: list[str] = [u.id for u in config.units.values() if u.site == site] if config else []
    seen = sorted(
        {e.unit for e in events if e.unit}
        | {str(i["unit"]) for i in incidents}
        | {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT unit FROM events WHERE site = ? AND unit IS NOT NULL AND at < ?",
                (site, w.end),
            )
        }
    )
    names += [u for u in seen if u not in names]
    span = obs_end - obs_start
    rows = []
    for unit in names:
        mine = [e for e in events if e.unit == unit]
        began = Counter(e.kind for e in mine if e.qualifier == NEW)
        offline_s, offline_n = _offline_seconds(conn, site, unit, obs_start, obs_end)
        cfg_unit = config.units.get(unit) if config else None
        tests = [e for e in mine if e.kind == "test"]
        row: dict[str, Any] = {
            "unit": unit,
            "place": cfg_unit.place if cfg_unit else None,
            "availability": round(1 - offline_s / span, 6) if span > 0 else None,
            "offline_s": round(offline_s, 3),
            "offline": offline_n,
            "alarms": sum(1 for i in incidents if i["unit"] == unit),
            "tests": sum(1 for e in tests if e.detail.get("test") != "manual"),
            "manual_tests": sum(1 for e in tests if e.detail.get("test") == "manual"),
            "test_failed": began.get("test_failed", 0),
            "test_missing": began.get("test_missing", 0),
        }
        for kind in UNIT_EVENT_COLUMNS:
            row[kind] = began.get(kind, 0)
        rows.append(row)
    return rows


def _post_ids(site: str, config: Config | None, events: list[Event]) -> list[str]:
    ids = [p.id for p in config.posts.values() if p.site == site] if config else []
    return ids + sorted({e.post for e in events if e.post and e.post not in ids})


def _duty_counts(events: list[Event]) -> dict[str, Any]:
    checkins = [e for e in events if e.kind == "checkin"]
    status = Counter(str(e.detail.get("status")) for e in checkins)
    acks = [e for e in events if e.kind == "acknowledged"]
    steps = Counter(str(e.detail.get("step")) for e in events if e.kind == "escalation")
    on_time, late = status.get("on_time", 0), status.get("late", 0)
    missed = sum(1 for e in events if e.kind == "missed_checkin")
    due = on_time + late + missed
    overdue = [float(e.detail["minutes_overdue"]) for e in acks if "minutes_overdue" in e.detail]
    return {
        "due": due,
        "on_time": on_time,
        "late": late,
        "missed": missed,
        "compliance": round(on_time / due, 4) if due else None,
        "escalations": sum(steps.values()),
        "by_step": {s: steps.get(s, 0) for s in ESCALATION_STEPS},
        "acknowledged_by_checkin": sum(1 for e in acks if e.detail.get("via") == "checkin"),
        "acknowledged_by_duty": sum(1 for e in acks if e.detail.get("via") == "duty_ack"),
        "worst_overdue_min": max(overdue) if overdue else None,
        "duress_checkins": sum(1 for e in checkins + acks if e.detail.get("duress") is True),
        "off_duty_checkins": status.get("off_duty", 0),
    }


def _duty(site: str, config: Config | None, events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for pid in _post_ids(site, config, events):
        post = config.posts.get(pid) if config else None
        unit = config.units.get(post.unit) if config and post else None
        mine = [e for e in events if e.post == pid]
        rows.append({"post": pid, "place": unit.place if unit else None, **_duty_counts(mine)})
    return rows


def _route_ids(site: str, config: Config | None, events: list[Event]) -> list[str]:
    ids = [r.id for r in config.patrols.values() if r.site == site] if config else []
    return ids + sorted({e.route for e in events if e.route and e.route not in ids})


def _patrol_counts(events: list[Event]) -> dict[str, Any]:
    """A route's figures from its patrol events (gateway/watch/patrol.py)."""
    outcome = Counter(
        str(e.detail.get("outcome")) for e in events if e.kind == "patrol_window_close"
    )
    scans = [e for e in events if e.kind == "patrol_scan"]
    status = Counter(str(e.detail.get("status")) for e in scans)
    steps = Counter(str(e.detail.get("step")) for e in events if e.kind == "patrol_escalation")
    acks = [e for e in events if e.kind == "patrol_acknowledged"]
    minutes = [float(e.detail["minutes"]) for e in events if e.kind == "round_complete"]
    due = sum(outcome.values())
    return {
        "due": due,
        "done": outcome.get("done", 0),
        "late": outcome.get("late", 0),
        "missed": outcome.get("missed", 0),
        "compliance": round(outcome.get("done", 0) / due, 4) if due else None,
        "rounds": sum(1 for e in events if e.kind == "round_start"),
        "complete": len(minutes),
        "incomplete": sum(1 for e in events if e.kind == "round_incomplete"),
        "median_round_min": round(statistics.median(minutes), 1) if minutes else None,
        "scans": len(scans),
        "out_of_order": status.get("out_of_order", 0),
        "duress_scans": sum(1 for e in scans if e.detail.get("duress") is True),
        "no_round": sum(1 for e in events if e.kind == "round_missed"),
        "overdue": sum(1 for e in events if e.kind == "round_overdue"),
        "escalations": sum(steps.values()),
        "by_step": {s: steps.get(s, 0) for s in PATROL_STEPS},
        "acknowledged_by_scan": sum(1 for e in acks if e.detail.get("via") == "scan"),
        "acknowledged_by_duty": sum(1 for e in acks if e.detail.get("via") == "patrol_ack"),
    }


def _patrol(site: str, config: Config | None, events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for rid in _route_ids(site, config, events):
        route = config.patrols.get(rid) if config else None
        mine = [e for e in events if e.route == rid]
        rows.append(
            {
                "route": rid,
                "checkpoints": list(route.checkpoints) if route else None,
                **_patrol_counts(mine),
            }
        )
    return rows


# -- the daily duty log -----------------------------------------------------------------


def _summary(e: Event) -> str:
    d = e.detail
    if e.kind == "checkin":
        s = str(d.get("status", "")).replace("_", " ")
        if d.get("minutes_late") is not None:
            s += f" ({d['minutes_late']} min)"
        if d.get("duress"):
            s += ", DURESS"
        return s
    if e.kind == "missed_checkin":
        return f"{d.get('minutes_overdue')} min past due, no check-in"
    if e.kind == "escalation":
        return f"{d.get('step')} ({d.get('minutes_overdue')} min overdue)"
    if e.kind == "acknowledged":
        s = f"by {d.get('by')} via {str(d.get('via', '')).replace('_', ' ')}"
        if d.get("duress"):
            s += ", DURESS"
        return s + f", {d.get('minutes_overdue')} min overdue"
    if e.kind in ("shift_start", "shift_end"):
        return "still owed" if d.get("still_owed_due") else ""
    if e.kind == "patrol_scan":
        s = f"{d.get('checkpoint')} ({d.get('position')}/{d.get('of')}), "
        s += str(d.get("status", "")).replace("_", " ")
        return s + (", DURESS" if d.get("duress") else "")
    if e.kind == "round_complete":
        return f"{d.get('round')} in {d.get('minutes')} min" + (", late" if d.get("late") else "")
    if e.kind == "round_incomplete":
        return f"{d.get('round')}: missing {', '.join(d.get('missing') or [])}"
    if e.kind == "round_overdue":
        since = f"{d.get('minutes_since')} min since {d.get('last_checkpoint')}"
        return f"{since}, next {d.get('expected')}"
    if e.kind == "patrol_escalation":
        return f"{d.get('step')} ({d.get('reason', '').replace('_', ' ')})"
    if e.kind == "patrol_acknowledged":
        via = str(d.get("via", "")).replace("_", " ")
        return f"by {d.get('by')} via {via}, {d.get('minutes_since')} min after"
    if e.kind == "patrol_window_close":
        return f"{d.get('window')}: {d.get('outcome')}"
    text = describe(e.kind)
    known = KINDS.get(e.kind)
    if e.qualifier == RESTORE and (known is None or known.restorable):
        text += " - restored"
    return text


def daily(
    conn: sqlite3.Connection,
    day: str,
    tz: tzinfo,
    *,
    config: Config | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    """The duty log of ``day`` (``YYYY-MM-DD``, local time) as plain data."""
    w = day_window(day, tz)
    out: dict[str, Any] = {"report": "daily", "day": day, "tz": str(tz), "sites": []}
    for s in _sites(conn, config, site, w):
        cfg_site = config.sites.get(s) if config else None
        events = _events(conn, "site = ? AND at >= ? AND at < ?", (s, w.start, w.end))
        duty = [e for e in events if e.post is not None]
        patrol = [e for e in events if e.route is not None]
        routes = []
        for rid in _route_ids(s, config, patrol):
            mine = [e for e in patrol if e.route == rid]
            routes.append(
                {
                    "route": rid,
                    **_patrol_counts(mine),
                    "log": [
                        {
                            "time": _local(e.at, tz, "%H:%M:%S"),
                            "at": e.at,
                            "kind": e.kind,
                            "code": e.code,
                            "qualifier": e.qualifier,
                            "summary": _summary(e),
                            "detail": dict(e.detail),
                        }
                        for e in mine
                    ],
                }
            )
        posts = []
        for pid in _post_ids(s, config, duty):
            mine = [e for e in duty if e.post == pid]
            posts.append(
                {
                    "post": pid,
                    **_duty_counts(mine),
                    "log": [
                        {
                            "time": _local(e.at, tz, "%H:%M:%S"),
                            "at": e.at,
                            "kind": e.kind,
                            "summary": _summary(e),
                            "detail": dict(e.detail),
                        }
                        for e in mine
                    ],
                }
            )
        incidents = _incidents(conn, w, s)
        out["sites"].append(
            {
                "site": s,
                "name": cfg_site.name if cfg_site else s,
                "posts": posts,
                "patrols": routes,
                "alarms": [
                    {
                        "time": _local(float(i["first_press_at"]), tz, "%H:%M:%S"),
                        "at": float(i["first_press_at"]),
                        "id": i["id"],
                        "unit": i["unit"],
                        "place": i["place"],
                        "kind": i["kind"],
                        "state": i["state"],
                        "police_ack_s": None
                        if i["police_ack_at"] is None
                        else round(float(i["police_ack_at"]) - float(i["first_press_at"]), 3),
                        "disposition": i["disposition"],
                        "test": bool(i.get("test")),
                    }
                    for i in incidents
                ],
                "unit_events": [
                    {
                        "time": _local(e.at, tz, "%H:%M:%S"),
                        "at": e.at,
                        "unit": e.unit,
                        "kind": e.kind,
                        "code": e.code,
                        "qualifier": e.qualifier,
                        "summary": _summary(e),
                    }
                    for e in events
                    if e.post is None and e.route is None and e.kind != "test"
                ],
                "tests": sum(1 for e in events if e.kind == "test"),
            }
        )
    return out


# -- rendering --------------------------------------------------------------------------


def render(data: Mapping[str, Any], fmt: str) -> str:
    """The report ``data`` as ``md``, ``csv`` or ``json`` text."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(data)
    if fmt == "md":
        return _md_month(data) if data["report"] == "monthly" else _md_day(data)
    raise ValueError(f"unknown format {fmt!r}")


def _pct(x: float | None, digits: int = 2) -> str:
    return (
        "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.{digits}f} %"
    )


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _steps(p: Mapping[str, Any]) -> str:
    return (
        f"{p['escalations']} (" + " / ".join(str(p["by_step"][k]) for k in ESCALATION_STEPS) + ")"
    )


def _md_month(data: Mapping[str, Any]) -> str:
    lines = [
        f"# CampusGuard monthly report {data['month']}",
        "",
        f"Period {data['from']} to {data['to']} ({data['tz']}); the journal observed "
        f"{data['observed_from'] or '-'} to {data['observed_to'] or '-'}.",
    ]
    if "covers" in data:
        lines += ["", f"Covers {data['covers']}."]
    g = data.get("gateway")
    if g is not None:
        lines += [
            "",
            "## The gateway",
            "",
            f"- starts: {g['starts']} (clean stops {g['clean_stops']}, ended without a stop "
            f"{g['unclean_ends']}); away {duration(g['downtime_s'])} in all",
            f"- broker outages: {g['broker_outages']}, {duration(g['broker_outage_s'])} in all",
        ]
        lines += [f"- away {duration(d['down_s'])}: {d['from']} to {d['to']}" for d in g["down"]]
    if "major" in data:
        lines += ["", "## Major situations (each reported at once)", ""]
        if data["major"]:
            lines += _table(
                ["time", "site", "what", "detail"],
                [[m["time"], m["site"] or "", m["what"], m["detail"]] for m in data["major"]],
            )
        else:
            lines.append("None.")
    for s in data["sites"]:
        a = s["alarms"]
        lines += ["", f"## {s['name']} - site {s['site']}", "", "### Alarms", ""]
        if a["total"]:
            lines += _table(["kind", "alarms"], [[k, n] for k, n in a["by_kind"].items()])
            lines += [
                "",
                f"- alarms: {a['total']} ({a['presses']} presses); police acknowledged "
                f"{a['police_acked']}, not acknowledged {a['not_acked']}",
                f"- press to police acknowledgement: median {duration(a['ack_median_s'])}, "
                f"worst {duration(a['ack_worst_s'])}"
                + (f" ({a['ack_worst_incident']})" if a["ack_worst_incident"] else ""),
                f"- cancelled at the unit: {a['cancelled']}; false alarms (police disposition): "
                f"{a['false_alarms']}; genuine: {a['genuine']}; tests: {a['tests']}",
            ]
        else:
            lines.append("No alarms.")
        if a.get("test_mode_alarms"):
            lines.append(
                f"- in test mode (installers' tests, not counted above): {a['test_mode_alarms']}"
            )
        lines += ["", "### Units", ""]
        lines += _table(
            [
                "unit",
                "place",
                "availability",
                "offline",
                "times offline",
                "low battery",
                "tamper",
                "mains lost",
                "other faults",
                "tests (failed, missing)",
                "alarms",
            ],
            [
                [
                    u["unit"],
                    u["place"] or "",
                    _pct(u["availability"], 3),
                    duration(u["offline_s"]),
                    u["offline"],
                    u["low_battery"],
                    u["tamper"],
                    u["mains_lost"],
                    sum(u[k] for k in UNIT_EVENT_COLUMNS[3:]),
                    f"{u['tests']} ({u['test_failed']}, {u['test_missing']})",
                    u["alarms"],
                ]
                for u in s["units"]
            ],
        )
        lines += ["", "### Guard duty", ""]
        if s["duty"]:
            lines += _table(
                [
                    "post",
                    "check-ins due",
                    "on time",
                    "late",
                    "missed",
                    "compliance",
                    "escalations (guard / lead / police)",
                    "acknowledged (check-in / duty)",
                    "worst overdue",
                    "duress",
                ],
                [
                    [
                        p["post"],
                        p["due"],
                        p["on_time"],
                        p["late"],
                        p["missed"],
                        _pct(p["compliance"]),
                        _steps(p),
                        f"{p['acknowledged_by_checkin']} / {p['acknowledged_by_duty']}",
                        "-" if p["worst_overdue_min"] is None else f"{p['worst_overdue_min']} min",
                        p["duress_checkins"],
                    ]
                    for p in s["duty"]
                ],
            )
        else:
            lines.append("No guard posts.")
        lines += ["", "### Patrols", ""]
        if s.get("patrol"):
            lines += _table(
                [
                    "route",
                    "rounds due",
                    "done",
                    "late",
                    "missed",
                    "compliance",
                    "rounds (complete / incomplete)",
                    "median round",
                    "out of order",
                    "escalations (leader / lead / police)",
                    "acknowledged (scan / duty)",
                    "duress",
                ],
                [
                    [
                        r["route"],
                        r["due"],
                        r["done"],
                        r["late"],
                        r["missed"],
                        _pct(r["compliance"]),
                        f"{r['rounds']} ({r['complete']} / {r['incomplete']})",
                        "-" if r["median_round_min"] is None else f"{r['median_round_min']} min",
                        r["out_of_order"],
                        " / ".join(str(r["by_step"][k]) for k in PATROL_STEPS),
                        f"{r['acknowledged_by_scan']} / {r['acknowledged_by_duty']}",
                        r["duress_scans"],
                    ]
                    for r in s["patrol"]
                ],
            )
        else:
            lines.append("No patrol routes.")
    return "\n".join(lines) + "\n"


def _cid(code: int | None, qualifier: int | None) -> str:
    """Contact ID as duty rooms write it: E383 (new event), R383 (restore)."""
    if code is None:
        return ""
    return ("R" if qualifier == RESTORE else "E") + f"{code:03d}"


def _md_day(data: Mapping[str, Any]) -> str:
    lines = [f"# CampusGuard duty log {data['day']} ({data['tz']})"]
    for s in data["sites"]:
        lines += ["", f"## {s['name']} - site {s['site']}"]
        for p in s["posts"]:
            lines += [
                "",
                f"### Post {p['post']}: {p['due']} check-ins due, {p['on_time']} on time, "
                f"{p['late']} late, {p['missed']} missed, {p['escalations']} escalations",
                "",
            ]
            lines += _table(
                ["time", "event", "detail"],
                [[e["time"], e["kind"], e["summary"]] for e in p["log"]],
            )
        for r in s.get("patrols", []):
            lines += [
                "",
                f"### Patrol {r['route']}: {r['due']} rounds due, {r['done']} done, "
                f"{r['late']} late, {r['missed']} missed, {r['escalations']} escalations",
                "",
            ]
            lines += _table(
                ["time", "event", "detail", "Contact ID"],
                [
                    [e["time"], e["kind"], e["summary"], _cid(e["code"], e["qualifier"])]
                    for e in r["log"]
                ],
            )
        lines += ["", "### Alarms", ""]
        if s["alarms"]:
            lines += _table(
                ["time", "unit", "kind", "state", "police ack after", "disposition"],
                [
                    [
                        a["time"],
                        a["unit"],
                        a["kind"] + (" (test mode)" if a.get("test") else ""),
                        a["state"],
                        duration(a["police_ack_s"]),
                        a["disposition"] or "",
                    ]
                    for a in s["alarms"]
                ],
            )
        else:
            lines.append("None.")
        lines += ["", f"### Unit events ({s['tests']} test reports not listed)", ""]
        if s["unit_events"]:
            lines += _table(
                ["time", "unit", "event", "Contact ID"],
                [
                    [
                        e["time"],
                        e["unit"] or "",
                        e["summary"],
                        _cid(e["code"], e["qualifier"]),
                    ]
                    for e in s["unit_events"]
                ],
            )
        else:
            lines.append("None.")
    return "\n".join(lines) + "\n"


def _csv(data: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    if data["report"] == "monthly":
        wr.writerow(["month", "site", "section", "subject", "metric", "value"])
        for k, v in data.get("gateway", {}).items():
            if k != "down":
                wr.writerow([data["month"], "", "gateway", "", k, v])
        for m in data.get("major", []):
            wr.writerow(
                [data["month"], m["site"] or "", "major", m["what"], m["time"], m["detail"]]
            )
        for s in data["sites"]:
            base = [data["month"], s["site"]]
            for k, v in s["alarms"].items():
                if k == "by_kind":
                    for kind, n in v.items():
                        wr.writerow([*base, "alarms", kind, "count", n])
                else:
                    wr.writerow([*base, "alarms", "", k, "" if v is None else v])
            for u in s["units"]:
                for k, v in u.items():
                    if k != "unit":
                        wr.writerow([*base, "units", u["unit"], k, "" if v is None else v])
            for p in s["duty"]:
                for k, v in p.items():
                    if k == "by_step":
                        for step, n in v.items():
                            wr.writerow([*base, "duty", p["post"], f"escalations_{step}", n])
                    elif k != "post":
                        wr.writerow([*base, "duty", p["post"], k, "" if v is None else v])
            for r in s.get("patrol", []):
                for k, v in r.items():
                    if k == "by_step":
                        for step, n in v.items():
                            wr.writerow([*base, "patrol", r["route"], f"escalations_{step}", n])
                    elif k == "checkpoints":
                        wr.writerow([*base, "patrol", r["route"], k, " ".join(v or [])])
                    elif k != "route":
                        wr.writerow([*base, "patrol", r["route"], k, "" if v is None else v])
    else:
        wr.writerow(["day", "time", "site", "post", "unit", "kind", "code", "summary"])
        rows: list[tuple[float, list[Any]]] = []
        for s in data["sites"]:
            for p in s["posts"]:
                for e in p["log"]:
                    rows.append(
                        (
                            e["at"],
                            [
                                data["day"],
                                e["time"],
                                s["site"],
                                p["post"],
                                "",
                                e["kind"],
                                "",
                                e["summary"],
                            ],
                        )
                    )
            for r in s.get("patrols", []):
                for e in r["log"]:
                    rows.append(
                        (
                            e["at"],
                            [
                                data["day"],
                                e["time"],
                                s["site"],
                                f"patrol:{r['route']}",
                                e["detail"].get("checkpoint", ""),
                                e["kind"],
                                e["code"] or "",
                                e["summary"],
                            ],
                        )
                    )
            for a in s["alarms"]:
                rows.append(
                    (
                        a["at"],
                        [
                            data["day"],
                            a["time"],
                            s["site"],
                            "",
                            a["unit"],
                            f"alarm_{a['kind']}",
                            "",
                            f"{a['state']}, police ack {duration(a['police_ack_s'])}",
                        ],
                    )
                )
            for e in s["unit_events"]:
                rows.append(
                    (
                        e["at"],
                        [
                            data["day"],
                            e["time"],
                            s["site"],
                            "",
                            e["unit"] or "",
                            e["kind"],
                            e["code"] or "",
                            e["summary"],
                        ],
                    )
                )
        for _, r in sorted(rows, key=lambda x: x[0]):
            wr.writerow(r)
    return buf.getvalue()


def per_site(data: Mapping[str, Any]) -> dict[str, Any]:
    """The report's sites keyed by site id (for programs and tests)."""
    return {s["site"]: s for s in data["sites"]}
