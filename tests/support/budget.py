"""The suite's time budget per area, and the summary ``make test`` prints against it.

``make test`` must stay under ~10 minutes on an idle 2-core machine. Each area has a
share (seconds of test time: setup, call and teardown, as pytest measures them); the
summary at the end of a run shows what each area took and flags one that is over its
share. Being over budget never fails the run: on a busy machine every area is slower,
and timing belongs in bench/. It tells whoever adds tests where the time went.

An area is the first rule whose prefix starts the test's node id and whose ``marker``
(a substring of the node id: the firmware tests' ``frozen32`` parameter, or the file
test_frozen32.py) is in it. The
cluster and browser areas hold the tests issues 14 and 15 added (tests/cluster/,
tests/dutyroom/test_web_browser.py); a new area gets a rule and a share here, and a
line in README.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Area:
    name: str
    budget_s: float
    prefixes: tuple[str, ...]
    marker: str = ""


# Ordered: the first match wins (the 32-bit firmware before the firmware). Each share is
# the area's time on an idle 2-core machine (Debian's 3.11.2) and a few seconds: 577 s of
# pytest time; lint, mypy and the 32-bit build check take ~20 s more (the first build of
# the 32-bit port, once per clone, is not counted): under 10 min. The cluster's 116 s are
# mostly NATS re-elections and the 5 s connect timeout of a node that is electing, which
# the failover tests exist to go through. A share may grow only if another one shrinks.
AREAS: tuple[Area, ...] = (
    Area("firmware-32", 74, ("tests/firmware/", "tests/gateway/test_frozen32.py"), "frozen32"),
    Area("firmware", 101, ("tests/firmware/",)),
    Area("protocol", 3, ("tests/protocol/",)),
    Area("browser", 17, ("tests/dutyroom/test_web_browser.py", "tests/browser/")),
    Area(
        "gateway",
        214,
        ("tests/gateway/", "tests/duty/", "tests/patrol/", "tests/notify/", "tests/dutyroom/")
    ),
    Area("gateway", 214, ("tests/sim/",)),
    Area("hil", 52, ("hil_tests/",)),
    Area("cluster", 116, ("tests/cluster/",)),
)
OTHER = Area("other", 0, ())


def area_of(nodeid: str) -> Area:
    """The area a test (by pytest node id, relative to the repository) counts towards."""
    for area in AREAS:
        if nodeid.startswith(area.prefixes) and area.marker in nodeid:
            return area
    return OTHER


def summary(durations: list[tuple[str, float]]) -> list[str]:
    """Lines for the end of a run: seconds per area against its budget."""
    spent: dict[str, float] = defaultdict(float)
    tests: dict[str, set[str]] = defaultdict(set)
    budgets = {a.name: a.budget_s for a in (*AREAS, OTHER)}
    for nodeid, seconds in durations:
        name = area_of(nodeid).name
        spent[name] += seconds
        tests[name].add(nodeid)
    lines = []
    for name in dict.fromkeys(a.name for a in (*AREAS, OTHER)):
        if name not in spent:
            continue
        budget = budgets[name]
        over = "  OVER BUDGET" if budget and spent[name] > budget else ""
        share = f"{budget:5.0f} s" if budget else "    -  "
        lines.append(
            f"{name:12} {spent[name]:6.1f} s of {share}  ({len(tests[name])} tests){over}"
        )
    total = sum(spent.values())
    lines.append(f"{'total':12} {total:6.1f} s of {sum(budgets.values()):5.0f} s")
    return lines
