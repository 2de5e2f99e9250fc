"""``campusguard report``: the monthly statistics per site and the daily duty log.

The figures come from the journal's shared tables (``incidents`` and ``events``, see
gateway/journal/schema.py), so any gateway database can be reported on, also a copy taken off the
Raspberry Pi. Months and days are calendar months and days in the schools' local time
(``--tz``, default the system's zone). Field meanings are in gateway/README.md, section
"Supervision, guard duty and reports".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from gateway.core.config import Config, load_config
from gateway.core.contact_id import KINDS, NEW, RESTORE, describe
from gateway.core.errors import ConfigError, ReportError
from gateway.watch.shifts import zone

FORMATS = ("md", "csv", "json")
ESCALATION_STEPS = ("prompt_guard", "security_lead", "police")
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


# -- arguments --------------------------------------------------------------------------


def _month(text: str) -> str:
    m = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month: use YYYY-MM, e.g. 2026-03")
    return text


def _day(text: str) -> str:
    try:
        d = date.fromisoformat(text)
    except ValueError:
        d = None
    if d is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) or d.year < 1970:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: use YYYY-MM-DD")
    return text


def default_db() -> Path:
    """``$STATE_DIRECTORY/gateway.db`` when set (systemd), else ``var/gateway.db``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "gateway.db"
    return Path("var") / "gateway.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``campusguard report``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--month", type=_month, metavar="YYYY-MM", help="monthly statistics")
    which.add_argument("--day", type=_day, metavar="YYYY-MM-DD", help="the daily duty log")
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the gateway's journal (default $STATE_DIRECTORY/gateway.db, else var/gateway.db)",
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (md)")
    parser.add_argument(
        "--config", metavar="PATH", help="boards.yaml, for site names and unit places"
    )
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="the schools' time zone, e.g. Asia/Shanghai (default: --config's gateway.timezone,"
        " else local)",
    )
    parser.add_argument("--site", metavar="ID", help="only this site")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")


def run(args: argparse.Namespace) -> int:
    """Make the report asked for; 0 on success, 2 with a message for a usage problem."""
    try:
        config = load_config(args.config) if args.config else None
        tz = zone(args.tz or (config.timezone if config else None))
        db = Path(args.db) if args.db else default_db()
        conn = open_journal(db)
        try:
            if args.month:
                data = monthly(conn, args.month, tz, config=config, site=args.site)
            else:
                data = daily(conn, args.day, tz, config=config, site=args.site)
        finally:
            conn.close()
    except (ReportError, ConfigError, ValueError) as exc:
        print(f"campusguard report: {exc}", file=sys.stderr)
        return 2
    text = render(data, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


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
    y, m = (int(x) for x in _month(month).split("-"))
    start = datetime(y, m, 1, tzinfo=tz)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    return Window(month, start.timestamp(), end.timestamp(), tz)


def day_window(day: str, tz: tzinfo) -> Window:
    """The local calendar day ``YYYY-MM-DD``."""
    d = date.fromisoformat(_day(day))
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


def _events(conn: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[Event]:
    out = []
    for row in conn.execute(
        "SELECT id, at, site, unit, post, kind, code, qualifier, detail FROM events "
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
) -> dict[str, Any]:
    """The monthly statistics for ``month`` (``YYYY-MM``, local time) as plain data.

    Availability is measured over the part of the month that the journal observed: from
    the later of the month's start and the journal's first record, to the earlier of the
    month's end and ``now`` (default: the real time).
    """
    w = month_window(month, tz)
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
        "sites": [],
    }
    for s in _sites(conn, config, site, w):
        out["sites"].append(_site_month(conn, s, w, config, obs_start, obs_end))
    return out


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
                    if e.post is None and e.kind != "test"
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
