"""Unit supervision: silent units, battery, mains, tamper, stuck buttons and periodic tests.

:class:`Supervisor` is a :class:`gateway.pipeline.ports.Watcher`. From every authentic uplink frame
and from silence it derives the unit's conditions and reports each *change* once through
:meth:`gateway.pipeline.ports.Outlet.event` (topic ``event``), with the Contact ID code from
:mod:`gateway.core.contact_id` and qualifier 1 (began) or 3 (restored):

- **offline / online** (381): a unit is offline after ``missed_heartbeats`` heartbeats
  did not come (silence longer than ``(missed_heartbeats + 0.5) * heartbeat_s``). It is
  online again only when it has been heard for at least half a heartbeat interval (two
  frames that far apart, typically its next heartbeat, without a silent window between
  them): a unit that gets one frame through now and then stays offline instead of
  flapping.
- **conditions** from HEARTBEAT flags and FAULT frames: tamper (383), low_battery (302),
  mains_lost (301), button_stuck (380), safe_mode (300), storage_fault (300), link_lost
  (350). A flag repeated in every heartbeat is one event until it restores; a restore
  from heartbeats needs the flag clear in two heartbeats in a row (five for low battery,
  whose reading wavers at the threshold); a FAULT frame with ``active=0`` restores at
  once. watchdog_reset (305) is a single event.
- **tests**: every TEST frame is a ``test`` event (602 periodic, 601 manual);
  test_failed (307) while tests fail; test_missing (354) when no periodic TEST came
  within ``test_interval_h`` plus a margin (half the interval, at most an hour). A unit
  that is offline is not also reported for a missing test.

State lives in SQLite (tables ``supervision_unit`` and ``supervision_condition``), so a
gateway restart neither repeats an offline or tamper event nor loses a restore. After a
start every unit gets a full supervision window before it can be called offline: the
gateway's own outage is not the units' fault (the police see it on the gateway's LWT
status topic).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.core.clock import Clock
from gateway.core.config import Config, Unit
from gateway.core.contact_id import MANUAL_TEST_CODE, NEW, RESTORE, code_of
from gateway.core.timefmt import iso
from gateway.pipeline.ports import Outlet
from protocol.messages import (
    Fault,
    FaultCode,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Test,
    TestKind,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS supervision_unit (
    unit       TEXT PRIMARY KEY,   -- boards.yaml unit id
    online     INTEGER NOT NULL,   -- 1 online (or not yet judged), 0 reported offline
    changed_at REAL NOT NULL,      -- when online last changed
    last_seen  REAL,               -- latest frame, as of the last state change
    last_test  REAL                -- latest periodic TEST frame
);
CREATE TABLE IF NOT EXISTS supervision_condition (
    unit  TEXT NOT NULL,
    kind  TEXT NOT NULL,           -- a gateway.core.contact_id condition kind
    since REAL NOT NULL,
    PRIMARY KEY (unit, kind)
);
"""

INSTALL_SCHEMA = """
CREATE TABLE IF NOT EXISTS supervision_install (
    unit        TEXT PRIMARY KEY,  -- boards.yaml unit id
    first_heard REAL,              -- its first authentic frame (NULL: not installed yet)
    noticed_at  REAL               -- when the security lead was told it is not installed
);
"""

STATES_PER_TICK = 10
"""Retained unit states published per tick at most (the pipeline ticks 5 times a second)."""
STATE_REFRESH_S = 600.0
"""A unit's retained state is published on every change, and at least this often while it
is heard (so ``last_heard`` on a duty room's board is never older than this)."""

FLAG_CONDITIONS: dict[HeartbeatFlags, str] = {
    HeartbeatFlags.TAMPER: "tamper",
    HeartbeatFlags.LOW_BATTERY: "low_battery",
    HeartbeatFlags.MAINS_LOST: "mains_lost",
    HeartbeatFlags.BUTTON_STUCK: "button_stuck",
    HeartbeatFlags.SAFE_MODE: "safe_mode",
}
"""HEARTBEAT flag -> condition kind (the flag set means the condition is active)."""

