"""The school calendar: which local days are school days, and a patrol's windows on them.

boards.yaml's ``calendar`` (:class:`gateway.core.config.CalendarSpec`) gives the weekdays
taught in term time, the terms, the holidays and the make-up school days on weekends
(调休, when a public holiday is bridged by teaching on the weekend around it). A day is a
school day when it is a make-up day; otherwise when it lies in a term (or no terms are
given), in no holiday, and on a school weekday.

Patrol windows (:class:`gateway.core.config.Window`) are local wall-clock times of a day; they
are turned into UTC instants with the zone's rules, like guard-duty shifts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from gateway.core.config import CalendarSpec, Patrol

SEARCH_DAYS = 400
"""How far ahead the next window is looked for (a summer holiday is about 60 days)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One window on one day, in UTC seconds: ``start`` .. ``end``."""

    day: date
    start: float
    end: float
    index: int  # which of the route's windows

    @property
    def label(self) -> str:
        """``2026-09-01#0``: the day and the window's index, unique per route."""
        return f"{self.day.isoformat()}#{self.index}"


class SchoolCalendar:
    """School days by the register's calendar."""

    def __init__(self, spec: CalendarSpec) -> None:
        """Read ``spec`` (boards.yaml's ``calendar``, or its default: Monday to Friday)."""
        self.spec = spec
        self._makeup = frozenset(spec.makeup_days)

    def why(self, day: date) -> str:
        """Why ``day`` is or is not a school day, in a few words (for logs and the report)."""
        spec = self.spec
        if day in self._makeup:
            return "make-up school day"
        for h in spec.holidays:
            if h.contains(day):
                return f"holiday: {h.name}" if h.name else "holiday"
        if spec.terms and not any(t.contains(day) for t in spec.terms):
            return "outside term"
        if day.weekday() not in spec.school_days:
            return "weekend"
        return "school day"

    def is_school_day(self, day: date) -> bool:
        """True on a school day (a make-up day included)."""
        return self.why(day) in ("school day", "make-up school day")


def _instant(day: date, minutes: int, tz: tzinfo) -> float:
    """Local wall-clock ``minutes`` after the start of ``day`` (24:00: the next midnight)."""
    wall = datetime.combine(day, time(0)) + timedelta(minutes=minutes)
    return wall.replace(tzinfo=tz).timestamp()


def slots(patrol: Patrol, calendar: SchoolCalendar, tz: tzinfo, first_day: date) -> Iterator[Slot]:
    """The route's windows from ``first_day`` on, in time order (at most SEARCH_DAYS days)."""
    for n in range(SEARCH_DAYS):
        day = first_day + timedelta(days=n)
        if patrol.school_days_only and not calendar.is_school_day(day):
            continue
        for i, w in enumerate(patrol.windows):
            yield Slot(day, _instant(day, w.start_min, tz), _instant(day, w.end_min, tz), i)


def next_slot(patrol: Patrol, calendar: SchoolCalendar, tz: tzinfo, t: float) -> Slot | None:
    """The first window that ends after ``t`` (it may be running at ``t``), or None."""
    day = datetime.fromtimestamp(t, tz).date() - timedelta(days=1)
    for s in slots(patrol, calendar, tz, day):
        if s.end > t:
            return s
    return None
