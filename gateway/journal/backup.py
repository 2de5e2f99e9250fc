"""A consistent copy of the live journal, while the gateway writes (``campusguard backup``).

The gateway keeps its journal in WAL mode: what was committed since the last checkpoint is
in ``gateway.db-wal``, so copying ``gateway.db`` alone (``cp``) loses it, and copying both
while the gateway writes can tear. SQLite's online backup API copies every committed page
(database and WAL) as one snapshot; the gateway's writes go on meanwhile. The copy is one
self-contained file (rollback journal mode, no -wal beside it), mode 0600 (it holds
owners' names and phone numbers), checked with ``PRAGMA integrity_check`` before it
replaces FILE. Restoring: see gateway/README.md ("Backup and restore").
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from gateway.core.errors import BackupError, UsageError

PAGES_PER_STEP = 1024  # 4 MB a step: the gateway's writers get the database between steps


def backup(db: Path, to: Path) -> dict[str, int]:
    """Copy the live journal ``db`` to ``to`` (atomically, 0600); return row counts."""
    if not db.is_file():
        raise UsageError(f"--db {db}: no journal there (give --db PATH)")
    if to.resolve() == db.resolve():
        raise UsageError(f"--to {to}: that is the journal itself")
    if not to.parent.is_dir():
        raise UsageError(f"--to {to}: no directory {to.parent}")
    tmp = to.with_name(f".{to.name}.{os.getpid()}.tmp")
    owner = db.stat()
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
            dst.execute("PRAGMA journal_mode=DELETE")  # one file: no -wal beside the copy
            check = dst.execute("PRAGMA integrity_check").fetchone()
            if check is None or check[0] != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            counts = {
                t: int(dst.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("incidents", "events", "frames", "outbox")
            }
        finally:
            dst.close()
            src.close()
        os.replace(tmp, to)
    except sqlite3.Error as exc:
        raise BackupError(f"{db}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"{to}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _give_back(db, owner)
    return counts


def _give_back(db: Path, owner: os.stat_result) -> None:
    """Give the -wal and -shm files our reader made (gateway stopped) to the journal's owner.

    Root's would keep the service's own user (DynamicUser) out of its journal.
    """
    for p in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        with contextlib.suppress(OSError):
            st = p.stat()
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(p, owner.st_uid, owner.st_gid)
