"""Weekly duty schedules in the school's local time, as UTC periods.

boards.yaml gives each guard post shifts such as ``{days: mon-fri, start: "18:00",
end: "08:00"}`` in the school's local time. A shift belongs to the day it starts on; one
whose end is not after its start runs overnight into the next day, and ``24:00`` is
midnight at the end of the day. Shifts that touch or overlap are one continuous *duty
period*: a hand-over from the day guard to the night guard (or midnight of a 24-hour
post) does not end duty, so the guard's check-in clock runs on across it. A schedule
that leaves no gap in the week is on duty forever (``Period(-inf, inf)``).

All times in and out are UTC seconds since the epoch; local wall times are turned into
instants with the zone's rules (daylight saving included), so a shift is always the
stated wall-clock hours.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.core.config import Shift

log = logging.getLogger(__name__)

WEEK_S = 7 * 86400
_BEHIND_DAYS = 9  # a period containing t began less than 7 days before t
_AHEAD_DAYS = 16  # the next period starts within 7 days and lasts less than 7 more


def zone(name: str | None = None) -> tzinfo:
    """The time zone ``name`` (IANA, e.g. ``Asia/Shanghai``), or the system's local zone.

    The local zone comes from ``$TZ``, then ``/etc/timezone``, then ``/etc/localtime``;
    UTC if none of them names a zone. Raises ValueError for an unknown ``name``.
    """
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
    candidates: list[str] = []
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        candidates.append(env)
    try:
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    except OSError:
        pass
    for cand in candidates:
        try:
            return ZoneInfo(cand)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        log.warning("no local time zone found; shifts are read as UTC")
        return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Period:
    """A duty period ``[start, end)`` in UTC seconds; ``-inf``/``inf`` when unbounded."""

    start: float
    end: float

    def contains(self, t: float) -> bool:
        """True when ``t`` lies in the period."""
        return self.start <= t < self.end

    @property
    def continuous(self) -> bool:
        """True for a post on duty around the clock, every day."""
        return math.isinf(self.start) and math.isinf(self.end)


ALWAYS = Period(-math.inf, math.inf)


def _instant(day: date, minute: int, tz: tzinfo) -> float:
    """UTC seconds of local wall time ``minute`` minutes after midnight starting ``day``."""
    day = day + timedelta(days=minute // 1440)
    minute %= 1440
    wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=tz)
    return wall.timestamp()


class WeeklySchedule:
    """The duty periods of one guard post."""

    def __init__(self, shifts: Sequence[Shift], tz: tzinfo) -> None:
        """``shifts`` as parsed from boards.yaml; ``tz`` the school's local zone."""
        self.shifts = tuple(shifts)
        self.tz = tz
        covered = _week_minutes(self.shifts)
        self.always = covered >= 7 * 1440
        self.never = covered == 0

    def _shift_intervals(self, first: date, last: date) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        day = first
        while day <= last:
            wd = day.weekday()
            for s in self.shifts:
                if wd not in s.days:
                    continue
                end = s.end_min if s.end_min > s.start_min else s.end_min + 1440
                out.append((_instant(day, s.start_min, self.tz), _instant(day, end, self.tz)))
            day += timedelta(days=1)
        return out

    def periods(self, t0: float, t1: float) -> list[Period]:
        """Merged duty periods overlapping ``[t0, t1)``, in order, exact at both ends.

        Periods that run past the search window are looked up in full, so ``start`` and
        ``end`` are the true limits of each period.
        """
        if self.never or t1 <= t0:
            return []
        if self.always:
            return [ALWAYS]
        d0 = datetime.fromtimestamp(t0, self.tz).date() - timedelta(days=_BEHIND_DAYS)
        d1 = datetime.fromtimestamp(t1, self.tz).date() + timedelta(days=_AHEAD_DAYS)
        merged = _merge(self._shift_intervals(d0, d1))
        return [Period(s, e) for s, e in merged if e > t0 and s < t1]

    def period_at(self, t: float) -> Period | None:
        """The duty period containing ``t``, or None when the post is off duty at ``t``."""
        for p in self.periods(t, t + 1e-3):
            if p.contains(t):
                return p
        return None

    def on_duty(self, t: float) -> bool:
        """True when the post must be manned at ``t``."""
        return self.period_at(t) is not None

    def period_from(self, t: float) -> Period | None:
        """The period containing ``t``, else the next one to start after ``t``."""
        for p in self.periods(t, t + WEEK_S + 1):
            if p.end > t:
                return p
        return None

    def next_start(self, t: float) -> float | None:
        """The start of the first duty period beginning strictly after ``t``."""
        for p in self.periods(t, t + WEEK_S + 1):
            if p.start > t:
                return p.start
        return None


def _week_minutes(shifts: Iterable[Shift]) -> int:
    """Minutes of the week (Monday 00:00 = 0, wrapping) that some shift covers."""
    covered = bytearray(7 * 1440)
    for s in shifts:
        length = (
            s.end_min - s.start_min if s.end_min > s.start_min else s.end_min + 1440 - s.start_min
        )
        for d in s.days:
            base = d * 1440 + s.start_min
            for m in range(base, base + length):
                covered[m % (7 * 1440)] = 1
    return sum(covered)


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def due_times(period: Period, interval_s: float, checkins: Sequence[float]) -> list[float]:
    """The check-in deadlines set in ``period`` for a guard who checks in at ``checkins``.

    A check-in restarts the clock: the period's start sets the first deadline
    ``interval_s`` later, and every check-in inside the period sets the next one
    ``interval_s`` after it. A deadline at or after the period's end is not owed. The
    period must be bounded; ``checkins`` may be in any order.
    """
    if math.isinf(period.start) or math.isinf(period.end):
        raise ValueError("due_times needs a bounded period")
    starts = [period.start, *sorted(c for c in checkins if period.start <= c < period.end)]
    return [s + interval_s for s in starts if s + interval_s < period.end]
