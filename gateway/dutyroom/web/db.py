"""The web duty room's own SQLite: history, accounts, sessions, audit, the live feed.

Nothing here comes from a gateway's journal: incidents and their timelines are what the
duty room received over MQTT (verified), so a restart of the server loses nothing on
screen. The database is created 0600: it holds password hashes and owners' phone numbers.
One writer per table: this module.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS accounts (
    name       TEXT PRIMARY KEY,    -- what the operator types to log in
    display    TEXT NOT NULL,       -- the name every ack carries
    role       TEXT NOT NULL,       -- operator | supervisor | viewer
    hash       TEXT NOT NULL,       -- argon2id
    created_at REAL NOT NULL,
    disabled   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,    -- sha256 of the cookie: a copied database logs nobody in
    name       TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    seen_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,              -- "user:<name>" or "addr:<ip>"
    at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, at);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,          -- login, login_failed, logout, take, tick, ack, ...
    subject TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS incidents (
    id         TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    topic      TEXT NOT NULL,       -- where its retained copy lives (open/<id>)
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL,
    closed     INTEGER NOT NULL DEFAULT 0,
    data       TEXT NOT NULL        -- the latest update as the gateway signed it
);
CREATE TABLE IF NOT EXISTS timeline (
    id       INTEGER PRIMARY KEY,
    incident TEXT NOT NULL,
    at       REAL NOT NULL,
    what     TEXT NOT NULL,         -- the gateway's update, or take/tick/ack here
    who      TEXT NOT NULL DEFAULT '',
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident, id);
CREATE TABLE IF NOT EXISTS takes (
    incident TEXT PRIMARY KEY,
    who      TEXT NOT NULL,
    at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    incident TEXT NOT NULL,
    step     INTEGER NOT NULL,
    who      TEXT NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (incident, step)
);
CREATE TABLE IF NOT EXISTS notes (
    incident    TEXT PRIMARY KEY,
    who         TEXT NOT NULL,
    disposition TEXT NOT NULL,
    note        TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
    topic TEXT PRIMARY KEY,         -- units, posts, gateways, register: the last of each
    at    REAL NOT NULL,
    data  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unit_history (
    unit  TEXT NOT NULL,
    at    REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS unit_history_unit ON unit_history(unit, at);
CREATE TABLE IF NOT EXISTS realerts (
    incident TEXT PRIMARY KEY,
    at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    topic TEXT PRIMARY KEY,
    site  TEXT NOT NULL,
    name  TEXT NOT NULL,
    at    REAL NOT NULL,
    text  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    incident  TEXT NOT NULL,        -- each gateway update once: (incident, update_no)
    update_no INTEGER NOT NULL,
    at        REAL NOT NULL,
    PRIMARY KEY (incident, update_no)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,         -- mqtt_client_id: this duty room's persistent session
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed (
    seq  INTEGER PRIMARY KEY,       -- the SSE event id: a browser resumes after it
    at   REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"""

FEED_KEEP = 5000
"""Feed rows kept for catch-up; a browser further behind reloads everything anyway."""


