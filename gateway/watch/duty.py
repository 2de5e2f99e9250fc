"""The 24-hour guard-duty watchdog: check-ins, missed check-ins and the escalation ladder.

:class:`DutyWatch` is a :class:`gateway.pipeline.ports.Watcher`. For every guard post in
boards.yaml it follows the post's weekly schedule (:mod:`gateway.watch.shifts`) and the guard's
check-in clock, and publishes what happens as duty events (topic ``duty``, published by
the pipeline on ``<prefix>/<site>/duty/<post>``):

- ``shift_start`` / ``shift_end`` when a duty period begins or ends (a hand-over between
  shifts that touch is not an end: the clock runs on).
- ``checkin`` for every CHECKIN frame from the post's unit, with ``status`` ``on_time``
  (at or before the deadline), ``late`` (after it, within the grace period) or
  ``off_duty``. A check-in restarts the clock: the next one is due ``checkin_interval_min``
  later; the first of a duty period is due that long after the period starts. A duress
  check-in (long press) counts like any other at the post, so the post shows nothing
  unusual; the pipeline raises the silent duress incident, and the duty event carries
  ``duress: true`` for the duty room.
- ``missed_checkin`` (Contact ID 102, qualifier 1) when the grace period after a deadline
  ends without a check-in; detected by the first :meth:`DutyWatch.tick` at or after that
  moment (the pipeline ticks at least five times a second).
- ``escalation`` for each rung of the post's ladder, ``after_min`` after the missed
  deadline: ``prompt_guard`` also sends SIGNAL PROMPT_CHECKIN to the post's unit (buzzer
  and LED until the next press); ``security_lead`` names the school's security lead;
  ``police`` gives the duty room what it needs to act (post, place, guard unit and its
  contact, minutes overdue, the security lead). The post itself stays quiet after the
  prompt, in case the guard is under threat.
- ``acknowledged`` (102, qualifier 3) when a check-in arrives or a duty room acknowledges
  on ``<prefix>/<site>/duty/<post>/ack``: the pipeline verifies the signed ack
  (:mod:`gateway.relay.acks`) and hands on its fields (``{"by", "at", "nonce", "kid"}``); an ack
  signed before the check-in was missed is refused (a ``forgery`` event). It stops the
  ladder, and the clock restarts from that moment.

A deadline owed in a duty period (due before the period ends) is still watched after the
period ends: the last guard of a shift must check in too. A deadline at or after the
period's end is not owed.

Duty state and deadlines live in SQLite (table ``duty_state``), written after each change
is published (so a crash repeats an event at worst, never loses one). After a restart:
a deadline still ahead is kept exactly; an escalation in progress continues, firing at
once the rungs that fell due while the gateway was down; a deadline that passed while the
gateway was down gives the guard a restart grace (the post's grace, at least a minute)
from the restart, if the duty period still runs, and is dropped if that period is over
(nobody could have been told, and nobody is on duty now).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from gateway.core.clock import Clock
from gateway.core.config import Config, Post, Unit
from gateway.core.contact_id import NEW, RESTORE, code_of
from gateway.core.timefmt import iso
from gateway.pipeline.ports import Outlet
from gateway.relay.acks import ACK_CLOCK_SKEW_S
from gateway.watch.shifts import Period, WeeklySchedule, zone
from gateway.watch.supervision import transaction
from protocol.messages import Checkin, Frame, SignalPattern

log = logging.getLogger(__name__)

CID_FORGERY = code_of("forgery")

SCHEMA = """
CREATE TABLE IF NOT EXISTS duty_state (
    post            TEXT PRIMARY KEY,  -- boards.yaml post id
    on_duty         INTEGER NOT NULL,  -- 1 inside a duty period
    off_since       REAL,              -- off duty: since when (end of the last period)
    period_start    REAL,              -- on duty: the period (NULL = unbounded)
    period_end      REAL,
    due_at          REAL,              -- the next check-in is due then (NULL: none owed)
    deadline        REAL,              -- ... and counts as missed then (due + grace)
    last_checkin    REAL,
    missed_deadline REAL,              -- escalating: the deadline that was missed
    missed_at       REAL,              -- ... when that was detected
    next_step       INTEGER NOT NULL DEFAULT 0,  -- escalating: next rung of the ladder
    updated_at      REAL NOT NULL
);
"""

PROMPT_SECONDS = 0
"""SIGNAL duration for the check-in prompt: 0 = until the next button press (SPEC.md 2.8)."""

MIN_RESTART_GRACE_S = 60.0
"""A deadline that passed while the gateway was down is extended to at least this."""


@dataclass(frozen=True, slots=True)
class PostState:
    """A guard post's duty state (all times UTC seconds)."""

    post: str
    on_duty: bool
    off_since: float | None
    period_start: float  # -inf when unbounded
    period_end: float  # inf when unbounded
    due_at: float | None
    deadline: float | None
    last_checkin: float | None
    missed_deadline: float | None
    missed_at: float | None
    next_step: int

    @property
    def escalating(self) -> bool:
        """True from a missed check-in until it is acknowledged."""
        return self.missed_deadline is not None


