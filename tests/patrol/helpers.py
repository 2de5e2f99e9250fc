"""Helpers for the patrol tests: a register with checkpoints, a route and a calendar;
a recording Outlet that journals patrol events as the pipeline does."""

from __future__ import annotations

from typing import Any

from gateway.core.config import Config, parse_config
from tests.duty.helpers import RecordingOutlet
from tests.support.outlet import JournalOutlet
from tests.support.outlet import open_journal as open_journal  # the patrol tests use it
from tests.support.register import CHECKPOINT_PINS, PINS

# 2026-09-07 00:00 Asia/Shanghai, a Monday of the autumn term = 2026-09-06 16:00 UTC
TERM_MONDAY = 1_788_710_400.0
TZ = "Asia/Shanghai"

CALENDAR: dict[str, Any] = {
    "school_days": "mon-fri",
    "terms": [{"name": "autumn", "start": "2026-09-01", "end": "2027-01-22"}],
    "holidays": [{"name": "National Day", "start": "2026-10-01", "end": "2026-10-08"}],
    "makeup_days": ["2026-09-27", "2026-10-10"],
}


def route(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "run",
        "site": "school",
        "leader": {"name": "Officer Liu", "phone": "+86 300"},
        "checkpoints": ["cp-a", "cp-b", "cp-c"],
        "order": "ordered",
        "days": "school",
        "windows": [{"start": "07:00", "end": "08:30"}, {"start": "16:00", "end": "17:45"}],
        "max_round_min": 30,
        "max_between_min": 15,
        "escalation": [
            {"step": "remind_leader", "after_min": 0},
            {"step": "security_lead", "after_min": 5},
            {"step": "police", "after_min": 10},
        ],
    }
    doc.update(kw)
    return doc


def register(
    patrols: list[dict[str, Any]] | None = None,
    calendar: dict[str, Any] | None = None,
    units: list[dict[str, Any]] | None = None,
) -> Config:
    """One site, a shop and three checkpoints; the route ``run`` unless told otherwise."""
    cps = [
        {
            "id": f"cp-{x}",
            "addr": 40 + i,
            "site": "school",
            "place": f"Checkpoint {x.upper()}",
            "owner": "Community patrol",
            "role": "checkpoint",
            "link": "bus",
            "pins": dict(CHECKPOINT_PINS),
        }
        for i, x in enumerate("abc")
    ]
    doc: dict[str, Any] = {
        "version": 1,
        "gateway": {"id": "gw-test", "site": "school", "timezone": TZ},
        "links": [{"id": "bus", "port": "/dev/null", "baud": 115200}],
        "sites": [
            {
                "id": "school",
                "name": "Test School",
                "address": "1 School Road",
                "security_lead": {"name": "Lead Li", "phone": "+86 100"},
            }
        ],
        "units": [
            {
                "id": "shop",
                "addr": 10,
                "site": "school",
                "place": "Shop at the gate",
                "owner": "Ms. Shop",
                "role": "shop",
                "link": "bus",
                "pins": dict(PINS),
            },
            *cps,
            *(units or []),
        ],
        "calendar": CALENDAR if calendar is None else calendar,
        "patrols": [route()] if patrols is None else patrols,
    }
    return parse_config(doc, "test-register.yaml")


class PatrolOutlet(RecordingOutlet):
    """The duty tests' recording Outlet, whose records keep a patrol event's ``route``."""

    kept = JournalOutlet.kept
