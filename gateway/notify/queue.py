"""The SMS queue in the journal: what must reach a person survives a restart.

One writer for the ``sms_queue`` table. A message names the people of its ladder in order
(``people``: the security lead, then the deputies); ``person`` is the one being tried.
States: ``queued`` (to send at ``next_at``), ``sent`` (waiting for the status report until
``next_at``), ``delivered``, ``failed`` (nobody reached), ``cancelled`` (the condition
ended before the message went: a unit back online). ``add`` joins the caller's
transaction, so an event and the SMS it calls for are journalled together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sms_queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    site       TEXT NOT NULL,
    reason     TEXT NOT NULL,           -- escalation | low_battery | tamper | offline | ...
    ref        TEXT,                    -- the event, incident or post it is about
    text       TEXT NOT NULL,
    people     TEXT NOT NULL,           -- JSON [[name, phone], ...], ladder order
    person     INTEGER NOT NULL DEFAULT 0,
    attempts   INTEGER NOT NULL DEFAULT 0,   -- failed sends to the current person
    state      TEXT NOT NULL DEFAULT 'queued',
    next_at    REAL NOT NULL,
    mrs        TEXT NOT NULL DEFAULT '[]',   -- message references of the parts sent
    delivered  TEXT NOT NULL DEFAULT '[]',   -- ... of those the network reported delivered
    cancel_key TEXT,
    done_at    REAL,
    history    TEXT NOT NULL DEFAULT '[]'    -- JSON [[at, what], ...]
);
CREATE INDEX IF NOT EXISTS sms_queue_due ON sms_queue(next_at)
    WHERE state IN ('queued', 'sent');
"""

ACTIVE = ("queued", "sent")


@dataclass(frozen=True, slots=True)
class Person:
    """Someone on a ladder; ``phone`` in international form (+86...)."""

    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class Sms:
    """A queued message as the sender sees it."""

    id: int
    site: str
    reason: str
    ref: str | None
    text: str
    people: tuple[Person, ...]
    person: int
    attempts: int
    state: str
    next_at: float
    mrs: tuple[int, ...]
    delivered: tuple[int, ...]

    @property
    def to(self) -> Person:
        """The person being tried."""
        return self.people[self.person]


class SmsQueue:
    """The durable queue; its methods run inside the caller's transaction or their own."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """Create the table if needed."""
        self.conn = conn
        conn.executescript(SCHEMA)

    def add(
        self,
        *,
        site: str,
        people: Sequence[Person],
        text: str,
        reason: str,
        ref: str | None,
        at: float,
        due_at: float | None = None,
        cancel_key: str | None = None,
    ) -> int | None:
        """Queue ``text`` for the first of ``people`` (then the next); None if nobody."""
        if not people:
            return None
        cur = self.conn.execute(
            "INSERT INTO sms_queue(created_at, site, reason, ref, text, people, next_at,"
            " cancel_key, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at,
                site,
                reason,
                ref,
                text,
                json.dumps([[p.name, p.phone] for p in people], ensure_ascii=False),
                at if due_at is None else due_at,
                cancel_key,
                json.dumps([[at, "queued"]]),
            ),
        )
        return int(cur.lastrowid or 0)

    def cancel(self, cancel_key: str, at: float) -> int:
        """Withdraw queued messages with ``cancel_key`` not yet sent; return how many."""
        return int(
            self.conn.execute(
                "UPDATE sms_queue SET state = 'cancelled', done_at = ? WHERE cancel_key = ?"
                " AND state = 'queued' AND attempts = 0 AND person = 0",
                (at, cancel_key),
            ).rowcount
        )

    def due(self, now: float) -> list[Sms]:
        """Messages to act on now (send, or stop waiting for a report)."""
        rows = self.conn.execute(
            _SELECT + " WHERE state IN ('queued', 'sent') AND next_at <= ? ORDER BY next_at, id",
            (now,),
        ).fetchall()
        return [_sms(r) for r in rows]

    def next_due(self) -> float | None:
        """When the next message is due, if any is active."""
        row = self.conn.execute(
            "SELECT min(next_at) FROM sms_queue WHERE state IN ('queued', 'sent')"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def waiting_for(self, mr: int) -> Sms | None:
        """The sent message with part reference ``mr`` (the latest, as references wrap)."""
        for r in self.conn.execute(_SELECT + " WHERE state = 'sent' ORDER BY id DESC"):
            sms = _sms(r)
            if mr in sms.mrs:
                return sms
        return None

    def get(self, sms_id: int) -> Sms:
        """One message by id."""
        return _sms(self.conn.execute(_SELECT + " WHERE id = ?", (sms_id,)).fetchone())

    def update(self, sms: Sms, at: float, what: str, **changes: Any) -> None:
        """Change a message and note ``what`` happened in its history."""
        sets = ", ".join(f"{k} = ?" for k in changes)
        values = [json.dumps(v) if isinstance(v, tuple | list) else v for v in changes.values()]
        self.conn.execute(
            f"UPDATE sms_queue SET {sets}, history = json_insert(history, '$[#]', json(?))"
            " WHERE id = ?",
            (*values, json.dumps([at, what], ensure_ascii=False), sms.id),
        )

    def prune(self, before: float) -> int:
        """Drop finished messages (they carry phone numbers) older than ``before``."""
        return int(
            self.conn.execute(
                "DELETE FROM sms_queue WHERE state NOT IN ('queued', 'sent') AND created_at < ?",
                (before,),
            ).rowcount
        )

    def history(self, sms_id: int) -> list[tuple[float, str]]:
        """What happened to a message, in order."""
        row = self.conn.execute("SELECT history FROM sms_queue WHERE id = ?", (sms_id,)).fetchone()
        return [(float(a), str(w)) for a, w in json.loads(row[0])] if row else []


_SELECT = (
    "SELECT id, site, reason, ref, text, people, person, attempts, state, next_at, mrs,"
    " delivered FROM sms_queue"
)


def _sms(r: tuple[Any, ...]) -> Sms:
    return Sms(
        id=int(r[0]),
        site=r[1],
        reason=r[2],
        ref=r[3],
        text=r[4],
        people=tuple(Person(n, p) for n, p in json.loads(r[5])),
        person=int(r[6]),
        attempts=int(r[7]),
        state=r[8],
        next_at=float(r[9]),
        mrs=tuple(json.loads(r[10])),
        delivered=tuple(json.loads(r[11])),
    )
