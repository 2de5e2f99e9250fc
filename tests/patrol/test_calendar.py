"""The school calendar and patrol windows: school days, holidays, terms, make-up days."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from gateway.core.config import ConfigError
from gateway.watch.calendar import SchoolCalendar, next_slot
from gateway.watch.shifts import zone
from tests.patrol.helpers import CALENDAR, TERM_MONDAY, TZ, register, route


@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("2026-09-07", "school day"),  # Monday
        ("2026-09-12", "weekend"),  # Saturday
        ("2026-09-27", "make-up school day"),  # Sunday taught (调休)
        ("2026-10-10", "make-up school day"),  # Saturday taught
        ("2026-10-01", "holiday: National Day"),  # Thursday
        ("2026-10-08", "holiday: National Day"),  # Thursday, the holiday's last day
        ("2026-10-09", "school day"),  # Friday after it
        ("2026-08-31", "outside term"),  # Monday before the term
        ("2027-01-25", "outside term"),  # Monday after it
    ],
)
def test_school_days_by_the_calendar(day: str, why: str) -> None:
    cal = SchoolCalendar(register().calendar)
    d = date.fromisoformat(day)
    assert cal.why(d) == why
    assert cal.is_school_day(d) == why.endswith("school day")


def test_windows_are_local_wall_times_and_skip_the_holiday() -> None:
    config = register()
    cal = SchoolCalendar(config.calendar)
    tz = zone(TZ)
    p = config.patrols["run"]
    s = next_slot(p, cal, tz, TERM_MONDAY)
    assert s is not None and s.start == TERM_MONDAY + 7 * 3600 and s.end == TERM_MONDAY + 8.5 * 3600
    # Wednesday 30 September after the afternoon window: the next is Friday 9 October
    after = datetime(2026, 9, 30, 18, 0, tzinfo=tz).timestamp()
    s = next_slot(p, cal, tz, after)
    assert s is not None and s.day == date(2026, 10, 9) and s.index == 0
    # Friday 9 October evening: Saturday 10 October is a make-up school day
    s = next_slot(p, cal, tz, s.end + 10 * 3600)
    assert s is not None and s.day == date(2026, 10, 10)
    every = register([route(days="every")]).patrols["run"]
    s = next_slot(every, cal, tz, after)
    assert s is not None and s.day == date(2026, 10, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"makeup_days": ["2026-09-28"]}, "2026-09-28 is a mon: already a school day"),
        ({"terms": [{"start": "2026-09-01", "end": "2026-08-01"}]}, "is before the start"),
        ({"holidays": [{"start": "1 October"}]}, "'1 October': a day as YYYY-MM-DD"),
        ({"school_day": "mon-fri"}, "did you mean 'school_days'?"),
    ],
)
def test_a_bad_calendar_names_its_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        register(calendar={**CALENDAR, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checkpoints": ["cp-a", "shop"]}, "'shop' is a shop, not a checkpoint"),
        ({"checkpoints": ["cp-a", "cp-a"]}, "'cp-a' is listed twice"),
        ({"checkpoints": []}, "at least one checkpoint unit"),
        ({"order": "random"}, "'random': one of ordered, any"),
        ({"windows": [{"start": "09:00", "end": "08:00"}]}, "ends after it starts"),
        (
            {"windows": [{"start": "07:00", "end": "09:00"}, {"start": "08:00", "end": "10:00"}]},
            "not overlapping",
        ),
        ({"max_between_min": 40}, "40 is longer than max_round_min"),
        ({"escalation": [{"step": "prompt_guard", "after_min": 0}]}, "one of remind_leader"),
        ({"max_round": 30}, "did you mean 'max_round_min'?"),
    ],
)
def test_a_bad_route_names_its_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        register([route(**change)])


def test_a_checkpoint_has_no_alarm_button_and_needs_its_checkin_pin() -> None:
    unit = {
        "id": "cp-x",
        "addr": 50,
        "site": "school",
        "place": "x",
        "owner": "y",
        "role": "checkpoint",
        "link": "bus",
    }
    with pytest.raises(ConfigError, match="a checkpoint has no alarm button"):
        register(units=[{**unit, "pins": {"button": 13, "checkin": 27}}])
    with pytest.raises(ConfigError, match="field 'checkin': missing"):
        register(units=[{**unit, "pins": {"tamper": 4, "led": 2}}])


def test_a_checkpoint_belongs_to_one_route() -> None:
    with pytest.raises(ConfigError, match="'cp-a' is already on route run"):
        register([route(), route(id="other", checkpoints=["cp-a"])])


def test_the_shipped_register_has_a_patrol_route() -> None:
    from gateway.core.config import load_config

    config = load_config("boards.yaml")
    run = config.patrols["school-run"]
    assert all(config.units[c].role == "checkpoint" for c in run.checkpoints)
    assert "button" not in config.units[run.checkpoints[0]].pins
