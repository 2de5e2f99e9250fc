"""The gateway's running state for installers, written into the journal and read back.

``campusguard status`` shows it (:func:`render`).

The gateway writes a snapshot (:func:`snapshot_json`) into ``meta`` under
:data:`STATUS_KEY` every :data:`STATUS_EVERY_S` and when it stops: per link whether it is
up, bytes in and out, authentic frames and rejects by reason; per unit the retransmissions
it saw. :func:`read` puts it together with what the journal's frames say per unit (last
heard, battery, firmware of the latest HEARTBEAT) and the clock's state, so that the
status of a running gateway is read without talking to it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.arc.queue import summary as arc_summary
from gateway.core.config import Config

STATUS_KEY = "status"
STATUS_EVERY_S = 10.0
CLOCK_SLACK_S = 60.0
"""The clock is called behind when the journal holds a record later than now + this."""


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """One link's counters in a snapshot."""

    up: bool | None
    port: str
    bytes_in: int
    bytes_out: int
    frames: int
    rejects: Mapping[str, int]


def snapshot_json(
    at: float,
    started_at: float,
    links: Mapping[str, LinkCounters],
    retries: Mapping[str, int],
    arc: Mapping[str, Any] | None = None,
) -> str:
    """The record the gateway writes (``retries``: retransmissions seen, by unit id).

    ``arc``: the receiving centre transmitter's state
    (:meth:`gateway.arc.transmitter.Transmitter.state`).
    """
    return json.dumps(
        {
            "written_at": at,
            "started_at": started_at,
            "links": {
                lid: {
                    "up": c.up,
                    "port": c.port,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "frames": c.frames,
                    "rejects": dict(c.rejects),
                }
                for lid, c in links.items()
            },
            "retries": dict(retries),
            **({"arc": dict(arc)} if arc is not None else {}),
        },
        sort_keys=True,
    )


def timesync_state() -> bool | None:
    """systemd-timesyncd's (or chrony's) verdict through ``timedatectl``; None if unknown."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        res = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = res.stdout.strip()
    return {"yes": True, "no": False}.get(value) if res.returncode == 0 else None


def read(conn: sqlite3.Connection, config: Config | None, now: float) -> dict[str, Any]:
    """Everything ``campusguard status`` shows, from the journal ``conn`` (read-only)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (STATUS_KEY,)).fetchone()
    snap: dict[str, Any] = json.loads(row[0]) if row is not None else {}
    retries: dict[str, int] = snap.get("retries", {})
    units: dict[str, dict[str, Any]] = {}
    if config is not None:
        for uid in config.units:
            units[uid] = {"last_heard": None, "battery_mv": None, "fw": None}
    for uid, last in conn.execute("SELECT unit, max(at) FROM frames GROUP BY unit"):
        units.setdefault(uid, {"battery_mv": None, "fw": None})["last_heard"] = last
    latest = conn.execute(
        "SELECT unit, body FROM frames WHERE id IN"
        " (SELECT max(id) FROM frames WHERE type = 'HEARTBEAT' GROUP BY unit)"
    )
    for uid, body in latest:
        hb = json.loads(body)
        entry = units.setdefault(uid, {"last_heard": None})
        entry["battery_mv"] = hb.get("battery_mv")
        fw = hb.get("fw")
        entry["fw"] = f"{fw >> 8}.{fw & 0xFF}" if isinstance(fw, int) else None
    for uid, entry in units.items():
        entry["retries"] = int(retries.get(uid, 0))
    last_record = max(
        (
            r[0]
            for r in conn.execute("SELECT max(at) FROM frames UNION ALL SELECT max(at) FROM events")
            if r[0] is not None
        ),
        default=None,
    )
    unsynced = conn.execute("SELECT max(at) FROM events WHERE kind = 'clock_unsynced'").fetchone()[
        0
    ]
    queues = arc_summary(conn)
    arc = snap.get("arc")
    return {
        **({"arc": {**(arc or {}), "queues": queues}} if arc or queues else {}),
        "gateway": {
            "written_at": snap.get("written_at"),
            "started_at": snap.get("started_at"),
        },
        "links": snap.get("links", {}),
        "units": units,
        "clock": {
            "now": now,
            "synchronized": timesync_state(),
            "journal_last_record_at": last_record,
            "behind_journal": last_record is not None and last_record > now + CLOCK_SLACK_S,
            "last_clock_unsynced_event_at": unsynced,
        },
    }


def _when(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    ago = now - at
    if ago < 0:
        return f"{stamp} (in the future: clock?)"
    s = int(ago)
    age = f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"
    return f"{stamp} ({age} ago)"


def render(state: dict[str, Any]) -> str:
    """The status as text for a terminal."""
    now = state["clock"]["now"]
    gw = state["gateway"]
    out = []
    if gw["written_at"] is None:
        out.append("gateway: no snapshot in this journal (has the gateway run on it?)")
    else:
        stale = now - gw["written_at"] > 3 * STATUS_EVERY_S
        out.append(
            f"gateway: snapshot {_when(gw['written_at'], now)}"
            + (" - not running?" if stale else "")
            + f"; started {_when(gw['started_at'], now)}"
        )
    c = state["clock"]
    sync = {True: "yes", False: "NO", None: "unknown"}[c["synchronized"]]
    line = f"clock: {_when(now, now)}; time synchronized: {sync}"
    if c["behind_journal"]:
        line += f"; BEHIND the journal's last record {_when(c['journal_last_record_at'], now)}"
    if c["last_clock_unsynced_event_at"] is not None:
        line += f"; last clock_unsynced {_when(c['last_clock_unsynced_event_at'], now)}"
    out.append(line)
    out.append("links:")
    for lid, link in sorted(state["links"].items()):
        up = {True: "up", False: "DOWN", None: "-"}[link["up"]]
        rejects = ", ".join(f"{r} {n}" for r, n in sorted(link["rejects"].items()) if n)
        out.append(
            f"  {lid:<10} {link['port']:<24} {up:<4} in {link['bytes_in']} B, "
            f"out {link['bytes_out']} B, {link['frames']} frames; "
            f"rejects: {rejects or 'none'}"
        )
    arc = state.get("arc")
    if arc:
        out.append(f"receiving centre {arc.get('arc', '')}:".replace(" :", ":"))
        for p in arc.get("paths", []):
            up = "up" if p["up"] else f"DOWN ({p['failures']} failures in a row)"
            out.append(f"  {p['receiver']:<24} {up}; clock offset {p['clock_offset_s']:+} s")
        for name, q in sorted(arc.get("queues", {}).items()):
            out.append(
                f"  queue {name}: {q['waiting']} waiting"
                + (f" (oldest {_when(q['oldest_waiting_at'], now)})" if q["waiting"] else "")
                + f"; last ACK {_when(q['last_ack_at'], now)}; given up {q['given_up']}"
            )
    out.append("units:")
    for uid, u in sorted(state["units"].items()):
        battery = f"{u['battery_mv']} mV" if u.get("battery_mv") is not None else "-"
        out.append(
            f"  {uid:<18} last heard {_when(u.get('last_heard'), now)}; battery {battery}; "
            f"fw {u.get('fw') or '-'}; retries {u['retries']}"
        )
    return "\n".join(out)
