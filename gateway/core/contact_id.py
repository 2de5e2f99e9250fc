"""The event vocabulary: each ``events.kind`` with its Ademco Contact ID code and text.

Contact ID (SIA DC-05) reports an event as a three-digit code and a qualifier: ``1`` a new
event or the start of a condition, ``3`` its restore. The gateway stores both in the
``events`` table (columns ``code`` and ``qualifier``) beside its own readable ``kind``, so
a duty-room receiver that speaks only Contact ID and a person reading the journal see the
same thing. gateway/README.md ("Supervision, guard duty and reports") documents the table below.
"""

from __future__ import annotations

from dataclasses import dataclass

NEW = 1
"""Contact ID qualifier: a new event, or a condition began."""
RESTORE = 3
"""Contact ID qualifier: the condition ended (restore)."""


@dataclass(frozen=True, slots=True)
class Kind:
    """One event kind: its Contact ID code (None: no code of its own) and meaning."""

    kind: str
    code: int | None
    text: str
    restorable: bool
    source: str


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        # unit supervision (gateway/watch/supervision.py)
        Kind("offline", 381, "unit silent: supervision lost", False, "supervision"),
        Kind("online", 381, "unit heard again: supervision restored", False, "supervision"),
        Kind("low_battery", 302, "low system battery", True, "supervision"),
        Kind("mains_lost", 301, "AC (mains) power lost", True, "supervision"),
        Kind("tamper", 383, "sensor tamper: unit case opened", True, "supervision"),
        Kind("button_stuck", 380, "sensor trouble: alarm button stuck", True, "supervision"),
        Kind("safe_mode", 300, "system trouble: firmware in safe mode", True, "supervision"),
        Kind("storage_fault", 300, "system trouble: unit storage failing", True, "supervision"),
        Kind("watchdog_reset", 305, "system reset by the unit's watchdog", False, "supervision"),
        Kind("link_lost", 350, "communication trouble reported by the unit", True, "supervision"),
        Kind("test", 602, "periodic test report (601 manual test)", False, "supervision"),
        Kind("test_failed", 307, "self-test failure", True, "supervision"),
        Kind("test_missing", 354, "periodic test report missing", True, "supervision"),
        Kind(
            "not_installed",
            None,
            "registered unit never heard: not installed",
            False,
            "supervision",
        ),
        # guard duty (gateway/watch/duty.py), published on the duty topic
        Kind("shift_start", None, "guard post duty period begins", False, "duty"),
        Kind("shift_end", None, "guard post duty period ends", False, "duty"),
        Kind("checkin", None, "guard checked in (on time or late)", False, "duty"),
        Kind("missed_checkin", 102, "fail to report in: guard check-in missed", False, "duty"),
        Kind("escalation", None, "a rung of the escalation ladder was notified", False, "duty"),
        Kind("acknowledged", 102, "missed check-in acknowledged (restore)", False, "duty"),
        # patrols (gateway/watch/patrol.py), published on the patrol topic
        Kind("patrol_window_open", None, "patrol window begins", False, "patrol"),
        Kind(
            "patrol_window_close",
            None,
            "patrol window ends: done, late, missed",
            False,
            "patrol",
        ),
        Kind("round_start", None, "patrol round started (first scan)", False, "patrol"),
        Kind("patrol_scan", None, "patrol checkpoint scanned", False, "patrol"),
        Kind("round_complete", None, "patrol round complete", False, "patrol"),
        Kind("round_incomplete", None, "patrol round ran out of time", False, "patrol"),
        Kind("round_missed", 102, "fail to report in: no patrol round", False, "patrol"),
        Kind("round_overdue", 102, "fail to report in: next checkpoint overdue", False, "patrol"),
        Kind("patrol_escalation", None, "a rung of the patrol ladder notified", False, "patrol"),
        Kind("patrol_acknowledged", 102, "patrol escalation acknowledged", False, "patrol"),
        # emitted by the pipeline (listed so that reports and docs name them)
        Kind("link_down", 350, "communication trouble: serial link down", False, "pipeline"),
        Kind("link_up", 350, "serial link restored", False, "pipeline"),
        Kind("button_chatter", 380, "sensor trouble: button chatter", False, "pipeline"),
        Kind("cancel", 406, "cancel: the unit cancelled its alarm", False, "pipeline"),
        Kind("forgery", 461, "wrong code: forged or replayed frames", False, "pipeline"),
        Kind(
            "ack_conflict",
            None,
            "two duty rooms acknowledged one incident differently: the first stands",
            False,
            "pipeline",
        ),
        Kind("test_mode", 607, "test (maintenance) mode of a unit or a site", True, "gateway"),
        # a watcher that keeps raising (gateway/service/watchers.py)
        Kind(
            "watcher_failed",
            300,
            "system trouble: a gateway watcher keeps failing",
            True,
            "gateway",
        ),
        # the gateway's own life (gateway/service/lifecycle.py): its downtime in the report
        Kind(
            "gateway_start",
            None,
            "gateway started (down_s: how long it was away)",
            False,
            "gateway",
        ),
        Kind("gateway_stop", None, "gateway stopped cleanly", False, "gateway"),
        Kind("broker_lost", None, "gateway lost the MQTT broker", False, "gateway"),
        Kind("broker_back", None, "gateway reached the MQTT broker again", False, "gateway"),
        # the gateway's own clock (gateway/watch/clockwatch.py)
        Kind("clock_unsynced", 626, "time/date inaccurate: gateway clock", True, "gateway"),
        # the alarm receiving centre's paths (gateway/arc/transmitter.py): 351 primary, 352 backup
        Kind("arc_path", 351, "receiving centre path lost (3: restored; 352 backup)", False, "arc"),
        Kind("arc_rejected", 354, "receiving centre refused a message (DUH)", False, "arc"),
        # people reached by SMS (gateway/notify/): nobody on a ladder got the message
        Kind("sms_failed", None, "SMS reached nobody on the ladder", False, "notify"),
    )
}

CONDITIONS: tuple[str, ...] = tuple(k.kind for k in KINDS.values() if k.restorable)
"""Kinds that are conditions: one event with qualifier 1 when they begin, 3 when they end."""

MANUAL_TEST_CODE = 601
"""Contact ID code of a manual (user-started) test; a periodic test is 602."""


def code_of(kind: str) -> int | None:
    """The Contact ID code for ``kind`` (None for gateway-only kinds); KeyError if unknown."""
    return KINDS[kind].code


def describe(kind: str) -> str:
    """A short English text for ``kind`` (the kind itself when it is not in the table)."""
    k = KINDS.get(kind)
    return k.text if k is not None else kind
