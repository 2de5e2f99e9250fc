"""The journal's shared tables: written by the pipeline, read by reports.

Times are UTC seconds since the epoch (REAL). Other modules add their own tables with
``CREATE TABLE IF NOT EXISTS`` in the same database.
"""

from __future__ import annotations

import sqlite3

SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id             TEXT PRIMARY KEY,   -- '<gateway>-<unit>-<epoch>-<seq>' of its first ALARM
    site           TEXT NOT NULL,
    unit           TEXT NOT NULL,      -- boards.yaml unit id
    place          TEXT NOT NULL,
    kind           TEXT NOT NULL,      -- panic | duress | silent | medical | fire | other
    first_press_at REAL NOT NULL,
    received_at    REAL NOT NULL,      -- gateway received the first frame
    relayed_at     REAL,               -- broker PUBACK of the first publication
    presses        INTEGER NOT NULL,
    state          TEXT NOT NULL,      -- open | cancelled | police_ack | closed
    cancelled_at   REAL,               -- the unit's own cancel
    police_ack_at  REAL,
    police_ack_by  TEXT,
    disposition    TEXT,               -- from the police ack: genuine | false_alarm | test | NULL
    last_epoch     INTEGER NOT NULL,   -- counter of the latest ALARM folded in
    last_seq       INTEGER NOT NULL,
    closed_at      REAL,
    test           INTEGER NOT NULL DEFAULT 0  -- 1: opened in test mode (pipeline/testmode.py)
);
CREATE INDEX IF NOT EXISTS incidents_site_time ON incidents(site, first_press_at);
CREATE INDEX IF NOT EXISTS incidents_unit_state ON incidents(unit, state);

CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    site      TEXT NOT NULL,
    unit      TEXT,                    -- NULL for gateway or post events
    post      TEXT,                    -- guard post id for duty events
    route     TEXT,                    -- patrol route id for patrol events
    kind      TEXT NOT NULL,           -- see gateway/README.md: offline, low_battery, tamper, ...
    code      INTEGER,                 -- Contact ID event code (e.g. 302 low battery)
    qualifier INTEGER,                 -- Contact ID qualifier: 1 new, 3 restore, NULL none
    detail    TEXT NOT NULL DEFAULT '{}'  -- JSON
);
CREATE INDEX IF NOT EXISTS events_site_time ON events(site, at);
CREATE INDEX IF NOT EXISTS events_unit_kind ON events(unit, kind, at);
"""


def create_shared(conn: sqlite3.Connection) -> None:
    """Create the shared tables if they do not exist; add columns a journal lacks."""
    conn.executescript(SHARED_SCHEMA)
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(incidents)")}
    if "test" not in columns:  # a journal from before test mode
        conn.execute("ALTER TABLE incidents ADD COLUMN test INTEGER NOT NULL DEFAULT 0")
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(events)")}
    if "route" not in columns:  # a journal from before patrols
        conn.execute("ALTER TABLE events ADD COLUMN route TEXT")
