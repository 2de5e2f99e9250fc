"""Test (maintenance) mode of a unit or a whole site, with an expiry: the table and its rules.

While a unit is in test mode (its own entry, or its site's), every incident it opens is
marked ``test: true`` in the journal and in what the police receive: the alarm still goes
out at once (the police see it, and that the installer is testing), and the report counts
it apart from real alarms. The mode ends by itself at its ``until``. ``campusguard
test-mode`` writes the table (the journal's ``test_mode``); the gateway reads it: the
incident book when an incident opens, :class:`TestModeWatch` for the start and end
events (``test_mode``, Contact ID 607, qualifier 1 / 3).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.config import Config, Unit
from gateway.core.contact_id import NEW, RESTORE, code_of
from gateway.pipeline.ports import Outlet
from protocol.messages import Frame

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS test_mode (
    target  TEXT NOT NULL,     -- a unit id or a site id
    scope   TEXT NOT NULL,     -- 'unit' | 'site'
    set_at  REAL NOT NULL,
    until   REAL NOT NULL,     -- the mode ends by itself then
    by      TEXT,
    PRIMARY KEY (scope, target)
);
"""
MAX_FOR_S = 7 * 86400.0
"""The longest test mode: a week (a forgotten one must not hide alarms for ever)."""
POLL_S = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Mode:
    """One test mode entry."""

    scope: str
    target: str
    set_at: float
    until: float
    by: str | None


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` -> seconds; ValueError if not that or too long."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"--for {text!r}: give a duration like 30m, 2h or 1d")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not 0 < seconds <= MAX_FOR_S:
        raise ValueError(f"--for {text!r}: between 1 s and {MAX_FOR_S / 86400:.0f} days")
    return seconds


def create(conn: sqlite3.Connection) -> None:
    """Create the table if it does not exist."""
    conn.executescript(SCHEMA)


def set_mode(
    conn: sqlite3.Connection, scope: str, target: str, *, at: float, until: float, by: str | None
) -> None:
    """Put ``target`` in test mode until ``until`` (replacing an earlier entry)."""
    conn.execute(
        "INSERT INTO test_mode(target, scope, set_at, until, by) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(scope, target) DO UPDATE SET set_at = excluded.set_at, "
        "until = excluded.until, by = excluded.by",
        (target, scope, at, until, by),
    )


def end_mode(conn: sqlite3.Connection, scope: str, target: str, *, at: float) -> bool:
    """End ``target``'s test mode now; False if it was not in test mode."""
    cur = conn.execute(
        "UPDATE test_mode SET until = ? WHERE scope = ? AND target = ? AND until > ?",
        (at, scope, target, at),
    )
    return cur.rowcount > 0


def open_modes(db: str | Path) -> sqlite3.Connection:
    """The journal at ``db`` with its test-mode table, for a command beside the gateway.

    ValueError when there is no journal yet.
    """
    if not Path(db).is_file():
        raise ValueError(f"no journal at {db} (start the gateway once, or give --db PATH)")
    conn = sqlite3.connect(db, isolation_level=None, timeout=10.0)
    try:
        create(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def scope_of(config: Config, target: str, register: str | Path) -> str:
    """What ``target`` is in the register: "unit" or "site" (ValueError: neither)."""
    if target in config.units:
        return "unit"
    if target in config.sites:
        return "site"
    raise ValueError(f"{target!r} is neither a unit nor a site in {register}")


def begin_mode(
    conn: sqlite3.Connection, scope: str, target: str, *, at: float, until: float, by: str | None
) -> None:
    """:func:`set_mode` in a transaction of its own, taken before the gateway can write."""
    conn.execute("BEGIN IMMEDIATE")
    set_mode(conn, scope, target, at=at, until=until, by=by)
    conn.execute("COMMIT")


def active(conn: sqlite3.Connection, at: float) -> list[Mode]:
    """The entries in force at ``at``."""
    rows = conn.execute(
        "SELECT scope, target, set_at, until, by FROM test_mode WHERE until > ? AND set_at <= ?"
        " ORDER BY scope, target",
        (at, at),
    ).fetchall()
    return [Mode(str(s), str(t), float(a), float(u), b) for s, t, a, u, b in rows]


def unit_mode(conn: sqlite3.Connection, unit: Unit, at: float) -> Mode | None:
    """The test mode ``unit`` is in at ``at`` (its own or its site's), if any."""
    row = conn.execute(
        "SELECT scope, target, set_at, until, by FROM test_mode WHERE until > ? AND set_at <= ?"
        " AND ((scope = 'unit' AND target = ?) OR (scope = 'site' AND target = ?))"
        " ORDER BY until DESC LIMIT 1",
        (at, at, unit.id, unit.site),
    ).fetchone()
    if row is None:
        return None
    s, t, a, u, b = row
    return Mode(str(s), str(t), float(a), float(u), b)


class TestModeWatch:
    """Reports test modes as they begin and end; a :class:`gateway.pipeline.ports.Watcher`."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, config: Config, outlet: Outlet, conn: sqlite3.Connection) -> None:
        """Create the table; the modes in force now are reported at the first tick."""
        self.config = config
        self.outlet = outlet
        self.conn = conn
        create(conn)
        self._known: dict[tuple[str, str], Mode] = {}
        self._next = -1e18

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """Frames do not change test modes."""

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links do not change test modes."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """Test modes are set on the Pi (``campusguard test-mode``), not over MQTT."""

    def tick(self, now: float) -> None:
        """Look at the table about once a second: a mode begun, changed or ended."""
        if now < self._next:
            return
        self._next = now + POLL_S
        current = {(m.scope, m.target): m for m in active(self.conn, now)}
        for key, mode in current.items():
            old = self._known.get(key)
            if old is None or old.until != mode.until:
                self._event(mode, NEW, max(mode.set_at, now if old is None else mode.set_at))
        for key, mode in self._known.items():
            if key not in current:
                self._event(mode, RESTORE, min(now, mode.until))
        self._known = current

    def _event(self, mode: Mode, qualifier: int, at: float) -> None:
        site = mode.target if mode.scope == "site" else self._site_of(mode.target)
        detail: dict[str, Any] = {
            "scope": mode.scope,
            "target": mode.target,
            "until": mode.until,
            "by": mode.by,
        }
        log.warning(
            "test mode %s for %s %s (until %.0f)",
            "begins" if qualifier == NEW else "ends",
            mode.scope,
            mode.target,
            mode.until,
        )
        self.outlet.event(
            site=site,
            kind="test_mode",
            at=at,
            unit=mode.target if mode.scope == "unit" else None,
            code=code_of("test_mode"),
            qualifier=qualifier,
            detail=detail,
        )

    def _site_of(self, unit_id: str) -> str:
        unit = self.config.units.get(unit_id)
        return unit.site if unit is not None else self.config.site
