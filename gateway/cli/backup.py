"""``campusguard backup --db PATH --to FILE``: a consistent copy of the journal, while it runs.

The copy is gateway/journal/backup.py's (SQLite's online backup, checked, mode 0600); this
reads the command line and says what was copied, or why not (exit 1; 2 on a usage error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.core.errors import BackupError
from gateway.journal.backup import backup
from gateway.journal.store import default_db_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard backup``."""
    parser.add_argument(
        "--db",
        type=Path,
        help="the journal (default: $STATE_DIRECTORY/gateway.db, else var/gateway.db)",
    )
    parser.add_argument("--to", type=Path, required=True, metavar="FILE", help="the copy to write")


def run(args: argparse.Namespace) -> int:
    """Make the copy; exit 0, 2 on a usage error, 1 if it failed."""
    db = args.db or default_db_path()
    try:
        counts = backup(db, args.to)
    except BackupError as exc:
        print(f"campusguard backup: {exc}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{n} {t}" for t, n in counts.items())
    print(f"backed up {db} to {args.to} ({rows}; integrity ok)")
    return 0
