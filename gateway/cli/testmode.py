"""``campusguard test-mode UNIT|SITE --for 2h``: put a unit or a whole site in test mode.

While in test mode a unit's alarms still go out at once, marked ``test: true``, and the
report counts them apart; the mode ends by itself (gateway/pipeline/testmode.py). Run it on the
gateway's Pi: it writes the journal the running gateway reads.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.config import load_config
from gateway.core.errors import ConfigError
from gateway.journal.store import default_db_path
from gateway.pipeline import testmode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("target", nargs="?", help="a unit id or a site id from boards.yaml")
    parser.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1d")
    parser.add_argument("--end", action="store_true", help="end the target's test mode now")
    parser.add_argument("--list", action="store_true", help="list the test modes in force")
    parser.add_argument("--by", help="who is testing (kept with the mode)")
    parser.add_argument("--config", default="boards.yaml", help="the register (boards.yaml)")
    parser.add_argument(
        "--db", type=Path, help="the gateway's journal (default $STATE_DIRECTORY/gateway.db)"
    )


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run(args: argparse.Namespace) -> int:
    """Set, end or list test modes; 2 with one line on a usage or config error."""
    try:
        return _run(args)
    except (ConfigError, ValueError, sqlite3.Error) as exc:
        print(f"campusguard test-mode: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    conn = testmode.open_modes(args.db or default_db_path())
    try:
        now = time.time()
        if args.list:
            modes = testmode.active(conn, now)
            for m in modes:
                print(f"{m.scope} {m.target}: test mode until {_when(m.until)} (by {m.by or '-'})")
            if not modes:
                print("no unit or site is in test mode")
            return 0
        if not args.target:
            raise ValueError("name a unit or a site (or --list)")
        scope = testmode.scope_of(load_config(args.config), args.target, args.config)
        if args.end:
            with conn:
                ended = testmode.end_mode(conn, scope, args.target, at=now)
            print(f"{scope} {args.target}: " + ("test mode ended" if ended else "not in test mode"))
            return 0
        if not args.duration:
            raise ValueError("give --for DURATION (e.g. 2h), or --end, or --list")
        until = now + testmode.parse_duration(args.duration)
        testmode.begin_mode(conn, scope, args.target, at=now, until=until, by=args.by)
        print(
            f"{scope} {args.target}: test mode until {_when(until)}; its alarms go to the police "
            "marked test: true, and the report counts them apart"
        )
        return 0
    finally:
        conn.close()
