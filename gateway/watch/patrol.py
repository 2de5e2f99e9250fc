"""Patrols around the campus: rounds of checkpoint scans in the school's time windows.

:class:`PatrolWatch` is a :class:`gateway.pipeline.ports.Watcher` beside guard duty. For every
patrol route in boards.yaml (``patrols``) it follows the route's windows on school days
(:mod:`gateway.watch.calendar`) and the rounds the patrol walks, and publishes what happens
as patrol events (topic ``patrol``, published by the pipeline on
``<prefix>/<site>/patrol/<route>``; gateway/README.md lists the payloads):

- ``patrol_window_open`` / ``patrol_window_close`` when a window begins and ends; the
  close carries the window's ``outcome``: ``done`` (a round completed in the window, started
  by its latest start and within ``max_round_min``), ``late`` (completed, but started after
  the latest start or took too long) or ``missed`` (no round completed in the window).
- ``round_start`` at the first scan when no round runs (any checkpoint of the route starts
  one; on an ordered route a round started elsewhere than the first checkpoint is out of
  order from its first scan).
- ``patrol_scan`` for every CHECKIN from a checkpoint unit: its ``position`` in the round,
  the checkpoint ``expected`` on an ordered route, and ``status`` ``in_order``,
  ``out_of_order`` or ``repeat`` (already scanned in this round). A long press is a duress
  scan: it counts like any other (the checkpoint shows nothing unusual), the pipeline
  opens the silent duress incident as for a duress check-in, and the scan says
  ``duress: true`` for the duty room.
- ``round_complete`` when every checkpoint of the route was scanned, with its duration,
  ``late`` (longer than ``max_round_min``) and the out-of-order scans.
- ``round_incomplete`` when ``max_round_min`` passes before that: the ``missing``
  checkpoints; the round ends there.
- ``round_overdue`` (Contact ID 102, fail to report in) when ``max_between_min`` passes
  after a scan with the round unfinished: the patrol did not reach its next checkpoint.
- ``round_missed`` (102) when a window reaches its latest start (its end minus
  ``max_round_min``, not before its start) with no round started.
- ``patrol_escalation`` for each rung of the route's ladder, ``after_min`` after the
  ``round_overdue`` or ``round_missed`` that raised it: ``remind_leader`` names the patrol
  leader, ``security_lead`` the school's security lead, ``police`` gives the duty room the
  route, its places and what is wrong.
- ``patrol_acknowledged`` (102, restore) when a scan of the route arrives (the patrol is
  there) or a duty room acknowledges on ``<prefix>/<site>/patrol/<route>/ack`` (verified
  by the pipeline as a duty ack is). It stops the ladder.

Each route's state lives in SQLite (table ``patrol_state``, one JSON document per route),
written after each change is published (a crash repeats an event at worst). After a
restart: a window that opened and closed while the gateway was down is not judged (the
report shows the gateway's downtime); a deadline that passed while it was down is moved to
``RESTART_GRACE_S`` after the start, so that the scans the units kept in their outboxes
arrive first; ladder rungs that fell due fire at once. A route none of whose checkpoints
was ever heard (not installed) raises no ladder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from gateway.core.clock import Clock
from gateway.core.config import Config, Patrol, Unit
from gateway.core.contact_id import NEW, RESTORE, code_of
from gateway.core.timefmt import iso
from gateway.pipeline.ports import Outlet
from gateway.relay.acks import ACK_CLOCK_SKEW_S
from gateway.watch.calendar import SchoolCalendar, Slot, slots
from gateway.watch.shifts import zone
from gateway.watch.supervision import transaction
from protocol.messages import Checkin, Frame

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS patrol_state (
    route      TEXT PRIMARY KEY,  -- boards.yaml patrol id
    state      TEXT NOT NULL,     -- JSON: RouteState (gateway/watch/patrol.py)
    updated_at REAL NOT NULL
)
"""

RESTART_GRACE_S = 60.0
"""A deadline that passed while the gateway was down falls due this long after its start."""

CID_FAIL_TO_REPORT = code_of("round_missed")
CID_FORGERY = code_of("forgery")

# the order of actions due at the same moment
_STEP, _OVERDUE, _ROUND_MAX, _NO_ROUND, _CLOSE, _OPEN = range(6)