@dataclass(frozen=True, slots=True)
class Account:
    """A duty-room login."""

    name: str
    display: str
    role: str
    hash: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser."""

    name: str
    csrf: str
    created_at: float
    seen_at: float


class DutyDb:
    """The duty room's database (one connection, the server's event loop only)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (create 0600) the database at ``path``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = p
        self.conn = sqlite3.connect(p, isolation_level=None)
        self.conn.executescript(SCHEMA)
        self.conn.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _one(self, sql: str, *args: Any) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    # -- accounts and sessions -------------------------------------------------------------

    def put_account(self, name: str, display: str, role: str, hash_: str, at: float) -> None:
        """Create or replace an account."""
        self.conn.execute(
            "INSERT INTO accounts(name, display, role, hash, created_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET display=excluded.display, role=excluded.role,"
            " hash=excluded.hash, disabled=0",
            (name, display, role, hash_, at),
        )

    def set_hash(self, name: str, hash_: str) -> None:
        """Store a re-hashed password (argon2 parameters raised since)."""
        self.conn.execute("UPDATE accounts SET hash = ? WHERE name = ?", (hash_, name))

    def account(self, name: str) -> Account | None:
        """The account ``name``, if any."""
        row = self._one(
            "SELECT name, display, role, hash, disabled FROM accounts WHERE name = ?", name
        )
        return None if row is None else Account(row[0], row[1], row[2], row[3], bool(row[4]))

    def accounts(self) -> list[Account]:
        """Every account, by name."""
        rows = self._all("SELECT name, display, role, hash, disabled FROM accounts ORDER BY name")
        return [Account(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def add_session(self, token_hash: str, name: str, csrf: str, at: float) -> None:
        """A browser logged in."""
        self.conn.execute(
            "INSERT INTO sessions(token_hash, name, csrf, created_at, seen_at) VALUES (?,?,?,?,?)",
            (token_hash, name, csrf, at, at),
        )

    def session(self, token_hash: str) -> Session | None:
        """The session of a cookie, if any."""
        row = self._one(
            "SELECT name, csrf, created_at, seen_at FROM sessions WHERE token_hash = ?", token_hash
        )
        return None if row is None else Session(row[0], row[1], row[2], row[3])

    def touch_session(self, token_hash: str, at: float) -> None:
        """The session was used at ``at`` (its idle timeout starts again)."""
        self.conn.execute("UPDATE sessions SET seen_at = ? WHERE token_hash = ?", (at, token_hash))

    def drop_session(self, token_hash: str) -> None:
        """Log a browser out (or expire its session)."""
        self.conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def failure(self, key: str, at: float, forget_before: float) -> None:
        """A failed login for ``key``; failures before ``forget_before`` are dropped."""
        self.conn.execute("DELETE FROM login_failures WHERE at < ?", (forget_before,))
        self.conn.execute("INSERT INTO login_failures(key, at) VALUES (?, ?)", (key, at))

    def failures_since(self, key: str, since: float) -> list[float]:
        """Times of ``key``'s failed logins since ``since``, oldest first."""
        rows = self._all(
            "SELECT at FROM login_failures WHERE key = ? AND at >= ? ORDER BY at", key, since
        )
        return [float(r[0]) for r in rows]

    def clear_failures(self, key: str) -> None:
        """A successful login forgets the failures of its user."""
        self.conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))

    # -- audit -----------------------------------------------------------------------------

    def audit(self, at: float, who: str, action: str, subject: str = "", detail: str = "") -> None:
        """Append to the audit log."""
        self.conn.execute(
            "INSERT INTO audit(at, who, action, subject, detail) VALUES (?,?,?,?,?)",
            (at, who, action, subject, detail),
        )

    def audit_rows(self, limit: int = 200) -> list[tuple[float, str, str, str, str]]:
        """The newest audit entries first."""
        rows = self._all(
            "SELECT at, who, action, subject, detail FROM audit ORDER BY id DESC LIMIT ?", limit
        )
        return [tuple(r) for r in rows]

    # -- incidents -------------------------------------------------------------------------

    def put_incident(
        self, iid: str, site: str, topic: str, data: dict[str, Any], at: float, what: str
    ) -> str:
        """Keep an update of ``iid``: ``applied``, ``late`` or ``seen``.

        Each (incident, update_no) is taken once: its retained copy, a re-sent message
        (at least once) and the queue of a persistent session all carry it again
        (``seen``: nothing changes). An update older than the one shown (it arrived after
        a newer one, on another topic or node) goes into the timeline, marked, but never
        replaces the newer state (``late``). Anything else becomes the incident's state.
        """
        number = _int(data.get("update_no"))
        if number > 0:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO updates(incident, update_no, at) VALUES (?,?,?)",
                (iid, number, at),
            )
            if cur.rowcount == 0:
                return "seen"
        row = self._one("SELECT data, closed FROM incidents WHERE id = ?", iid)
        closed = int(data.get("state") == "closed")
        text = json.dumps(data, ensure_ascii=False)
        by = str(data.get("police_ack_by") or "")
        if row is None:
            self.conn.execute(
                "INSERT INTO incidents(id, site, topic, first_seen, updated_at, closed, data)"
                " VALUES (?,?,?,?,?,?,?)",
                (iid, site, topic, at, at, closed, text),
            )
        else:
            old = json.loads(row[0])
            shown = _int(old.get("update_no"))
            if number == shown and (number > 0 or old == data):
                return "seen"  # a database older than the updates table, or unnumbered
            if number < shown:
                detail = f"update {number} arrived after update {shown}: not applied"
                self.add_timeline(iid, at, what, by, detail)
                return "late"
            self.conn.execute(
                "UPDATE incidents SET updated_at = ?, closed = ?, data = ? WHERE id = ?",
                (at, closed, text, iid),
            )
            if row[1] and closed:
                # its retained copy's clearing came first (another topic) and said so
                return "applied"
        self.add_timeline(iid, at, what, by, "")
        return "applied"

    def close_incident(self, iid: str, at: float) -> None:
        """Its retained copy was cleared: the gateway closed it."""
        row = self._one("SELECT data, closed FROM incidents WHERE id = ?", iid)
        if row is None or row[1]:
            return
        data = {**json.loads(row[0]), "state": "closed"}
        self.conn.execute(
            "UPDATE incidents SET closed = 1, updated_at = ?, data = ? WHERE id = ?",
            (at, json.dumps(data, ensure_ascii=False), iid),
        )
        self.add_timeline(iid, at, "closed")

    def incident(self, iid: str) -> dict[str, Any] | None:
        """The latest update of ``iid``."""
        row = self._one("SELECT data FROM incidents WHERE id = ?", iid)
        return None if row is None else dict(json.loads(row[0]))

    def incidents_shown(
        self, closed_since: float, closed_only: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        """(topic, data) of what the board shows, oldest first.

        Incidents open (unless ``closed_only``), and those closed since ``closed_since``.
        """
        rows = self._all(
            "SELECT topic, data FROM incidents WHERE (closed = 0 AND NOT ?)"
            " OR (closed = 1 AND updated_at >= ?) ORDER BY first_seen",
            int(closed_only),
            closed_since,
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest incidents first, closed ones too."""
        rows = self._all("SELECT data FROM incidents ORDER BY first_seen DESC LIMIT ?", limit)
        return [json.loads(r[0]) for r in rows]

    def add_timeline(self, iid: str, at: float, what: str, who: str = "", detail: str = "") -> None:
        """Append to an incident's timeline."""
        self.conn.execute(
            "INSERT INTO timeline(incident, at, what, who, detail) VALUES (?,?,?,?,?)",
            (iid, at, what, who, detail),
        )

    def timeline(self, iid: str) -> list[tuple[float, str, str, str]]:
        """(at, what, who, detail) of ``iid``, oldest first."""
        rows = self._all(
            "SELECT at, what, who, detail FROM timeline WHERE incident = ? ORDER BY id", iid
        )
        return [tuple(r) for r in rows]

    def take(self, iid: str, who: str, at: float) -> None:
        """``who`` handles ``iid`` from now on (taking over from anyone before)."""
        self.conn.execute(
            "INSERT INTO takes(incident, who, at) VALUES (?,?,?) ON CONFLICT(incident)"
            " DO UPDATE SET who = excluded.who, at = excluded.at",
            (iid, who, at),
        )

    def takes(self) -> dict[str, tuple[str, float]]:
        """Incident -> (who, since)."""
        return {r[0]: (r[1], r[2]) for r in self._all("SELECT incident, who, at FROM takes")}

    def tick(self, iid: str, step: int, who: str, at: float) -> bool:
        """Tick a step of the action plan; False if it was ticked before."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO ticks(incident, step, who, at) VALUES (?,?,?,?)",
            (iid, step, who, at),
        )
        return cur.rowcount == 1

    def ticks(self, iid: str) -> dict[int, tuple[str, float]]:
        """Step -> (who, at) of ``iid``."""
        rows = self._all("SELECT step, who, at FROM ticks WHERE incident = ?", iid)
        return {r[0]: (r[1], r[2]) for r in rows}

    def put_note(self, iid: str, who: str, disposition: str, note: str, at: float) -> None:
        """The acknowledgement's disposition and note, as the operator gave them."""
        self.conn.execute(
            "INSERT INTO notes(incident, who, disposition, note, at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(incident) DO UPDATE SET who=excluded.who,"
            " disposition=excluded.disposition, note=excluded.note, at=excluded.at",
            (iid, who, disposition, note, at),
        )

    def note(self, iid: str) -> tuple[str, str, str, float] | None:
        """(who, disposition, note, at) of ``iid``'s acknowledgement here."""
        row = self._one("SELECT who, disposition, note, at FROM notes WHERE incident = ?", iid)
        return None if row is None else (row[0], row[1], row[2], row[3])

    def realerted(self, iid: str, at: float) -> bool:
        """Mark ``iid`` re-alerted; False if it was before."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO realerts(incident, at) VALUES (?, ?)", (iid, at)
        )
        return cur.rowcount == 1

    def realerts(self) -> dict[str, float]:
        """Incident -> when it re-alerted."""
        return {r[0]: r[1] for r in self._all("SELECT incident, at FROM realerts")}

    # -- the rest of what the board shows ----------------------------------------------------

    def put_latest(self, topic: str, data: Any, at: float) -> None:
        """The latest message on ``topic`` (None: the retained copy was cleared)."""
        if data is None:
            self.conn.execute("DELETE FROM latest WHERE topic = ?", (topic,))
            return
        self.conn.execute(
            "INSERT INTO latest(topic, at, data) VALUES (?,?,?) ON CONFLICT(topic)"
            " DO UPDATE SET at = excluded.at, data = excluded.data",
            (topic, at, json.dumps(data, ensure_ascii=False)),
        )

    def latest(self) -> Iterator[tuple[str, Any]]:
        """(topic, data) of every kept message, oldest first."""
        for topic, data in self._all("SELECT topic, data FROM latest ORDER BY at"):
            yield topic, json.loads(data)

    def unit_state(self, unit: str, state: str, at: float) -> None:
        """Record a unit's state if it changed (for its availability)."""
        row = self._one(
            "SELECT state FROM unit_history WHERE unit = ? ORDER BY at DESC LIMIT 1", unit
        )
        if row is None or row[0] != state:
            self.conn.execute(
                "INSERT INTO unit_history(unit, at, state) VALUES (?,?,?)", (unit, at, state)
            )

    def availability(self, unit: str, since: float, now: float) -> float | None:
        """Share of [since, now] the unit was not offline (None: never seen in it)."""
        rows = self._all("SELECT at, state FROM unit_history WHERE unit = ? ORDER BY at", unit)
        if not rows or now <= since:
            return None
        state: str | None = None
        t = since
        down = up = 0.0
        for at, st in rows:
            if at > since and state is not None:
                span = min(at, now) - max(t, since)
                if span > 0:
                    down, up = (down + span, up) if state == "offline" else (down, up + span)
            t, state = max(at, since), st
        if state is not None and now > t:
            down, up = (down + now - t, up) if state == "offline" else (down, up + now - t)
        total = down + up
        return None if total <= 0 else up / total

    def put_report(self, topic: str, site: str, name: str, text: str, at: float) -> None:
        """A report a gateway published."""
        self.conn.execute(
            "INSERT INTO reports(topic, site, name, at, text) VALUES (?,?,?,?,?)"
            " ON CONFLICT(topic) DO UPDATE SET at = excluded.at, text = excluded.text",
            (topic, site, name, at, text),
        )

    def reports(self) -> list[tuple[str, str, str, float]]:
        """(topic, site, name, at) of every report, newest first."""
        rows = self._all("SELECT topic, site, name, at FROM reports ORDER BY at DESC")
        return [tuple(r) for r in rows]

    def report(self, topic: str) -> str | None:
        """A report's text."""
        row = self._one("SELECT text FROM reports WHERE topic = ?", topic)
        return None if row is None else str(row[0])

    def client_id(self, make: str) -> str:
        """The duty room's MQTT client id: ``make`` the first time, the same ever after."""
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('mqtt_client_id', ?)", (make,)
        )
        return str(self._one("SELECT value FROM meta WHERE key = 'mqtt_client_id'")[0])

    # -- the live feed -------------------------------------------------------------------------

    def feed_add(self, at: float, kind: str, data: dict[str, Any]) -> int:
        """Append to the feed; its sequence number (the SSE id)."""
        cur = self.conn.execute(
            "INSERT INTO feed(at, kind, data) VALUES (?,?,?)",
            (at, kind, json.dumps(data, ensure_ascii=False)),
        )
        seq = int(cur.lastrowid or 0)
        if seq % 500 == 0:
            self.conn.execute("DELETE FROM feed WHERE seq <= ?", (seq - FEED_KEEP,))
        return seq

    def feed_after(self, seq: int) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, kind, data) after ``seq``, oldest first."""
        rows = self._all("SELECT seq, kind, data FROM feed WHERE seq > ? ORDER BY seq", seq)
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def feed_last(self) -> int:
        """The newest sequence number (0 when empty)."""
        row = self._one("SELECT MAX(seq) FROM feed")
        return int(row[0] or 0)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
