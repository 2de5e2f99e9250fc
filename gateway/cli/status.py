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
from pathlib import Path

from gateway.core.config import load_config
from gateway.core.errors import ReportError, UsageError
from gateway.dutyroom.report import open_journal
from gateway.journal.store import default_db_path
from gateway.service.status import read, render


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
