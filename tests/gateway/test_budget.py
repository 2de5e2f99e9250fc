"""README's "Tests and their time" table is tests/support/budget.py's shares, under 10 min."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.budget import AREAS

README = Path(__file__).resolve().parents[2] / "README.md"
# the table's first column -> budget.py's area (None: the steps before pytest)
ROWS = {
    "lint, type checks, 32-bit build check": None,
    "protocol": "protocol",
    "gateway": "gateway",
    "firmware (64-bit)": "firmware",
    "32-bit firmware": "firmware-32",
    "HIL (virtual boards)": "hil",
    "cluster": "cluster",
    "browser": "browser",
}


def test_the_readme_table_is_the_budget_and_it_fits_in_ten_minutes() -> None:
    text = README.read_text()
    table = text[text.index("| area | tests | budget") :].split("\n\n", 1)[0]
    shares = {
        m[1]: int(m[2]) for m in re.finditer(r"^\| ([^|]+?) \|[^\n]*\| (\d+) s \|$", table, re.M)
    }
    assert set(shares) == set(ROWS), shares
    budget = {a.name: int(a.budget_s) for a in AREAS}
    assert {ROWS[k]: v for k, v in shares.items() if ROWS[k]} == budget
    assert sum(shares.values()) < 600