FAULT_CONDITIONS: dict[FaultCode, str] = {
    FaultCode.TAMPER: "tamper",
    FaultCode.BUTTON_STUCK: "button_stuck",
    FaultCode.LOW_BATTERY: "low_battery",
    FaultCode.MAINS_LOST: "mains_lost",
    FaultCode.SAFE_MODE: "safe_mode",
    FaultCode.STORAGE: "storage_fault",
    FaultCode.LINK_LOST: "link_lost",
}
"""FAULT code -> condition kind (``active`` 1 begins it, 0 restores it)."""

RESTORE_HEARTBEATS: dict[str, int] = {"low_battery": 5}
"""Heartbeats in a row with the flag clear before a condition restores (default 2)."""

TEST_BITS = ("battery", "button", "storage", "sounder")
"""TEST ``result`` bits, bit 0 first (SPEC.md 2.5)."""


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block atomically on ``conn``: its own transaction, or the caller's if open.

    Works on connections in autocommit mode (``isolation_level=None``, as the gateway's
    store opens them) and in the sqlite3 module's default mode.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _load_installs(conn: sqlite3.Connection) -> dict[str, tuple[float | None, float | None]]:
    """Installed units: id -> (first heard, noticed at); seeded from the journal at first.

    A journal older than the table knows its installed units from the frames it holds:
    they must not turn "not installed" (and unsupervised) by an upgrade.
    """
    new = (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'supervision_install'"
        ).fetchone()
        is None
    )
    conn.execute(INSTALL_SCHEMA)
    if new:
        conn.execute(
            "INSERT OR IGNORE INTO supervision_install(unit, first_heard) "
            "SELECT unit, last_seen FROM supervision_unit WHERE last_seen IS NOT NULL"
        )
        has_frames = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'frames'"
        ).fetchone()
        if has_frames is not None:
            conn.execute(
                "INSERT OR IGNORE INTO supervision_install(unit, first_heard) "
                "SELECT unit, min(at) FROM frames GROUP BY unit"
            )
    return {
        str(u): (h, n)
        for u, h, n in conn.execute("SELECT unit, first_heard, noticed_at FROM supervision_install")
    }


def offline_after(unit: Unit) -> float:
    """Seconds of silence after which ``unit`` is reported offline."""
    return (unit.missed_heartbeats + 0.5) * unit.heartbeat_s


def test_margin(unit: Unit) -> float:
    """Seconds a periodic TEST may be late before it counts as missing."""
    return min(3600.0, unit.test_interval_h * 3600 / 2)


@dataclass(slots=True)
class _UnitState:
    online: bool
    changed_at: float
    deadline: float  # offline when silent until then (only while online)
    test_deadline: float  # test_missing when no periodic TEST by then (only while online)
    last_seen: float | None = None
    last_test: float | None = None
    back_first: float | None = None  # while offline: first frame of the current comeback
    back_last: float | None = None
    conditions: dict[str, float] = field(default_factory=dict)
    clear_count: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    installed: bool = True  # False until the unit's first authentic frame ever
    noticed: bool = False  # the security lead was told it is not installed
    battery_mv: int | None = None
    fw: str | None = None
    published: tuple[Any, ...] | None = None  # what the retained state last said
    published_at: float = -1e18


