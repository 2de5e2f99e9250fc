"""A school term of patrols in seconds (bench/patrol_sim.py): the real patrol watch on a
manual clock, a real journal, exact escalation times, and the monthly report and the
daily patrol log read from that journal."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

from gateway.dutyroom.report import daily, monthly, per_site, render
from gateway.watch.shifts import zone
from tests.support.bench import bench_module


@pytest.fixture(scope="module")
def patrol_sim() -> ModuleType:
    return bench_module("patrol_sim")


def test_two_months_of_term_with_a_holiday_and_makeup_days(
    patrol_sim: ModuleType, tmp_path: Path
) -> None:
    sim = patrol_sim.simulate(tmp_path / "term.db", date(2026, 9, 1), date(2026, 10, 31), 5)
    assert patrol_sim.check(sim) == []
    # September: 22 weekdays from Tue 1st + Sunday 27th (make-up) = 23 school days;
    # October: 22 weekdays - 6 of the National Day holiday + Saturday 10th = 17
    assert sim.windows == 2 * (23 + 17)
    tz = zone("Asia/Shanghai")
    figures = patrol_sim.figures(sim)
    assert figures["rung_minutes_after_raise"] == {
        "remind_leader": [0.0],
        "security_lead": [5.0],
        "police": [10.0],
    }
    for month, due in (("2026-09", 46), ("2026-10", 34)):
        rep = monthly(sim.conn, month, tz, config=sim.config, now=2e9)
        row = per_site(rep)["hexi-primary"]["patrol"][0]
        assert row["route"] == "school-run" and row["due"] == due
        assert row["done"] + row["late"] + row["missed"] == due
        assert patrol_sim.check_report(sim, month, rep) == []
        assert "### Patrols" in render(rep, "md")
        assert ",patrol,school-run,missed," in render(rep, "csv")
    # no window on the holiday
    assert all(
        not (
            date(2026, 10, 1) <= date.fromisoformat(e["detail"]["window"][:10]) <= date(2026, 10, 8)
        )
        for e in sim.outlet.events
        if e["kind"] == "patrol_window_open"
    )


def test_the_check_catches_a_wrong_figure(patrol_sim: ModuleType, tmp_path: Path) -> None:
    sim = patrol_sim.simulate(tmp_path / "term.db", date(2026, 9, 1), date(2026, 9, 30), 5)
    assert patrol_sim.check(sim) == []
    step, at = sim.truth.rungs[0]
    sim.truth.rungs[0] = (step, at + 1)  # one rung a second late
    sim.truth.outcomes["done"] += 1
    bad = patrol_sim.check(sim)
    assert any(b.startswith("rungs:") for b in bad) and any(b.startswith("outcomes:") for b in bad)


def test_the_daily_patrol_log(patrol_sim: ModuleType, tmp_path: Path) -> None:
    sim = patrol_sim.simulate(tmp_path / "term.db", date(2026, 9, 1), date(2026, 9, 30), 5)
    tz = zone("Asia/Shanghai")
    missed_day = next(
        e for e in sim.outlet.events if e["kind"] == "round_missed"
    )  # a day on which a window had no round by its latest start
    from datetime import datetime

    day = datetime.fromtimestamp(missed_day["at"], tz).date().isoformat()
    log = daily(sim.conn, day, tz, config=sim.config)
    site = per_site(log)["hexi-primary"]
    route = site["patrols"][0]
    assert route["route"] == "school-run" and route["due"] == 2
    kinds = [e["kind"] for e in route["log"]]
    assert kinds.count("patrol_window_open") == 2 and "round_missed" in kinds
    assert not any(e["kind"].startswith("patrol") for e in site["unit_events"])
    md = render(log, "md")
    assert "### Patrol school-run: 2 rounds due" in md and "| E102 |" in md
    assert "patrol:school-run" in render(log, "csv")
