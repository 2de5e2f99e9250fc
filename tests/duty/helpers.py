"""Helpers for the duty tests: a register, a real journal, a recording Outlet, frames."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from gateway.core.config import Config, Unit, parse_config
from protocol.messages import Frame, Message, SignalPattern
from tests.support import register as registers
from tests.support.outlet import JournalOutlet, open_journal

# 2026-01-05 00:00 Asia/Shanghai (a Monday) = 2026-01-04 16:00 UTC
MONDAY = 1_767_542_400.0
TZ = "Asia/Shanghai"


def register(
    posts: list[dict[str, Any]] | None = None,
    *,
    units: list[dict[str, Any]] | None = None,
    **defaults: int,
) -> Config:
    """A small register: one site, a shop, a home (300 s heartbeat) and a guard post unit
    (and ``units`` besides)."""
    doc = registers.small(
        gateway_id="gw-test",
        site={
            "id": "school",
            "name": "Test Boarding School",
            "address": "1 School Road",
            "security_lead": {"name": "Lead Li", "phone": "+86 100"},
        },
        defaults={"heartbeat_s": 60, "missed_heartbeats": 3, "test_interval_h": 24, **defaults},
        links=[{"id": "bus", "port": "/dev/null", "baud": 115200}],
        units=[
            registers.unit(
                "shop", 10, site="school", link="bus", place="Shop at the gate", owner="Ms. Shop"
            ),
            registers.unit(
                "home",
                11,
                site="school",
                link="bus",
                role="home",
                place="Home by the wall",
                owner="Family",
                heartbeat_s=300,
            ),
            registers.unit(
                "guard",
                12,
                site="school",
                link="bus",
                pins=registers.GUARD_PINS,
                place="North gate post",
                owner="Post phone +86 200",
            ),
            *(units or []),
        ],
        posts=posts if posts is not None else [],
    )
    return parse_config(doc, "test-register.yaml")


def post(shifts: list[dict[str, str]], **kw: Any) -> dict[str, Any]:
    return {
        "id": "gate",
        "site": "school",
        "unit": "guard",
        "checkin_interval_min": 60,
        "grace_min": 5,
        "shifts": shifts,
        "escalation": [
            {"step": "prompt_guard", "after_min": 0},
            {"step": "security_lead", "after_min": 5},
            {"step": "police", "after_min": 10},
        ],
        **kw,
    }


open_db = open_journal  # the duty tests' name for it


class RecordingOutlet(JournalOutlet):
    """Records every call, and journals events into ``events`` like the pipeline does."""

    # a duty event's record, as the duty tests compare it whole: without a patrol's route
    kept = tuple(name for name in JournalOutlet.kept if name != "route")

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        super().__init__(conn)
        self.signals: list[tuple[str, SignalPattern, int]] = []
        self.retained: dict[str, dict[str, Any]] = {}  # topic -> the latest retained state
        self.retained_log: list[tuple[str, dict[str, Any]]] = []
        self.retained_by: list[tuple[str, str, float]] = []  # (site, topic, at) of each
        self.fail = False

    def event(self, **kw: Any) -> None:
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error (test)")
        super().event(**kw)

    def signal(self, unit: str, pattern: SignalPattern, duration_s: int) -> None:
        self.signals.append((unit, pattern, duration_s))

    def retain(self, *, site: str, topic: str, payload: Mapping[str, Any], at: float) -> None:
        self.retained[topic] = dict(payload)
        self.retained_log.append((topic, dict(payload)))
        self.retained_by.append((site, topic, at))

    def kinds(self, *, unit: str | None = None, post: str | None = None) -> list[str]:
        return [
            e["kind"]
            for e in self.events
            if (unit is None or e["unit"] == unit) and (post is None or e["post"] == post)
        ]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


class Frames:
    """Builds authentic-looking frames per unit with increasing counters."""

    def __init__(self) -> None:
        self.seq: dict[int, int] = {}

    def __call__(self, unit: Unit, body: Message) -> Frame:
        n = self.seq.get(unit.addr, 0) + 1
        self.seq[unit.addr] = n
        return Frame(unit.addr, 1, n, body)
