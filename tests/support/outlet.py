"""The pipeline's Outlet port without the pipeline: events journaled as its store does.

    conn = open_journal(tmp / "g.db")      # the gateway's journal: WAL, the shared tables
    outlet = JournalOutlet(conn)           # hand it to a watcher: every event recorded
    watch = DutyWatch(config, outlet, conn, clock, tz=tz)
    outlet.events[-1]["kind"]              # ... and written to the ``events`` table

For the watchers' tests and the simulations in bench/ (duty, patrol), which fill a
journal without a running gateway.
"""

from __future__ import annotations

import inspect
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.journal.schema import create_shared
from gateway.journal.store import insert_event
from gateway.pipeline.ports import Outlet
from protocol.messages import SignalPattern

# an event's arguments, declared once: by the pipeline's port
EVENT = inspect.signature(Outlet.event)


def open_journal(path: Path) -> sqlite3.Connection:
    """Open the journal the way the gateway store does: autocommit, WAL, synchronous
    NORMAL (no fsync per commit: the store's WalSync does that), shared tables."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    create_shared(conn)
    return conn


class JournalOutlet:
    """The Outlet port: each event kept in ``events`` (a dict a call: its ``kept``
    arguments) and, given a journal, written to its ``events`` table as the pipeline's
    store writes it. Signals to units and retained states go nowhere (a subclass keeps
    what it needs)."""

    # what a record in ``events`` keeps of a call: every argument of the port
    kept: tuple[str, ...] = tuple(name for name in EVENT.parameters if name != "self")

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []

    def event(self, **kw: Any) -> None:
        """Keep and journal one event; the arguments (and their defaults) are the Outlet
        port's, bound to its declaration, so a call the pipeline would refuse fails here."""
        call = EVENT.bind(self, **kw)
        call.apply_defaults()
        e = {name: value for name, value in call.arguments.items() if name != "self"}
        e["detail"] = dict(e["detail"] or {})
        self.events.append({name: e[name] for name in self.kept})
        if self.conn is not None:
            columns = {name: e[name] for name in e if name not in ("detail", "topic")}
            insert_event(self.conn, **columns, detail=json.dumps(e["detail"], sort_keys=True))

    def signal(self, unit: str, pattern: SignalPattern, duration_s: int) -> None:
        """A unit's buzzer or light: nothing to journal."""

    def retain(self, *, site: str, topic: str, payload: Mapping[str, Any], at: float) -> None:
        """Retained states are for duty-room clients: nothing to journal."""