@dataclass(frozen=True, slots=True)
class Round:
    """The round being walked: scans so far (checkpoint, time), in order."""

    id: str
    started_at: float
    last_at: float
    visited: tuple[tuple[str, float], ...]
    out_of_order: int = 0
    overdue: bool = False  # round_overdue raised since the last scan


@dataclass(frozen=True, slots=True)
class Ladder:
    """An escalation in progress: the rungs count from ``since``."""

    reason: str  # no_round | overdue
    since: float
    next_step: int = 0


@dataclass(frozen=True, slots=True)
class RouteState:
    """One route's state (UTC seconds); ``cursor``: windows are followed from there on."""

    cursor: float
    window: tuple[float, float, str] | None = None  # start, end, label
    rounds_started: int = 0  # in the window
    rounds_complete: int = 0
    late: bool = False  # a round of the window started after the latest start or ran long
    missed_raised: bool = False
    round_no: int = 0
    round: Round | None = None
    ladder: Ladder | None = None

    def to_json(self) -> str:
        """The state as stored in ``patrol_state.state``."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> RouteState:
        """Read a stored state back (written by :meth:`to_json`)."""
        d = json.loads(text)
        rnd = d.get("round")
        lad = d.get("ladder")
        win = d.get("window")
        return RouteState(
            cursor=float(d["cursor"]),
            window=(float(win[0]), float(win[1]), str(win[2])) if win else None,
            rounds_started=int(d.get("rounds_started", 0)),
            rounds_complete=int(d.get("rounds_complete", 0)),
            late=bool(d.get("late", False)),
            missed_raised=bool(d.get("missed_raised", False)),
            round_no=int(d.get("round_no", 0)),
            round=(
                Round(
                    id=str(rnd["id"]),
                    started_at=float(rnd["started_at"]),
                    last_at=float(rnd["last_at"]),
                    visited=tuple((str(c), float(t)) for c, t in rnd["visited"]),
                    out_of_order=int(rnd.get("out_of_order", 0)),
                    overdue=bool(rnd.get("overdue", False)),
                )
                if rnd
                else None
            ),
            ladder=(
                Ladder(str(lad["reason"]), float(lad["since"]), int(lad["next_step"]))
                if lad
                else None
            ),
        )


def _minutes(seconds: float) -> float:
    return round(seconds / 60.0, 1)


class PatrolWatch:
    """Watches every patrol route in the register; a :class:`gateway.pipeline.ports.Watcher`."""

    def __init__(
        self,
        config: Config,
        outlet: Outlet,
        conn: sqlite3.Connection,
        clock: Clock,
        *,
        tz: tzinfo | str | None = None,
        installed: Callable[[str], bool] | None = None,
    ) -> None:
        """Load (or create) each route's state from ``conn``.

        ``tz`` is the schools' zone (boards.yaml's windows and calendar are local);
        ``installed`` tells whether a unit was ever heard (the supervisor's
        :meth:`~gateway.watch.supervision.Supervisor.is_installed`).
        """
        self.config = config
        self.outlet = outlet
        self.conn = conn
        self.clock = clock
        self.installed = installed
        self.tz = tz if isinstance(tz, tzinfo) else zone(tz)
        self.calendar = SchoolCalendar(config.calendar)
        self.routes: dict[str, Patrol] = dict(config.patrols)
        self.route_of: dict[str, str] = {
            cp: p.id for p in self.routes.values() for cp in p.checkpoints
        }
        self.started_at = clock.now()
        self._announced = False
        self._upcoming: dict[str, tuple[float, Slot | None]] = {}
        self.state: dict[str, RouteState] = {}
        with transaction(conn):
            conn.execute(SCHEMA)
        rows = {str(r[0]): str(r[1]) for r in conn.execute("SELECT route, state FROM patrol_state")}
        for route in self.routes.values():
            text = rows.get(route.id)
            st = RouteState(cursor=self.started_at) if text is None else self._loaded(route, text)
            self._save_only(route.id, st)
            log.info(
                "patrol %s: %d checkpoints, %s%s",
                route.id,
                len(route.checkpoints),
                "in a window" if st.window else "between windows",
                ", escalating" if st.ladder else "",
            )

    def _loaded(self, route: Patrol, text: str) -> RouteState:
        try:
            return RouteState.from_json(text)
        except (ValueError, KeyError, TypeError, IndexError):
            log.error("patrol %s: stored state unreadable; starting afresh", route.id)
            return RouteState(cursor=self.started_at)

    # -- Watcher -------------------------------------------------------------------------

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """A CHECKIN from a checkpoint unit is a scan of its route."""
        body = frame.body
        if not isinstance(body, Checkin):
            return
        rid = self.route_of.get(unit.id)
        if rid is None:
            return
        route = self.routes[rid]
        try:
            self._advance(route, at, inclusive=False)
            self._scan(route, unit, body.duress, at)
        except Exception:
            log.exception("patrol %s: scan of %s at %.3f not processed", rid, unit.id, at)

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links do not change patrols: a checkpoint on a dead link is a checkpoint missed."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """A verified duty-room ack on ``<prefix>/<site>/patrol/<route>/ack`` stops the ladder."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[-1] != "ack" or parts[-3] != "patrol":
            return  # not ours (the duty watch takes duty acks)
        site, rid = parts[-4], parts[-2]
        route = self.routes.get(rid)
        if route is None or route.site != site:
            log.warning("patrol ack for unknown route %r at site %r", rid, site)
            return
        by, signed_at = "duty room", None
        with contextlib.suppress(ValueError, RecursionError):
            doc = json.loads(payload) if payload.strip() else {}
            if isinstance(doc, dict) and isinstance(doc.get("by"), str) and doc["by"].strip():
                by = doc["by"].strip()[:80]
            if isinstance(doc, dict) and isinstance(doc.get("at"), str):
                signed_at = datetime.fromisoformat(doc["at"].replace("Z", "+00:00")).timestamp()
        try:
            self._advance(route, at, inclusive=True)
            st = self.state[rid]
            if st.ladder is None:
                log.info("patrol ack for %s by %s: nothing pending", rid, by)
                return
            if signed_at is not None and signed_at < st.ladder.since - ACK_CLOCK_SKEW_S:
                log.warning("patrol ack for %s signed before the escalation: ignored", rid)
                self.outlet.event(
                    site=route.site,
                    kind="forgery",
                    at=at,
                    code=CID_FORGERY,
                    qualifier=NEW,
                    detail={"channel": "mqtt", "predated": 1, "topics": [topic]},
                )
                return
            self._acknowledge(route, st, at, by=by, via="patrol_ack")
        except Exception:
            log.exception("patrol %s: ack at %.3f not processed", rid, at)

    def tick(self, now: float) -> None:
        """Bring every route up to ``now``; the first tick publishes every route's state."""
        for route in self.routes.values():
            try:
                self._advance(route, now, inclusive=True)
                if not self._announced:
                    self._retain(route, now)
            except Exception:
                log.exception("patrol %s: check at %.3f failed", route.id, now)
        self._announced = True

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` will act (None: nothing scheduled)."""
        times = [t for r in self.routes.values() if (t := self._next(r)[0]) is not None]
        return min(times, default=None)

    # -- the state machine ---------------------------------------------------------------

    def _slot_from(self, route: Patrol, cursor: float) -> Slot | None:
        """The route's first window starting at or after ``cursor``."""
        cached = self._upcoming.get(route.id)
        if cached is not None and cached[0] == cursor:
            return cached[1]
        day = datetime.fromtimestamp(cursor, self.tz).date()
        found = next(
            (s for s in slots(route, self.calendar, self.tz, day) if s.start >= cursor), None
        )
        self._upcoming[route.id] = (cursor, found)
        return found

    def _late_start(self, route: Patrol, start: float, end: float) -> float:
        """The latest moment a round can start and still end in the window."""
        return max(start, end - route.max_round_min * 60)

    def _deferred(self, t: float) -> float:
        # a deadline that passed while the gateway was down: the units' queued scans first
        return t if t >= self.started_at else self.started_at + RESTART_GRACE_S

    def _next(self, route: Patrol) -> tuple[float | None, int]:
        """The next scheduled action for ``route``: (time, what)."""
        st = self.state[route.id]
        cands: list[tuple[float, int]] = []
        lad = st.ladder
        if lad is not None and lad.next_step < len(route.escalation):
            cands.append((lad.since + route.escalation[lad.next_step].after_min * 60, _STEP))
        rnd = st.round
        if rnd is not None:
            if not rnd.overdue and len(rnd.visited) < len(route.checkpoints):
                cands.append((self._deferred(rnd.last_at + route.max_between_min * 60), _OVERDUE))
            cands.append((self._deferred(rnd.started_at + route.max_round_min * 60), _ROUND_MAX))
        if st.window is not None:
            start, end, _ = st.window
            if not st.missed_raised and st.rounds_started == 0:
                cands.append((self._deferred(self._late_start(route, start, end)), _NO_ROUND))
            cands.append((self._deferred(end), _CLOSE))
        else:
            s = self._slot_from(route, st.cursor)
            if s is not None:
                cands.append((s.start, _OPEN))
        if not cands:
            return None, -1
        t, what = min(cands)
        return t, what

    def _advance(self, route: Patrol, now: float, *, inclusive: bool) -> None:
        """Apply every scheduled action due before ``now`` (or at it), in time order."""
        for _ in range(100_000):
            t, what = self._next(route)
            if t is None or t > now or (t == now and not inclusive):
                return
            if what == _STEP:
                self._step(route, t, now)
            elif what == _OVERDUE:
                self._overdue(route, t, now)
            elif what == _ROUND_MAX:
                self._round_max(route, t, now)
            elif what == _NO_ROUND:
                self._no_round(route, t, now)
            elif what == _CLOSE:
                self._close(route, t, now)
            else:
                self._open(route, t, now)
        raise RuntimeError(f"patrol {route.id}: state does not settle")  # pragma: no cover

    def _open(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        s = self._slot_from(route, st.cursor)
        assert s is not None
        if s.end <= self.started_at:
            log.warning(
                "patrol %s: window %s passed while the gateway was down: not judged",
                route.id,
                s.label,
            )
            self._save_only(route.id, replace(st, cursor=s.end))
            return
        new = replace(
            st,
            cursor=s.start,
            window=(s.start, s.end, s.label),
            rounds_started=0,
            rounds_complete=0,
            late=False,
            missed_raised=False,
        )
        # a round already running when the window opens counts as started in it
        if st.round is not None:
            new = replace(new, rounds_started=1)
        self._publish(
            route,
            new,
            "patrol_window_open",
            now,
            {
                "window": s.label,
                "start": s.start,
                "end": s.end,
                "latest_start": self._late_start(route, s.start, s.end),
                "day": self.calendar.why(s.day),
                "noticed_at": now if now > t else None,
            },
        )

    def _close(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        assert st.window is not None
        start, end, label = st.window
        if st.rounds_complete == 0:
            outcome = "missed"
        else:
            outcome = "late" if st.late else "done"
        new = replace(st, window=None, cursor=end)
        self._publish(
            route,
            new,
            "patrol_window_close",
            now,
            {
                "window": label,
                "start": start,
                "end": end,
                "outcome": outcome,
                "rounds_started": st.rounds_started,
                "rounds_complete": st.rounds_complete,
                "noticed_at": now if now > t else None,
            },
        )

    def _no_round(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        assert st.window is not None
        start, end, label = st.window
        new = replace(st, missed_raised=True)
        ladder = self._ladder(route, new, "no_round", now)
        self._publish(
            route,
            ladder,
            "round_missed",
            now,
            {
                "window": label,
                "start": start,
                "end": end,
                "latest_start": self._late_start(route, start, end),
                "escalating": ladder.ladder is not None and ladder.ladder.reason == "no_round",
                **self._who(route),
            },
            code=CID_FAIL_TO_REPORT,
            qualifier=NEW,
        )

    def _overdue(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        rnd = st.round
        assert rnd is not None
        new = replace(st, round=replace(rnd, overdue=True))
        last_cp = rnd.visited[-1][0]
        new = self._ladder(route, new, "overdue", now)
        self._publish(
            route,
            new,
            "round_overdue",
            now,
            {
                "round": rnd.id,
                "last_checkpoint": last_cp,
                "last_place": self._place(last_cp),
                "last_scan": rnd.last_at,
                "minutes_since": _minutes(now - rnd.last_at),
                "expected": self._expected(route, rnd),
                "missing": self._missing(route, rnd),
                "escalating": new.ladder is not None and new.ladder.reason == "overdue",
                **self._who(route),
            },
            code=CID_FAIL_TO_REPORT,
            qualifier=NEW,
        )

    def _round_max(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        rnd = st.round
        assert rnd is not None
        self._publish(
            route,
            replace(st, round=None),
            "round_incomplete",
            now,
            {
                "round": rnd.id,
                "started_at": rnd.started_at,
                "last_scan": rnd.last_at,
                "scanned": [c for c, _ in rnd.visited],
                "missing": self._missing(route, rnd),
                "out_of_order": rnd.out_of_order,
                "max_round_min": route.max_round_min,
            },
        )

    def _ladder(self, route: Patrol, st: RouteState, reason: str, now: float) -> RouteState:
        """Start the ladder for ``reason`` unless one is still climbing or nobody could patrol.

        A ladder whose every rung was notified and never answered gives way to a new one.
        """
        lad = st.ladder
        if not route.escalation or (lad is not None and lad.next_step < len(route.escalation)):
            return st
        if self.installed is not None and not any(self.installed(c) for c in route.checkpoints):
            log.info("patrol %s: no checkpoint installed; no ladder", route.id)
            return st
        return replace(st, ladder=Ladder(reason, now))

    def _step(self, route: Patrol, t: float, now: float) -> None:
        st = self.state[route.id]
        lad = st.ladder
        assert lad is not None
        step = route.escalation[lad.next_step]
        site = self.config.sites.get(route.site)
        detail: dict[str, Any] = {
            "step": step.step,
            "rung": lad.next_step + 1,
            "of": len(route.escalation),
            "after_min": step.after_min,
            "reason": lad.reason,
            "scheduled": t,
            "since": lad.since,
            "minutes_since": _minutes(now - lad.since),
            **self._who(route),
        }
        rnd = st.round
        if rnd is not None:
            detail["last_checkpoint"] = rnd.visited[-1][0]
            detail["last_place"] = self._place(rnd.visited[-1][0])
            detail["last_scan"] = rnd.last_at
        if site is not None:
            detail["site_name"] = site.name
            detail["address"] = site.address
            if step.step in ("security_lead", "police"):
                detail["security_lead"] = dict(site.security_lead)
        if step.step == "police":
            if lad.reason == "overdue":
                where = f" at {detail['last_place']}" if rnd is not None else ""
                detail["action"] = (
                    f"Patrol on route {route.id} last scanned{where} "
                    f"{detail['minutes_since']} min before the alarm and has not reached "
                    "its next checkpoint since; check the route."
                )
            else:
                detail["action"] = (
                    f"No patrol round on route {route.id} ({', '.join(detail['places'])}) "
                    "in this window; send a patrol."
                )
        new = replace(st, ladder=replace(lad, next_step=lad.next_step + 1))
        self._publish(route, new, "patrol_escalation", now, detail)

    def _acknowledge(self, route: Patrol, st: RouteState, at: float, *, by: str, via: str) -> None:
        lad = st.ladder
        assert lad is not None
        self._publish(
            route,
            replace(st, ladder=None),
            "patrol_acknowledged",
            at,
            {
                "by": by,
                "via": via,
                "reason": lad.reason,
                "since": lad.since,
                "minutes_since": _minutes(at - lad.since),
                "steps_notified": [s.step for s in route.escalation[: lad.next_step]],
                **self._who(route),
            },
            code=CID_FAIL_TO_REPORT,
            qualifier=RESTORE,
        )

    def _scan(self, route: Patrol, unit: Unit, duress: bool, at: float) -> None:
        st = self.state[route.id]
        if st.ladder is not None:
            self._acknowledge(route, st, at, by=unit.id, via="scan")
            st = self.state[route.id]
        rnd = st.round
        if rnd is None:
            n = st.round_no + 1
            rnd = Round(id=f"{route.id}-{n}", started_at=at, last_at=at, visited=())
            st = replace(st, round_no=n, round=rnd)
            if st.window is not None:
                start, end, _ = st.window
                late = st.late or at > self._late_start(route, start, end)
                st = replace(st, rounds_started=st.rounds_started + 1, late=late)
            self._publish(
                route,
                st,
                "round_start",
                at,
                {
                    "round": rnd.id,
                    "checkpoint": unit.id,
                    "in_window": st.window[2] if st.window is not None else None,
                },
            )
        expected = self._expected(route, rnd)
        seen = {c for c, _ in rnd.visited}
        if unit.id in seen:
            status = "repeat"
        elif not route.ordered or unit.id == expected:
            status = "in_order"
        else:
            status = "out_of_order"
        visited = rnd.visited if status == "repeat" else (*rnd.visited, (unit.id, at))
        rnd = replace(
            rnd,
            last_at=at,
            visited=visited,
            overdue=False,
            out_of_order=rnd.out_of_order + (status == "out_of_order"),
        )
        st = replace(st, round=rnd)
        self._publish(
            route,
            st,
            "patrol_scan",
            at,
            {
                "round": rnd.id,
                "checkpoint": unit.id,
                "place": unit.place,
                "position": len(visited),
                "of": len(route.checkpoints),
                "expected": expected if route.ordered else None,
                "status": status,
                "duress": duress,
                "minutes_since_start": _minutes(at - rnd.started_at),
            },
        )
        if len(visited) == len(route.checkpoints):
            took = at - rnd.started_at
            late = took > route.max_round_min * 60
            done = replace(st, round=None)
            if st.window is not None:
                done = replace(done, rounds_complete=st.rounds_complete + 1, late=st.late or late)
            self._publish(
                route,
                done,
                "round_complete",
                at,
                {
                    "round": rnd.id,
                    "started_at": rnd.started_at,
                    "minutes": _minutes(took),
                    "late": late,
                    "out_of_order": rnd.out_of_order,
                    "order": [c for c, _ in visited],
                    "in_window": st.window[2] if st.window is not None else None,
                },
            )

    # -- helpers, output and persistence -------------------------------------------------

    def _expected(self, route: Patrol, rnd: Round) -> str | None:
        seen = {c for c, _ in rnd.visited}
        return next((c for c in route.checkpoints if c not in seen), None)

    def _missing(self, route: Patrol, rnd: Round) -> list[str]:
        seen = {c for c, _ in rnd.visited}
        return [c for c in route.checkpoints if c not in seen]

    def _place(self, unit_id: str) -> str:
        unit = self.config.units.get(unit_id)
        return unit.place if unit is not None else unit_id

    def _who(self, route: Patrol) -> dict[str, Any]:
        return {
            "route": route.id,
            "checkpoints": list(route.checkpoints),
            "places": [self._place(c) for c in route.checkpoints],
            "leader": dict(route.leader) or None,
        }

    def _publish(
        self,
        route: Patrol,
        new: RouteState,
        kind: str,
        at: float,
        detail: Mapping[str, Any],
        *,
        code: int | None = None,
        qualifier: int | None = None,
    ) -> None:
        """Publish one patrol event, then persist the state it leads to."""
        log.info("patrol %s: %s at %.3f", route.id, kind, at)
        self.outlet.event(
            site=route.site,
            kind=kind,
            at=at,
            route=route.id,
            code=code,
            qualifier=qualifier,
            detail={k: v for k, v in detail.items() if v is not None},
            topic="patrol",
        )
        self._save_only(route.id, new)
        self._retain(route, at)

    def route_state(self, rid: str, at: float) -> dict[str, Any]:
        """The route's state as its retained ``patrol/<route>/state`` message says it."""
        route = self.routes[rid]
        st = self.state[rid]
        rnd = st.round
        lad = st.ladder
        last = route.escalation[lad.next_step - 1] if lad is not None and lad.next_step else None
        return {
            "route": rid,
            "site": route.site,
            **self._who(route),
            "ordered": route.ordered,
            "window": (
                {"start": iso(st.window[0]), "end": iso(st.window[1]), "label": st.window[2]}
                if st.window is not None
                else None
            ),
            "round": (
                {
                    "id": rnd.id,
                    "started_at": iso(rnd.started_at),
                    "scanned": [c for c, _ in rnd.visited],
                    "next": self._expected(route, rnd),
                    "last_scan": iso(rnd.last_at),
                }
                if rnd is not None
                else None
            ),
            "escalating": lad is not None,
            "reason": lad.reason if lad is not None else None,
            "rung": lad.next_step if lad is not None else 0,
            "of": len(route.escalation),
            "step": last.step if last is not None else None,
            "at": iso(at),
        }

    def _retain(self, route: Patrol, at: float) -> None:
        self.outlet.retain(
            site=route.site,
            topic=f"patrol/{route.id}/state",
            payload=self.route_state(route.id, at),
            at=at,
        )

    def _save_only(self, rid: str, st: RouteState) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO patrol_state(route, state, updated_at) VALUES (?, ?, ?)",
                (rid, st.to_json(), self.clock.now()),
            )
        self.state[rid] = st