class Supervisor:
    """Supervises every registered unit; a :class:`gateway.pipeline.ports.Watcher`."""

    def __init__(
        self,
        config: Config,
        outlet: Outlet,
        conn: sqlite3.Connection,
        clock: Clock,
    ) -> None:
        """Load the persisted supervision state from ``conn`` (creating the tables).

        ``conn`` is the gateway store's connection, used from the event-loop thread only.
        Every unit gets a full supervision window from now before it can be offline.
        """
        self.config = config
        self.outlet = outlet
        self.conn = conn
        self.clock = clock
        self.started_at = clock.now()
        self.links_up: dict[str, bool] = {}
        with transaction(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            installs = _load_installs(conn)
        self.units: dict[str, _UnitState] = {}
        rows = {
            str(r[0]): r
            for r in conn.execute(
                "SELECT unit, online, changed_at, last_seen, last_test FROM supervision_unit"
            )
        }
        conds: dict[str, dict[str, float]] = {}
        for unit_id, kind, since in conn.execute(
            "SELECT unit, kind, since FROM supervision_condition"
        ):
            conds.setdefault(str(unit_id), {})[str(kind)] = float(since)
        t = self.started_at
        new_rows: list[tuple[str, float]] = []
        for unit in config.units.values():
            row = rows.get(unit.id)
            last_test = None if row is None or row[4] is None else float(row[4])
            test_due = t + unit.test_interval_h * 3600 + test_margin(unit)
            if last_test is not None:
                test_due = max(
                    last_test + unit.test_interval_h * 3600 + test_margin(unit),
                    t + test_margin(unit),
                )
            st = _UnitState(
                online=True if row is None else bool(row[1]),
                changed_at=t if row is None else float(row[2]),
                deadline=t + offline_after(unit),
                test_deadline=test_due,
                last_seen=None if row is None or row[3] is None else float(row[3]),
                last_test=last_test,
                conditions=conds.get(unit.id, {}),
            )
            heard, noticed = installs.get(unit.id, (None, None))
            st.installed = heard is not None
            st.noticed = noticed is not None
            self.units[unit.id] = st
            if row is None:
                new_rows.append((unit.id, t))
        with transaction(conn):
            conn.executemany(
                "INSERT INTO supervision_unit(unit, online, changed_at) VALUES (?, 1, ?)",
                new_rows,
            )
        offline = [u for u, s in self.units.items() if not s.online]
        log.info(
            "supervising %d units (%d reported offline before this start)",
            len(self.units),
            len(offline),
        )
        waiting = [u for u, s in self.units.items() if not s.installed]
        if waiting:
            log.warning(
                "%d unit(s) not installed yet (no authentic frame ever): %s; for each, run "
                "`campusguard keygen UNIT` and `campusguard deploy UNIT` (firmware/README.md); "
                "they are not supervised until their first frame",
                len(waiting),
                ", ".join(waiting),
            )
        self._announced = False
        self._dirty: set[str] = set()  # units whose retained state may have changed

    # -- Watcher -------------------------------------------------------------------------

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """Account a fresh authentic frame from ``unit``: it is alive, and what it says."""
        st = self.units.get(unit.id)
        if st is None:
            log.warning("frame from unit %s that is not supervised", unit.id)
            return
        try:
            if not st.installed:
                self._install(unit, st, at)
        except Exception:
            log.exception("supervision of unit %s: first frame not recorded", unit.id)
        self._deadlines(at)
        try:
            self._heard(unit, st, at)
            body = frame.body
            if isinstance(body, Heartbeat):
                self._heartbeat(unit, st, body, at)
            elif isinstance(body, Fault):
                self._fault(unit, st, body, at)
            elif isinstance(body, Test):
                self._test(unit, st, body, at)
            self._dirty.add(unit.id)  # its retained state goes out at the next tick
        except Exception:
            log.exception("supervision of unit %s failed on a %s frame", unit.id, frame.type.name)

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Note a serial link's state (named in offline events of its units)."""
        self.links_up[link] = up

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """Supervision takes no commands."""

    def tick(self, now: float) -> None:
        """Report units whose supervision window or periodic test deadline has passed.

        The first tick publishes every unit's retained state (and tells the security
        lead, once per unit, of units not installed yet).
        """
        if not self._announced:
            self._announced = True
            self._announce(now)
        self._deadlines(now)
        # retained states after the frames' own messages, one per unit and tick and at
        # most STATES_PER_TICK: in a burst of alarms they trickle out behind the alarms
        for unit_id in sorted(self._dirty)[:STATES_PER_TICK]:
            self._dirty.discard(unit_id)
            self._safely(self._state_of, unit_id, now)

    def _deadlines(self, now: float) -> None:
        for unit_id, st in self.units.items():
            if not st.installed:
                if not st.noticed and now >= self.started_at + offline_after(
                    self.config.units[unit_id]
                ):
                    self._safely(self._notice_not_installed, unit_id, now)
                continue
            if not st.online:
                continue
            unit = self.config.units[unit_id]
            try:
                if now >= st.deadline:
                    self._go_offline(unit, st, now)
                elif now >= st.test_deadline and "test_missing" not in st.conditions:
                    self._set_condition(
                        unit,
                        st,
                        "test_missing",
                        True,
                        now,
                        {
                            "last_test": st.last_test,
                            "test_interval_h": unit.test_interval_h,
                            "deadline": st.test_deadline,
                        },
                    )
            except Exception:
                log.exception("supervision of unit %s failed at %.3f", unit_id, now)

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` may report something (None: nothing)."""
        times: list[float] = []
        for st in self.units.values():
            if st.online and st.installed:
                times.append(st.deadline)
                if "test_missing" not in st.conditions:
                    times.append(st.test_deadline)
        return min(times, default=None)

    # -- queries -------------------------------------------------------------------------

    def is_online(self, unit_id: str) -> bool:
        """True unless ``unit_id`` is currently reported offline."""
        return self.units[unit_id].online

    def is_installed(self, unit_id: str) -> bool:
        """True once ``unit_id`` has sent an authentic frame (ever); unknown ids: False."""
        st = self.units.get(unit_id)
        return st is not None and st.installed

    def unit_state(self, unit_id: str, at: float) -> dict[str, Any]:
        """The unit's state as its retained ``unit/<unit>/state`` message says it."""
        unit = self.config.units[unit_id]
        st = self.units[unit_id]
        state = "not_installed" if not st.installed else "online" if st.online else "offline"
        return {
            "unit": unit.id,
            "site": unit.site,
            "place": unit.place,
            "role": unit.role,
            "state": state,
            "since": iso(st.changed_at) if st.installed else None,
            "last_heard": iso(st.last_seen),
            "battery_mv": st.battery_mv,
            "low_battery": "low_battery" in st.conditions,
            "tamper": "tamper" in st.conditions,
            "mains_lost": "mains_lost" in st.conditions,
            "conditions": {k: iso(v) for k, v in sorted(st.conditions.items())},
            "fw": st.fw,
            "at": iso(at),
        }

    def active_conditions(self, unit_id: str) -> dict[str, float]:
        """The unit's active conditions, kind -> since (a copy)."""
        return dict(self.units[unit_id].conditions)

    # -- installation and retained state ------------------------------------------------

    def _install(self, unit: Unit, st: _UnitState, at: float) -> None:
        """The unit's first authentic frame ever: from now on it is supervised."""
        st.installed = True
        st.online = True
        st.changed_at = at
        st.deadline = at + offline_after(unit)
        st.test_deadline = at + unit.test_interval_h * 3600 + test_margin(unit)
        log.warning("unit %s (%s): first frame, installed", unit.id, unit.place)
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO supervision_install(unit, first_heard) VALUES (?, ?) "
                "ON CONFLICT(unit) DO UPDATE SET first_heard = excluded.first_heard",
                (unit.id, at),
            )
        self._save_unit(unit, st)

    def _announce(self, now: float) -> None:
        for unit_id, st in self.units.items():
            unit = self.config.units[unit_id]
            try:
                self._publish_state(unit, st, now, force=True)
            except Exception:
                log.exception("supervision of unit %s: state not published", unit_id)

    def _safely(self, fn: Callable[[str, float], None], unit_id: str, now: float) -> None:
        try:
            fn(unit_id, now)
        except Exception:
            log.exception("supervision of unit %s failed at %.3f", unit_id, now)

    def _notice_not_installed(self, unit_id: str, now: float) -> None:
        """Tell the security lead, once, of a unit not heard in a window after the start.

        Not at once: at the first start of a new gateway its units are heard within a
        heartbeat or so; only a unit still silent after its supervision window waits
        for someone to install it.
        """
        unit = self.config.units[unit_id]
        st = self.units[unit_id]
        site = self.config.sites.get(unit.site)
        self._emit(
            unit,
            "not_installed",
            NEW,
            now,
            {
                "security_lead": dict(site.security_lead) if site is not None else None,
                "action": f"Unit {unit.id} ({unit.place}) is registered but has never been "
                f"heard: run `campusguard keygen {unit.id}` and `campusguard deploy "
                f"{unit.id}`, then press its test button. It is not supervised until then.",
            },
        )
        st.noticed = True
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO supervision_install(unit, noticed_at) VALUES (?, ?) "
                "ON CONFLICT(unit) DO UPDATE SET noticed_at = excluded.noticed_at",
                (unit.id, now),
            )

    def _state_of(self, unit_id: str, at: float) -> None:
        self._publish_state(self.config.units[unit_id], self.units[unit_id], at)

    def _publish_state(self, unit: Unit, st: _UnitState, at: float, force: bool = False) -> None:
        """Publish the retained unit state on a change, else at most every STATE_REFRESH_S."""
        key = (
            st.installed,
            st.online,
            tuple(sorted(st.conditions)),
            st.fw,
            None if st.battery_mv is None else st.battery_mv // 100,
        )
        if not force and key == st.published and at - st.published_at < STATE_REFRESH_S:
            return
        self.outlet.retain(
            site=unit.site,
            topic=f"unit/{unit.id}/state",
            payload=self.unit_state(unit.id, at),
            at=at,
        )
        st.published, st.published_at = key, at

    # -- frames --------------------------------------------------------------------------

    def _heard(self, unit: Unit, st: _UnitState, at: float) -> None:
        st.last_seen = at
        st.frames += 1
        window = offline_after(unit)
        if st.online:
            st.deadline = at + window
            return
        if st.back_last is None or at - st.back_last > window:
            st.back_first = at
        st.back_last = at
        assert st.back_first is not None
        if at - st.back_first < unit.heartbeat_s / 2:
            return
        offline_since = st.changed_at
        self._emit(
            unit,
            "online",
            RESTORE,
            at,
            {
                "offline_since": offline_since,
                "offline_s": round(at - offline_since, 3),
                "heard_since": st.back_first,
            },
        )
        st.online = True
        st.changed_at = at
        st.deadline = at + window
        st.test_deadline = max(st.test_deadline, at + test_margin(unit))
        st.back_first = st.back_last = None
        self._save_unit(unit, st)

    def _go_offline(self, unit: Unit, st: _UnitState, now: float) -> None:
        link_up = self.links_up.get(unit.link)
        self._emit(
            unit,
            "offline",
            NEW,
            now,
            {
                "last_seen": st.last_seen,
                "silent_s": None if st.last_seen is None else round(now - st.last_seen, 3),
                "heartbeat_s": unit.heartbeat_s,
                "missed_heartbeats": unit.missed_heartbeats,
                "link": unit.link,
                "link_up": link_up,
            },
        )
        st.online = False
        st.changed_at = now
        st.back_first = st.back_last = None
        self._save_unit(unit, st)
        self._dirty.add(unit.id)

    def _heartbeat(self, unit: Unit, st: _UnitState, hb: Heartbeat, at: float) -> None:
        st.battery_mv, st.fw = hb.battery_mv, hb.fw_version
        extra = {"battery_mv": hb.battery_mv, "fw": hb.fw_version, "uptime_s": hb.uptime_s}
        for flag, kind in FLAG_CONDITIONS.items():
            if flag in hb.flags:
                st.clear_count.pop(kind, None)
                self._set_condition(unit, st, kind, True, at, {**extra, "source": "heartbeat"})
            elif kind in st.conditions:
                n = st.clear_count.get(kind, 0) + 1
                st.clear_count[kind] = n
                if n >= RESTORE_HEARTBEATS.get(kind, 2):
                    del st.clear_count[kind]
                    self._set_condition(unit, st, kind, False, at, {**extra, "source": "heartbeat"})

    def _fault(self, unit: Unit, st: _UnitState, fault: Fault, at: float) -> None:
        if fault.code == FaultCode.WATCHDOG_RESET:
            if fault.active:
                self._emit(unit, "watchdog_reset", NEW, at, {"boots_in_a_row": fault.detail})
            return
        kind = FAULT_CONDITIONS.get(fault.code)
        if kind is None:  # pragma: no cover - every FaultCode is mapped
            log.warning("unit %s: fault code %s not handled", unit.id, fault.code)
            return
        st.clear_count.pop(kind, None)
        self._set_condition(
            unit,
            st,
            kind,
            bool(fault.active),
            at,
            {"fault_detail": fault.detail, "source": "fault"},
        )

    def _test(self, unit: Unit, st: _UnitState, test: Test, at: float) -> None:
        failed = [name for bit, name in enumerate(TEST_BITS) if test.result >> bit & 1]
        periodic = test.kind == TestKind.PERIODIC
        detail = {
            "test": "periodic" if periodic else "manual",
            "result": test.result,
            "passed": test.result == 0,
            "failed": failed,
            "battery_mv": test.battery_mv,
        }
        self._emit(
            unit,
            "test",
            NEW,
            at,
            detail,
            code=code_of("test") if periodic else MANUAL_TEST_CODE,
        )
        if periodic:
            st.last_test = at
            st.test_deadline = at + unit.test_interval_h * 3600 + test_margin(unit)
            self._save_unit(unit, st)
            if "test_missing" in st.conditions:
                self._set_condition(unit, st, "test_missing", False, at, {"last_test": at})
        self._set_condition(unit, st, "test_failed", test.result != 0, at, detail)

    # -- output --------------------------------------------------------------------------

    def _set_condition(
        self,
        unit: Unit,
        st: _UnitState,
        kind: str,
        active: bool,
        at: float,
        detail: Mapping[str, Any],
    ) -> None:
        if active == (kind in st.conditions):
            return
        if active:
            self._emit(unit, kind, NEW, at, detail)
            st.conditions[kind] = at
            with transaction(self.conn):
                self.conn.execute(
                    "INSERT OR REPLACE INTO supervision_condition(unit, kind, since) "
                    "VALUES (?, ?, ?)",
                    (unit.id, kind, at),
                )
        else:
            since = st.conditions[kind]
            self._emit(unit, kind, RESTORE, at, {**detail, "since": since})
            del st.conditions[kind]
            with transaction(self.conn):
                self.conn.execute(
                    "DELETE FROM supervision_condition WHERE unit = ? AND kind = ?",
                    (unit.id, kind),
                )

    def _emit(
        self,
        unit: Unit,
        kind: str,
        qualifier: int,
        at: float,
        detail: Mapping[str, Any],
        *,
        code: int | None = None,
    ) -> None:
        log.info(
            "unit %s (%s): %s %s",
            unit.id,
            unit.place,
            kind,
            "restored" if qualifier == RESTORE else "",
        )
        self.outlet.event(
            site=unit.site,
            kind=kind,
            at=at,
            unit=unit.id,
            code=code_of(kind) if code is None else code,
            qualifier=qualifier,
            detail={"place": unit.place, **detail},
            topic="event",
        )

    def _save_unit(self, unit: Unit, st: _UnitState) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO supervision_unit(unit, online, changed_at, last_seen, last_test) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(unit) DO UPDATE SET online = excluded.online, "
                "changed_at = excluded.changed_at, last_seen = excluded.last_seen, "
                "last_test = excluded.last_test",
                (unit.id, int(st.online), st.changed_at, st.last_seen, st.last_test),
            )
