"""``campusguard status [--db PATH]``: what an installer asks of a running gateway.

Per unit: last heard, battery and firmware (its latest HEARTBEAT), retransmissions seen;
per link: up or down, bytes and frames, rejects by reason; the gateway's clock. Read from
the journal (read-only), where the gateway leaves a snapshot every few seconds
(:mod:`gateway.service.status`): it works while the gateway runs, and after it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.config import load_config
from gateway.core.errors import ReportError, UsageError
from gateway.dutyroom.report import open_journal
from gateway.journal.store import default_db_path
from gateway.service.status import STATUS_EVERY_S, read


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard status``."""
    parser.add_argument(
        "--db",
        type=Path,
        help="the journal (default: $STATE_DIRECTORY/gateway.db, else var/gateway.db)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="boards.yaml: list registered units that were never heard too",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")


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


def run(args: argparse.Namespace) -> int:
    """Print the status; 2 when the journal or the register cannot be read."""
    config = load_config(args.config) if args.config else None
    db = args.db or default_db_path()
    try:
        conn = open_journal(db)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    try:
        state = read(conn, config, time.time())
    finally:
        conn.close()
    if args.json:
        print(json.dumps(state, sort_keys=True))
    else:
        print(render(state))
    sys.stdout.flush()
    return 0
