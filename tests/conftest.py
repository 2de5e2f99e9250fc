"""Root of the test tree: per-area fixtures live in each folder's conftest.py;
helpers shared across areas (broker, fake units, ptys) in tests/support/."""

import os

import pytest

from tests.support import budget
from tests.support.timing import TIME_SCALE, TIME_SCALE_SOURCE


def pytest_report_header() -> str:
    return f"campusguard time scale: {TIME_SCALE:.2f} ({TIME_SCALE_SOURCE})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    durations = [
        (r.nodeid, r.duration)
        for reports in terminalreporter.stats.values()
        for r in reports
        if isinstance(r, pytest.TestReport)
    ]
    if durations:
        terminalreporter.section("time per area (budgets: tests/support/budget.py)")
        for line in budget.summary(durations):
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under mutmut, each file's tests in the order they are written.

    mutmut names the tests that cover a mutant from a set, so they ran in no set order;
    a file's first tests are its quick checks (the relay connects at all, its pace table),
    and with ``-x`` a mutant that breaks them failed only after a slower test had waited
    out its timeout. Outside mutmut pytest's own order (random, or as collected) stays.
    """
    if "MUTANT_UNDER_TEST" in os.environ:
        items.sort(key=lambda item: (str(item.path), item.reportinfo()[1] or 0))
