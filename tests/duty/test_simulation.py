"""A simulated month through the real watchers into a real journal: the report's figures
equal the simulation's own tally (bench/duty_sim.py)."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any

import pytest

from tests.support.bench import bench_module


@pytest.fixture(scope="module")
def duty_sim() -> ModuleType:
    return bench_module("duty_sim")


@pytest.fixture(scope="module")
def january(
    duty_sim: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, dict[str, Any]]:
    """One simulated month (seconds of CPU: 300,000 frames), shared by the tests below;
    none of them changes it."""
    return duty_sim.simulate(
        tmp_path_factory.mktemp("duty_sim") / "month.db", "2026-01", "Asia/Shanghai", 7
    )


def test_a_simulated_month_reports_what_happened(
    duty_sim: ModuleType, january: tuple[Any, dict[str, Any]]
) -> None:
    sim, report = january
    assert duty_sim.check(report, sim) == []
    site = report["sites"][0]
    gate = site["duty"][0]
    # a month of 24-hour duty: at least 24 check-ins a day (the guard checks in early)
    assert 31 * 24 < gate["due"] < 31 * 36
    assert (gate["late"], gate["missed"]) == (3, 5)
    assert gate["by_step"] == {"prompt_guard": 5, "security_lead": 3, "police": 2}
    units = {u["unit"]: u for u in site["units"]}
    assert units["shop-fruit"]["offline"] == 1 and units["dorm-b"]["offline"] == 0
    assert units["home-sun"]["low_battery"] == 1 and units["shop-noodles"]["tamper"] == 1
    assert sim.frames > 200_000  # every heartbeat of the month went through the watchers


def test_the_check_catches_a_wrong_figure(
    duty_sim: ModuleType, january: tuple[Any, dict[str, Any]]
) -> None:
    sim, report = january
    assert duty_sim.check(report, sim) == []
    # the same month with a tally that disagrees (a copy: the shared month stays true)
    wrong = copy.copy(sim)
    wrong.truth = copy.deepcopy(sim.truth)
    wrong.truth.missed += 1
    wrong.truth.offline_s["shop-fruit"] += 1
    bad = duty_sim.check(report, wrong)
    assert any(b.startswith("missed:") for b in bad)
    assert any(b.startswith("shop-fruit offline s") for b in bad)
    assert duty_sim.check(report, sim) == []