def _db(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else x


def _minutes(seconds: float) -> float:
    return round(seconds / 60.0, 1)


class DutyWatch:
    """Watches every guard post in the register; a :class:`gateway.pipeline.ports.Watcher`."""

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
        """Load (or create) each post's duty state from ``conn``.

        ``tz`` is the schools' local time zone, in which boards.yaml gives the shifts:
        a tzinfo or an IANA name; default the system's local zone. ``conn`` is the
        gateway store's connection, used from the event-loop thread only. ``installed``
        tells whether a unit has ever been heard (the supervisor's
        :meth:`~gateway.watch.supervision.Supervisor.is_installed`): a post whose unit is not
        installed yet raises no missed check-in and climbs no ladder.
        """
        self.installed = installed
        self._announced = False
        self.config = config
        self.outlet = outlet
        self.conn = conn
        self.clock = clock
        self.tz = tz if isinstance(tz, tzinfo) else zone(tz)
        self.started_at = clock.now()
        self.posts: dict[str, Post] = dict(config.posts)
        self.schedules = {p.id: WeeklySchedule(p.shifts, self.tz) for p in self.posts.values()}
        self.state: dict[str, PostState] = {}
        self._next_period: dict[str, tuple[float | None, Period | None]] = {}
        with transaction(conn):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        rows = {str(r[0]): r for r in conn.execute("SELECT * FROM duty_state")}
        with transaction(conn):
            for post in self.posts.values():
                row = rows.get(post.id)
                st = self._fresh(post) if row is None else self._loaded(post, row)
                self.state[post.id] = st
                self._save(st)
        for pid, st in self.state.items():
            log.info(
                "post %s: %s, next check-in due %s%s",
                pid,
                "on duty" if st.on_duty else "off duty",
                st.due_at,
                ", escalating" if st.escalating else "",
            )

    def _fresh(self, post: Post) -> PostState:
        return PostState(
            post=post.id,
            on_duty=False,
            off_since=self.started_at,
            period_start=-math.inf,
            period_end=math.inf,
            due_at=None,
            deadline=None,
            last_checkin=None,
            missed_deadline=None,
            missed_at=None,
            next_step=0,
        )

    def _loaded(self, post: Post, row: sqlite3.Row | tuple[Any, ...]) -> PostState:
        (_, on_duty, off_since, p_start, p_end, due, deadline, last, missed_dl, missed_at) = row[
            :10
        ]
        st = PostState(
            post=post.id,
            on_duty=bool(on_duty),
            off_since=off_since,
            period_start=-math.inf if p_start is None else float(p_start),
            period_end=math.inf if p_end is None else float(p_end),
            due_at=due,
            deadline=deadline,
            last_checkin=last,
            missed_deadline=missed_dl,
            missed_at=missed_at,
            next_step=int(row[10]),
        )
        if st.on_duty:
            # the register may have changed while the gateway was down: trust the schedule
            # for the period running now; a stored end already past stays, and is replayed
            now_period = self.schedules[post.id].period_at(self.started_at)
            if now_period is not None:
                st = replace(st, period_end=now_period.end)
            elif st.period_end > self.started_at:
                log.warning("post %s: no longer on duty by the register; ending duty", post.id)
                st = replace(st, period_end=self.started_at)
        return st

    # -- Watcher -------------------------------------------------------------------------

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """A CHECKIN from a post's unit restarts that post's clock (or acknowledges)."""
        body = frame.body
        if not isinstance(body, Checkin):
            return
        for post in self.posts.values():
            if post.unit != unit.id:
                continue
            try:
                self._advance(post, at)
                self._checkin(post, unit, body.duress, at)
            except Exception:
                log.exception("post %s: check-in at %.3f not processed", post.id, at)

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links do not change duty: a post whose link is down misses its check-ins."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """An acknowledgement on ``<prefix>/<site>/duty/<post>/ack`` stops the ladder."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[-1] != "ack" or parts[-3] != "duty":
            log.warning("duty watch: ignoring message on %r", topic)
            return
        site, post_id = parts[-4], parts[-2]
        post = self.posts.get(post_id)
        if post is None or post.site != site:
            log.warning("duty ack for unknown post %r at site %r", post_id, site)
            return
        by = "duty room"
        signed_at: float | None = None
        if payload.strip():
            try:
                doc = json.loads(payload)
            except (ValueError, RecursionError):
                log.warning("duty ack for %s: payload is not JSON, taken as empty", post_id)
                doc = {}
            if isinstance(doc, dict) and isinstance(doc.get("by"), str) and doc["by"].strip():
                by = doc["by"].strip()[:80]
            if isinstance(doc, dict) and isinstance(doc.get("at"), str):
                with contextlib.suppress(ValueError):
                    signed_at = datetime.fromisoformat(doc["at"].replace("Z", "+00:00")).timestamp()
        try:
            self._advance(post, at)
            st = self.state[post.id]
            if not st.escalating:
                log.info("duty ack for post %s by %s: nothing pending", post.id, by)
                return
            # an ack signed before this check-in was missed cannot be an answer to it
            missed = st.missed_at if st.missed_at is not None else st.missed_deadline
            if (
                signed_at is not None
                and missed is not None
                and signed_at < missed - ACK_CLOCK_SKEW_S
            ):
                log.warning(
                    "duty ack for post %s signed before the missed check-in: ignored", post.id
                )
                self.outlet.event(
                    site=post.site,
                    kind="forgery",
                    at=at,
                    post=post.id,
                    code=CID_FORGERY,
                    qualifier=NEW,
                    detail={"channel": "mqtt", "predated": 1, "topics": [topic]},
                )
                return
            if self._prompted(post, st):
                self.outlet.signal(post.unit, SignalPattern.STOP, 0)
            self._acknowledge(post, st, at, by=by, via="duty_ack")
        except Exception:
            log.exception("post %s: duty ack at %.3f not processed", post.id, at)

    def tick(self, now: float) -> None:
        """Bring every post up to ``now``: shift changes, missed check-ins, ladder rungs.

        The first tick publishes every post's retained state.
        """
        if not self._announced:
            self._announced = True
            for post in self.posts.values():
                try:
                    self._advance(post, now)
                    self._retain(post, now)
                except Exception:
                    log.exception("post %s: state not published", post.id)
        for post in self.posts.values():
            try:
                self._advance(post, now)
            except Exception:
                log.exception("post %s: duty check at %.3f failed", post.id, now)

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` will act (None: nothing scheduled)."""
        times = [t for p in self.posts.values() if (t := self._next(p)[0]) is not None]
        return min(times, default=None)

    # -- the state machine ---------------------------------------------------------------

    def _period_from(self, post: Post, t: float) -> Period | None:
        cached = self._next_period.get(post.id)
        if cached is not None and cached[0] == t:
            return cached[1]
        p = self.schedules[post.id].period_from(t)
        self._next_period[post.id] = (t, p)
        return p

    def _next(self, post: Post) -> tuple[float | None, str]:
        """The next scheduled action for ``post``: (time, what)."""
        st = self.state[post.id]
        cands: list[tuple[float, int, str]] = []
        if st.escalating:
            assert st.missed_deadline is not None
            if st.next_step < len(post.escalation):
                step = post.escalation[st.next_step]
                cands.append((st.missed_deadline + step.after_min * 60, 1, "step"))
        elif st.deadline is not None:
            cands.append((st.deadline, 0, "miss"))
        if st.on_duty:
            if not math.isinf(st.period_end):
                cands.append((st.period_end, 2, "end"))
        else:
            assert st.off_since is not None
            p = self._period_from(post, st.off_since)
            if p is not None:
                cands.append((max(p.start, st.off_since), 3, "start"))
        if not cands:
            return None, ""
        t, _, what = min(cands)
        return t, what

    def _advance(self, post: Post, now: float) -> None:
        """Apply every scheduled action due at or before ``now``, in time order."""
        for _ in range(10_000):
            t, what = self._next(post)
            if t is None or t > now:
                return
            if what == "start":
                self._start(post, t, now)
            elif what == "end":
                self._end(post, t, now)
            elif what == "miss":
                self._miss(post, t, now)
            else:
                self._step(post, t, now)
        raise RuntimeError(f"post {post.id}: duty state does not settle")  # pragma: no cover

    def _start(self, post: Post, t: float, now: float) -> None:
        st = self.state[post.id]
        assert st.off_since is not None
        p = self._period_from(post, st.off_since)
        assert p is not None
        new = replace(st, on_duty=True, off_since=None, period_start=p.start, period_end=p.end)
        if not st.escalating and st.due_at is None:
            due = t + post.checkin_interval_min * 60
            new = replace(new, due_at=due, deadline=due + post.grace_min * 60)
        self._publish(
            post,
            new,
            "shift_start",
            t,
            {
                "period_start": _db(p.start),
                "period_end": _db(p.end),
                "due_at": new.due_at,
                "noticed_at": now if now > t else None,
            },
        )

    def _end(self, post: Post, t: float, now: float) -> None:
        st = self.state[post.id]
        new = replace(st, on_duty=False, off_since=t, period_start=-math.inf, period_end=math.inf)
        owed = st.due_at is not None and st.due_at < t
        if not st.escalating and not owed:
            new = replace(new, due_at=None, deadline=None)
        self._publish(
            post,
            new,
            "shift_end",
            t,
            {"still_owed_due": st.due_at if owed else None, "noticed_at": now if now > t else None},
        )

    def _miss(self, post: Post, t: float, now: float) -> None:
        st = self.state[post.id]
        if self.installed is not None and not self.installed(post.unit):
            # nobody can check in on a unit that was never installed (no key, not
            # deployed): the supervisor told the security lead once; no ladder, no police
            due = now + post.checkin_interval_min * 60
            log.info("post %s: unit %s not installed; no check-in owed", post.id, post.unit)
            self._save_only(replace(st, due_at=due, deadline=due + post.grace_min * 60))
            return
        if t < self.started_at:
            # the deadline passed while the gateway was down: nobody could be told then
            if st.on_duty and st.period_end > self.started_at:
                grace = max(post.grace_min * 60.0, MIN_RESTART_GRACE_S)
                log.warning(
                    "post %s: check-in deadline %.0f passed while the gateway was down; "
                    "the guard has until %.0f",
                    post.id,
                    t,
                    self.started_at + grace,
                )
                self._save_only(replace(st, deadline=self.started_at + grace))
            else:
                log.warning(
                    "post %s: check-in deadline %.0f passed while the gateway was down, in a "
                    "duty period that is over: not raised",
                    post.id,
                    t,
                )
                self._save_only(replace(st, due_at=None, deadline=None))
            return
        due = st.due_at if st.due_at is not None else t
        new = replace(st, due_at=None, deadline=None, missed_deadline=t, missed_at=now, next_step=0)
        self._publish(
            post,
            new,
            "missed_checkin",
            now,
            {
                **self._who(post),
                "due_at": due,
                "deadline": t,
                "minutes_overdue": _minutes(now - due),
                "last_checkin": st.last_checkin,
                "on_duty": st.on_duty,
            },
            code=code_of("missed_checkin"),
            qualifier=NEW,
        )

    def _step(self, post: Post, t: float, now: float) -> None:
        st = self.state[post.id]
        assert st.missed_deadline is not None
        step = post.escalation[st.next_step]
        if step.step == "prompt_guard":
            self.outlet.signal(post.unit, SignalPattern.PROMPT_CHECKIN, PROMPT_SECONDS)
        site = self.config.sites.get(post.site)
        missed_due = st.missed_deadline - post.grace_min * 60
        detail: dict[str, Any] = {
            "step": step.step,
            "rung": st.next_step + 1,
            "of": len(post.escalation),
            "after_min": step.after_min,
            "scheduled": t,
            "missed_deadline": st.missed_deadline,
            "minutes_overdue": _minutes(now - missed_due),
            "last_checkin": st.last_checkin,
            **self._who(post),
        }
        if site is not None:
            detail["site_name"] = site.name
            detail["address"] = site.address
            if step.step in ("security_lead", "police"):
                detail["security_lead"] = dict(site.security_lead)
        if step.step == "police":
            detail["action"] = (
                f"Guard at {detail['place']} has not checked in for "
                f"{detail['minutes_overdue']} min past the due time; check the post."
            )
        self._publish(post, replace(st, next_step=st.next_step + 1), "escalation", now, detail)

    def _checkin(self, post: Post, unit: Unit, duress: bool, at: float) -> None:
        st = self.state[post.id]
        if st.escalating:
            self._acknowledge(post, st, at, by=unit.id, via="checkin", duress=duress)
            return
        if st.due_at is None or st.deadline is None:
            status = "on_time" if st.on_duty else "off_duty"
        elif at <= st.due_at:
            status = "on_time"
        else:
            status = "late"
        new = replace(st, last_checkin=at)
        if st.on_duty:
            due = at + post.checkin_interval_min * 60
            new = replace(new, due_at=due, deadline=due + post.grace_min * 60)
        elif st.due_at is not None:
            new = replace(new, due_at=None, deadline=None)  # the owed one after the shift
        detail: dict[str, Any] = {
            "status": status,
            "due_at": st.due_at,
            "next_due": new.due_at,
            "unit": unit.id,
            "duress": duress,
        }
        if st.due_at is not None and status == "late":
            detail["minutes_late"] = _minutes(at - st.due_at)
        self._publish(post, new, "checkin", at, detail)

    def _acknowledge(
        self, post: Post, st: PostState, at: float, *, by: str, via: str, duress: bool = False
    ) -> None:
        assert st.missed_deadline is not None
        missed_due = st.missed_deadline - post.grace_min * 60
        new = replace(
            st, missed_deadline=None, missed_at=None, next_step=0, due_at=None, deadline=None
        )
        if via == "checkin":
            new = replace(new, last_checkin=at)
        if st.on_duty:
            due = at + post.checkin_interval_min * 60
            new = replace(new, due_at=due, deadline=due + post.grace_min * 60)
        steps = [s.step for s in post.escalation[: st.next_step]]
        self._publish(
            post,
            new,
            "acknowledged",
            at,
            {
                "by": by,
                "via": via,
                "duress": duress,
                "missed_deadline": st.missed_deadline,
                "minutes_overdue": _minutes(at - missed_due),
                "steps_notified": steps,
                "next_due": new.due_at,
                **self._who(post),
            },
            code=code_of("acknowledged"),
            qualifier=RESTORE,
        )

    def _prompted(self, post: Post, st: PostState) -> bool:
        return any(s.step == "prompt_guard" for s in post.escalation[: st.next_step])

    # -- output and persistence ----------------------------------------------------------

    def _who(self, post: Post) -> dict[str, Any]:
        unit = self.config.units.get(post.unit)
        return {
            "post": post.id,
            "unit": post.unit,
            "place": unit.place if unit is not None else post.unit,
            "guard_contact": unit.owner if unit is not None else None,
        }

    def _publish(
        self,
        post: Post,
        new: PostState,
        kind: str,
        at: float,
        detail: Mapping[str, Any],
        *,
        code: int | None = None,
        qualifier: int | None = None,
    ) -> None:
        """Publish one duty event, then persist the state it leads to."""
        log.info("post %s: %s at %.3f", post.id, kind, at)
        self.outlet.event(
            site=post.site,
            kind=kind,
            at=at,
            post=post.id,
            code=code,
            qualifier=qualifier,
            detail={k: v for k, v in detail.items() if v is not None},
            topic="duty",
        )
        self._save_only(new)
        self._retain(post, at)

    def post_state(self, post_id: str, at: float) -> dict[str, Any]:
        """The post's state as its retained ``post/<post>/state`` message says it."""
        post = self.posts[post_id]
        st = self.state[post_id]
        ladder = post.escalation
        last_step = ladder[st.next_step - 1] if st.escalating and st.next_step > 0 else None
        return {
            "post": post.id,
            "site": post.site,
            **self._who(post),
            "on_duty": st.on_duty,
            "shift": (
                {"start": iso(_db(st.period_start)), "end": iso(_db(st.period_end))}
                if st.on_duty
                else None
            ),
            "off_since": iso(st.off_since) if not st.on_duty else None,
            "last_checkin": iso(st.last_checkin),
            "next_due": iso(st.due_at),
            "deadline": iso(st.deadline),
            "escalating": st.escalating,
            "missed_deadline": iso(st.missed_deadline),
            "rung": st.next_step if st.escalating else 0,
            "of": len(ladder),
            "step": last_step.step if last_step is not None else None,
            "installed": self.installed is None or self.installed(post.unit),
            "at": iso(at),
        }

    def _retain(self, post: Post, at: float) -> None:
        self.outlet.retain(
            site=post.site,
            topic=f"post/{post.id}/state",
            payload=self.post_state(post.id, at),
            at=at,
        )

    def _save_only(self, st: PostState) -> None:
        with transaction(self.conn):
            self._save(st)
        self.state[st.post] = st

    def _save(self, st: PostState) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO duty_state(post, on_duty, off_since, period_start, "
            "period_end, due_at, deadline, last_checkin, missed_deadline, missed_at, "
            "next_step, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                st.post,
                int(st.on_duty),
                st.off_since,
                _db(st.period_start),
                _db(st.period_end),
                st.due_at,
                st.deadline,
                st.last_checkin,
                st.missed_deadline,
                st.missed_at,
                st.next_step,
                self.clock.now(),
            ),
        )
