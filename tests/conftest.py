"""Root of the test tree: per-area fixtures live in each folder's conftest.py;
helpers shared across areas (broker, fake units, ptys) in tests/support/."""

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
