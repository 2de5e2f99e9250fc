"""The durable queue of Contact ID messages for each alarm receiving centre (ARC).

Rows are added inside the transaction that journals the incident or event they report
(:class:`gateway.arc.feed.ArcFeed`), so an alarm once journalled either reached the ARC
(``acked_at``) or is still here. The transmitter (:mod:`gateway.arc.transmitter`)
takes them in ``id`` order per ARC, which keeps the order per account. A row gets its
DC-09 sequence number the first time it is sent and keeps it for every repeat; the
counter is per ARC and survives restarts. This module is the only one that writes these tables.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.arc.dc09 import next_seq
from gateway.journal.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS arc_queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    arc        TEXT NOT NULL,             -- the receiving centre (all its paths share it)
    created_at REAL NOT NULL,
    account    TEXT NOT NULL,
    qualifier  INTEGER NOT NULL,          -- Contact ID: 1 new, 3 restore
    code       INTEGER NOT NULL,          -- Contact ID event code
    grp        INTEGER NOT NULL,          -- group / partition
    zone       INTEGER NOT NULL,
    incident   TEXT,
    event      INTEGER,
    seq        INTEGER,                   -- DC-09 sequence, fixed at the first send
    attempts   INTEGER NOT NULL DEFAULT 0,
    duh        INTEGER NOT NULL DEFAULT 0,
    acked_at   REAL,
    acked_by   TEXT,                      -- host:port of the path that ACKed
    failed_at  REAL,                      -- given up (the receiver kept answering DUH)
    failure    TEXT
);
CREATE INDEX IF NOT EXISTS arc_queue_open ON arc_queue(arc, id)
    WHERE acked_at IS NULL AND failed_at IS NULL;
CREATE TABLE IF NOT EXISTS arc_seq (
    arc TEXT PRIMARY KEY,
    seq INTEGER NOT NULL                  -- the last sequence number taken
);
"""


@dataclass(frozen=True, slots=True)
class Queued:
    """One message waiting for an ARC's ACK."""

    id: int
    arc: str
    account: str
    qualifier: int
    code: int
    grp: int
    zone: int
    seq: int | None
    duh: int
    created_at: float


class ArcQueue:
    """The ``arc_queue`` and ``arc_seq`` tables in the gateway's journal."""

    def __init__(self, store: Store) -> None:
        """Create the tables if needed."""
        self._store = store
        store.conn.executescript(_SCHEMA)

    def add(
        self,
        *,
        arc: str,
        at: float,
        account: str,
        qualifier: int,
        code: int,
        grp: int,
        zone: int,
        incident: str | None = None,
        event: int | None = None,
    ) -> int:
        """Queue one message (inside the caller's transaction, or its own); return its id."""
        with self._store.transaction() as c:
            cur = c.execute(
                "INSERT INTO arc_queue(arc, created_at, account, qualifier, code, grp, zone,"
                " incident, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (arc, at, account, qualifier, code, grp, zone, incident, event),
            )
        return int(cur.lastrowid or 0)

    def head(self, arc: str) -> Queued | None:
        """The oldest message of ``arc`` neither ACKed nor given up."""
        row = self._store.conn.execute(
            "SELECT id, arc, account, qualifier, code, grp, zone, seq, duh, created_at"
            " FROM arc_queue WHERE arc = ? AND acked_at IS NULL AND failed_at IS NULL"
            " ORDER BY id LIMIT 1",
            (arc,),
        ).fetchone()
        if row is None:
            return None
        return Queued(
            int(row[0]),
            str(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
            None if row[7] is None else int(row[7]),
            int(row[8]),
            float(row[9]),
        )

    def waiting(self, arc: str) -> int:
        """How many messages of ``arc`` wait."""
        return int(
            self._store.conn.execute(
                "SELECT count(*) FROM arc_queue WHERE arc = ? AND acked_at IS NULL"
                " AND failed_at IS NULL",
                (arc,),
            ).fetchone()[0]
        )

    def take_seq(self, arc: str, row: int | None = None) -> int:
        """The next sequence number of ``arc`` (0001-9999), persisted; fixed on ``row``.

        With ``row`` this also counts its first send (see :meth:`attempt`).
        """
        with self._store.transaction() as c:
            got = c.execute("SELECT seq FROM arc_seq WHERE arc = ?", (arc,)).fetchone()
            seq = next_seq(0 if got is None else int(got[0]))
            c.execute(
                "INSERT INTO arc_seq(arc, seq) VALUES (?, ?)"
                " ON CONFLICT(arc) DO UPDATE SET seq = excluded.seq",
                (arc, seq),
            )
            if row is not None:
                # the first send: one commit for both (each commit is on the alarm's path)
                c.execute(
                    "UPDATE arc_queue SET seq = ?, attempts = attempts + 1 WHERE id = ?",
                    (seq, row),
                )
        return seq

    def prune(self, before: float, batch: int = 200) -> int:
        """Delete up to ``batch`` ACKed rows created before ``before``; return how many.

        Rows still waiting, and rows given up (the record of what the centre refused),
        stay however old.
        """
        with self._store.transaction() as c:
            gone = c.execute(
                "DELETE FROM arc_queue WHERE id IN (SELECT id FROM arc_queue"
                " WHERE acked_at IS NOT NULL AND created_at < ? ORDER BY id LIMIT ?)",
                (before, batch),
            ).rowcount
        return int(gone)

    def attempt(self, row: int) -> None:
        """Count one send of ``row``."""
        with self._store.transaction() as c:
            c.execute("UPDATE arc_queue SET attempts = attempts + 1 WHERE id = ?", (row,))

    def duh(self, row: int) -> int:
        """Count one DUH for ``row``; return how many it has had."""
        with self._store.transaction() as c:
            c.execute("UPDATE arc_queue SET duh = duh + 1 WHERE id = ?", (row,))
            return int(c.execute("SELECT duh FROM arc_queue WHERE id = ?", (row,)).fetchone()[0])

    def acked(self, row: int, at: float, path: str) -> None:
        """The ARC ACKed ``row`` through ``path``."""
        with self._store.transaction() as c:
            c.execute(
                "UPDATE arc_queue SET acked_at = ?, acked_by = ? WHERE id = ?", (at, path, row)
            )

    def give_up(self, row: int, at: float, why: str) -> None:
        """Stop sending ``row`` (it stays in the journal with the reason)."""
        with self._store.transaction() as c:
            c.execute(
                "UPDATE arc_queue SET failed_at = ?, failure = ? WHERE id = ?", (at, why, row)
            )


def summary(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Per ARC: messages waiting, the oldest waiting one's age, the last ACK, given up.

    Reads the journal read-only (``campusguard status``); {} when no ARC ever ran on it.
    """
    known = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arc_queue'"
    ).fetchone()
    if known is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for arc, waiting, oldest, last_ack, given_up in conn.execute(
        "SELECT arc,"
        " sum(acked_at IS NULL AND failed_at IS NULL),"
        " min(CASE WHEN acked_at IS NULL AND failed_at IS NULL THEN created_at END),"
        " max(acked_at), sum(failed_at IS NOT NULL)"
        " FROM arc_queue GROUP BY arc"
    ):
        out[str(arc)] = {
            "waiting": int(waiting or 0),
            "oldest_waiting_at": oldest,
            "last_ack_at": last_ack,
            "given_up": int(given_up or 0),
        }
    return out
