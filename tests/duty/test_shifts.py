"""Weekly schedule math: duty periods, overnight shifts, hand-over, time zones."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.core.config import Shift
from gateway.watch.shifts import ALWAYS, Period, WeeklySchedule, due_times, zone
from tests.duty.helpers import MONDAY

SH = ZoneInfo("Asia/Shanghai")
H = 3600.0
D = 86400.0
ALL = (0, 1, 2, 3, 4, 5, 6)
WEEKDAYS = (0, 1, 2, 3, 4)


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo = SH) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def test_monday_constant_is_local_midnight() -> None:
    assert MONDAY == at(2026, 1, 5)
    assert datetime.fromtimestamp(MONDAY, SH).weekday() == 0


def test_round_the_clock_is_one_unbounded_period() -> None:
    s = WeeklySchedule((Shift(ALL, 0, 1440),), SH)
    assert s.always
    assert s.period_at(MONDAY + 12345) == ALWAYS
    assert ALWAYS.continuous
    assert s.periods(MONDAY, MONDAY + 30 * D) == [ALWAYS]
    assert s.next_start(MONDAY) is None


def test_day_and_night_shifts_covering_the_week_are_continuous() -> None:
    # hand-over at 08:00 and 20:00 every day: one period for ever
    s = WeeklySchedule((Shift(ALL, 8 * 60, 20 * 60), Shift(ALL, 20 * 60, 8 * 60)), SH)
    assert s.always
    assert s.period_at(at(2026, 1, 7, 20, 0)) == ALWAYS


def test_day_shift_periods_in_local_time() -> None:
    s = WeeklySchedule((Shift(WEEKDAYS, 8 * 60, 18 * 60),), SH)
    p = s.period_at(at(2026, 1, 5, 9))
    assert p == Period(at(2026, 1, 5, 8), at(2026, 1, 5, 18))
    assert s.period_at(at(2026, 1, 5, 7, 59)) is None
    assert s.period_at(at(2026, 1, 5, 18)) is None  # the end is not in the period
    assert s.on_duty(at(2026, 1, 5, 8))
    # Friday evening -> next start is Monday 08:00
    assert s.next_start(at(2026, 1, 9, 18)) == at(2026, 1, 12, 8)
    assert s.period_from(at(2026, 1, 10, 12)) == Period(at(2026, 1, 12, 8), at(2026, 1, 12, 18))


def test_overnight_shift_belongs_to_the_day_it_starts() -> None:
    s = WeeklySchedule((Shift((4,), 22 * 60, 6 * 60),), SH)  # Friday 22:00 to Saturday 06:00
    assert s.period_at(at(2026, 1, 10, 3)) == Period(at(2026, 1, 9, 22), at(2026, 1, 10, 6))
    assert s.period_at(at(2026, 1, 5, 3)) is None  # no shift starts on Sunday night
    assert s.next_start(at(2026, 1, 10, 6)) == at(2026, 1, 16, 22)


def test_hand_over_between_touching_shifts_is_not_an_end() -> None:
    day = Shift(WEEKDAYS, 7 * 60, 19 * 60)
    night = Shift(WEEKDAYS, 19 * 60, 7 * 60)
    s = WeeklySchedule((day, night), SH)
    # Monday 07:00 to Saturday 07:00 is one period: ten hand-overs inside it
    p = s.period_at(at(2026, 1, 7, 19, 0))
    assert p == Period(at(2026, 1, 5, 7), at(2026, 1, 10, 7))
    assert s.period_at(at(2026, 1, 10, 7)) is None
    assert s.next_start(at(2026, 1, 10, 7)) == at(2026, 1, 12, 7)


def test_overlapping_shifts_merge() -> None:
    s = WeeklySchedule((Shift((0,), 8 * 60, 14 * 60), Shift((0,), 12 * 60, 20 * 60)), SH)
    assert s.periods(at(2026, 1, 5), at(2026, 1, 6)) == [
        Period(at(2026, 1, 5, 8), at(2026, 1, 5, 20))
    ]


def test_midnight_end_and_24_hour_days_merge_across_days() -> None:
    s = WeeklySchedule((Shift((5, 6), 0, 1440),), SH)  # the whole weekend
    assert s.period_at(at(2026, 1, 11, 23, 59)) == Period(at(2026, 1, 10), at(2026, 1, 12))


def test_daylight_saving_keeps_wall_clock_hours() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    s = WeeklySchedule((Shift(ALL, 22 * 60, 6 * 60),), berlin)
    # night of 28/29 March 2026: clocks go forward at 02:00, the night is 7 hours long
    p = s.period_at(at(2026, 3, 29, 1, 0, berlin))
    assert p == Period(at(2026, 3, 28, 22, 0, berlin), at(2026, 3, 29, 6, 0, berlin))
    assert p.end - p.start == 7 * H
    # a normal night is 8 hours
    q = s.period_at(at(2026, 3, 25, 1, 0, berlin))
    assert q is not None and q.end - q.start == 8 * H


def test_a_schedule_without_shifts_is_never_on_duty() -> None:
    s = WeeklySchedule((), SH)
    assert s.period_at(MONDAY) is None
    assert s.next_start(MONDAY) is None
    assert s.period_from(MONDAY) is None


def test_due_times_restart_at_each_checkin() -> None:
    p = Period(at(2026, 1, 5, 8), at(2026, 1, 5, 12))
    s = p.start
    # check-ins at 08:50 and 09:40; nothing after: deadlines 09:00, 09:50, 10:40
    assert due_times(p, H, [s + 100 * 60, s + 50 * 60]) == [s + H, s + 110 * 60, s + 160 * 60]
    # a check-in whose next deadline falls at or after the end sets no deadline
    assert due_times(p, H, [s + 3 * H]) == [s + H]
    with pytest.raises(ValueError):
        due_times(ALWAYS, H, [])


def test_zone_by_name_and_local_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(zone("Asia/Shanghai")) == "Asia/Shanghai"
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    assert str(zone()) == "Asia/Shanghai"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert zone() is not None
    assert not math.isnan(datetime(2026, 1, 1, tzinfo=zone()).timestamp())
