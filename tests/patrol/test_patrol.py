"""The patrol watch: rounds, out-of-order and missing checkpoints, windows without a round,
the ladder at exact times, acks, duress, and its state across a restart."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Config
from gateway.watch.patrol import RESTART_GRACE_S, PatrolWatch
from protocol.messages import Checkin, Heartbeat, HeartbeatFlags
from tests.duty.helpers import Frames
from tests.patrol.helpers import TERM_MONDAY, TZ, PatrolOutlet, open_journal, register, route

H = 3600.0
M = 60.0
MON = TERM_MONDAY  # Monday 7 September 2026, 00:00 in Shanghai


class Rig:
    def __init__(self, db: Path, config: Config | None = None, start: float = MON) -> None:
        self.config = config or register()
        self.conn = open_journal(db)
        self.outlet = PatrolOutlet(self.conn)
        self.clock = ManualClock(start)
        self.frames = Frames()
        self.watch = self.restart()

    def restart(self) -> PatrolWatch:
        self.watch = PatrolWatch(self.config, self.outlet, self.conn, self.clock, tz=TZ)
        return self.watch

    def at(self, t: float) -> None:
        """Run the clock to ``t``, ticking at every deadline on the way (exact times)."""
        while (d := self.watch.next_deadline()) is not None and d <= t:
            self.clock.set(max(d, self.clock.now()))
            self.watch.tick(self.clock.now())
        self.clock.set(t)
        self.watch.tick(t)

    def scan(self, cp: str, t: float, duress: bool = False) -> None:
        self.at(t)
        unit = self.config.units[cp]
        self.watch.on_frame(unit, self.frames(unit, Checkin(flags=int(duress), press_ms=0)), t)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.outlet.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.outlet.of(kind)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "gw.db")


def test_a_round_in_order_within_the_window_is_done(rig: Rig) -> None:
    rig.scan("cp-a", MON + 7 * H + 10 * M)
    rig.scan("cp-b", MON + 7 * H + 20 * M)
    rig.scan("cp-c", MON + 7 * H + 28 * M)
    rig.at(MON + 9 * H)
    assert rig.kinds() == [
        "patrol_window_open",
        "round_start",
        "patrol_scan",
        "patrol_scan",
        "patrol_scan",
        "round_complete",
        "patrol_window_close",
    ]
    assert [e["detail"]["status"] for e in rig.of("patrol_scan")] == ["in_order"] * 3
    done = rig.of("round_complete")[0]["detail"]
    assert done["minutes"] == 18.0 and done["late"] is False and done["out_of_order"] == 0
    assert done["in_window"] == "2026-09-07#0"
    close = rig.of("patrol_window_close")[0]
    assert close["at"] == MON + 8.5 * H and close["detail"]["outcome"] == "done"
    assert all(e["topic"] == "patrol" and e["route"] == "run" for e in rig.outlet.events)
    assert rig.outlet.retained["patrol/run/state"]["round"] is None


def test_a_window_without_a_round_escalates_at_exact_times(rig: Rig) -> None:
    rig.at(MON + 8 * H + 12 * M)
    missed = rig.of("round_missed")
    # latest start: 08:30 minus max_round_min 30 = 08:00
    assert [e["at"] for e in missed] == [MON + 8 * H]
    assert (missed[0]["code"], missed[0]["qualifier"]) == (102, 1)
    steps = rig.of("patrol_escalation")
    assert [(e["detail"]["step"], e["at"]) for e in steps] == [
        ("remind_leader", MON + 8 * H),
        ("security_lead", MON + 8 * H + 5 * M),
        ("police", MON + 8 * H + 10 * M),
    ]
    assert steps[0]["detail"]["leader"] == {"name": "Officer Liu", "phone": "+86 300"}
    assert steps[1]["detail"]["security_lead"] == {"name": "Lead Li", "phone": "+86 100"}
    assert "No patrol round on route run" in steps[2]["detail"]["action"]
    state = rig.outlet.retained["patrol/run/state"]
    assert (state["escalating"], state["rung"], state["step"]) == (True, 3, "police")
    # the patrol turns up: the first scan stops the ladder and starts a (late) round
    rig.scan("cp-a", MON + 8 * H + 13 * M)
    ack = rig.of("patrol_acknowledged")[0]
    assert (ack["code"], ack["qualifier"], ack["at"]) == (102, 3, MON + 8 * H + 13 * M)
    assert ack["detail"]["via"] == "scan" and ack["detail"]["minutes_since"] == 13.0
    assert ack["detail"]["steps_notified"] == ["remind_leader", "security_lead", "police"]
    rig.scan("cp-b", MON + 8 * H + 18 * M)
    rig.scan("cp-c", MON + 8 * H + 25 * M)
    rig.at(MON + 9 * H)
    assert rig.of("patrol_window_close")[0]["detail"]["outcome"] == "late"


def test_out_of_order_and_missing_checkpoints_are_flagged(rig: Rig) -> None:
    rig.scan("cp-b", MON + 7 * H)  # a round started elsewhere than the first checkpoint
    rig.scan("cp-a", MON + 7 * H + 5 * M)
    rig.scan("cp-a", MON + 7 * H + 6 * M)  # scanned again
    rig.at(MON + 7 * H + 25 * M)
    scans = [(e["detail"]["checkpoint"], e["detail"]["status"]) for e in rig.of("patrol_scan")]
    # expected is the first checkpoint of the route not yet scanned in this round
    assert scans == [("cp-b", "out_of_order"), ("cp-a", "in_order"), ("cp-a", "repeat")]
    assert rig.of("patrol_scan")[0]["detail"]["expected"] == "cp-a"
    # cp-c never comes: overdue 15 min after the last scan, the ladder starts there
    over = rig.of("round_overdue")
    assert [e["at"] for e in over] == [MON + 7 * H + 21 * M]
    assert over[0]["detail"]["missing"] == ["cp-c"] and over[0]["detail"]["expected"] == "cp-c"
    assert [e["at"] for e in rig.of("patrol_escalation")] == [MON + 7 * H + 21 * M]
    rig.at(MON + 9 * H)
    inc = rig.of("round_incomplete")
    assert [e["at"] for e in inc] == [MON + 7 * H + 30 * M]
    assert inc[0]["detail"]["missing"] == ["cp-c"] and inc[0]["detail"]["out_of_order"] == 1
    police = rig.of("patrol_escalation")[-1]
    assert police["detail"]["step"] == "police" and police["at"] == MON + 7 * H + 31 * M
    assert "last scanned" in police["detail"]["action"]
    assert rig.of("patrol_window_close")[0]["detail"]["outcome"] == "missed"


def test_an_any_order_route_takes_the_checkpoints_in_any_order(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "gw.db", register([route(order="any")]))
    for i, cp in enumerate(("cp-c", "cp-a", "cp-b")):
        rig.scan(cp, MON + 16 * H + i * 5 * M)
    assert [e["detail"]["status"] for e in rig.of("patrol_scan")] == ["in_order"] * 3
    assert rig.of("round_complete")[0]["detail"]["order"] == ["cp-c", "cp-a", "cp-b"]


def test_no_window_on_a_weekend_a_holiday_or_outside_term_but_on_a_makeup_day(
    tmp_path: Path,
) -> None:
    sat = MON + 5 * 86400.0
    rig = Rig(tmp_path / "gw.db", start=sat)
    rig.at(sat + 2 * 86400.0 - 1)  # the weekend of 12-13 September
    assert rig.kinds() == []
    # Sunday 27 September is a make-up school day: its windows are watched
    sun = MON + 20 * 86400.0
    rig.at(sun + 24 * H)
    opened = [e["detail"]["window"] for e in rig.of("patrol_window_open")]
    assert "2026-09-27#0" in opened and "2026-09-26#0" not in opened
    assert rig.of("patrol_window_open")[-1]["detail"]["day"] == "make-up school day"
    # 1-8 October is the National Day holiday: no window, no miss
    rig.at(MON + 32 * 86400.0)  # Friday 9 October 00:00
    days = {e["detail"]["window"][:10] for e in rig.of("patrol_window_open")}
    assert not any("2026-10-01" <= d <= "2026-10-08" for d in days)


def test_a_duty_room_ack_stops_the_ladder(rig: Rig) -> None:
    rig.at(MON + 8 * H + 2 * M)
    at = MON + 8 * H + 3 * M
    rig.watch.on_command(
        "campusguard/school/patrol/run/ack",
        json.dumps({"by": "Officer Wu", "at": "2026-09-07T00:03:00Z"}).encode(),
        at,
    )
    ack = rig.of("patrol_acknowledged")[0]
    assert ack["detail"]["by"] == "Officer Wu" and ack["detail"]["via"] == "patrol_ack"
    rig.at(MON + 8 * H + 30 * M)
    assert [e["detail"]["step"] for e in rig.of("patrol_escalation")] == ["remind_leader"]


def test_an_ack_signed_before_the_escalation_is_a_forgery(rig: Rig) -> None:
    rig.at(MON + 8 * H + 2 * M)
    rig.watch.on_command(
        "campusguard/school/patrol/run/ack",
        json.dumps({"by": "x", "at": "2026-09-06T23:00:00Z"}).encode(),  # 07:00 local
        MON + 8 * H + 3 * M,
    )
    assert rig.of("patrol_acknowledged") == [] and len(rig.of("forgery")) == 1


def test_a_duress_scan_counts_and_says_so(rig: Rig) -> None:
    rig.scan("cp-a", MON + 7 * H, duress=True)
    scan = rig.of("patrol_scan")[0]
    assert scan["detail"]["duress"] is True and scan["detail"]["status"] == "in_order"


def test_other_frames_and_units_are_not_scans(rig: Rig) -> None:
    shop = rig.config.units["shop"]
    rig.watch.on_frame(shop, rig.frames(shop, Checkin(flags=0, press_ms=0)), MON + 7 * H)
    cp = rig.config.units["cp-a"]
    hb = Heartbeat(battery_mv=3700, uptime_s=5, fw=0x101, flags=HeartbeatFlags(0))
    rig.watch.on_frame(cp, rig.frames(cp, hb), MON + 7 * H)
    assert rig.of("round_start") == []


def test_the_ladder_and_the_round_survive_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "gw.db")
    rig.scan("cp-a", MON + 7 * H)
    rig.at(MON + 7 * H + 16 * M)  # overdue at 07:15, first rung then
    assert len(rig.of("patrol_escalation")) == 1
    rig.conn.close()
    # the gateway is down from 07:16 to 07:40; it starts again at 07:40
    rig.conn = open_journal(tmp_path / "gw.db")
    rig.outlet.conn = rig.conn
    rig.clock.set(MON + 7 * H + 40 * M)
    rig.restart()
    rig.at(MON + 7 * H + 40 * M)
    steps = rig.of("patrol_escalation")
    # the rungs that fell due while it was down fire at once
    assert [(e["detail"]["step"], e["at"]) for e in steps] == [
        ("remind_leader", MON + 7 * H + 15 * M),
        ("security_lead", MON + 7 * H + 40 * M),
        ("police", MON + 7 * H + 40 * M),
    ]
    # the round's 30 minutes ran out while it was down: decided after the restart grace
    rig.at(MON + 7 * H + 41 * M)
    assert [e["at"] for e in rig.of("round_incomplete")] == [MON + 7 * H + 40 * M + RESTART_GRACE_S]


def test_a_window_that_passed_while_the_gateway_was_down_is_not_judged(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "gw.db", start=MON + 6 * H)
    rig.at(MON + 6 * H)
    rig.clock.set(MON + 12 * H)
    rig.restart()
    rig.at(MON + 12 * H)
    assert rig.of("patrol_window_open") == [] and rig.of("round_missed") == []
    rig.at(MON + 18 * H)
    assert [e["detail"]["outcome"] for e in rig.of("patrol_window_close")] == ["missed"]


def test_no_ladder_for_a_route_never_installed(tmp_path: Path) -> None:
    conn = open_journal(tmp_path / "gw.db")
    outlet = PatrolOutlet(conn)
    clock = ManualClock(MON)
    w = PatrolWatch(register(), outlet, conn, clock, tz=TZ, installed=lambda unit: False)
    for t in (MON + 8 * H, MON + 8 * H + 20 * M):
        clock.set(t)
        w.tick(t)
    assert [e["kind"] for e in outlet.events] == ["patrol_window_open", "round_missed"]
    assert outlet.events[1]["detail"]["escalating"] is False


def test_a_broken_stored_state_starts_afresh(tmp_path: Path) -> None:
    conn = open_journal(tmp_path / "gw.db")
    conn.execute(
        "CREATE TABLE patrol_state (route TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL)"
    )
    conn.execute("INSERT INTO patrol_state VALUES ('run', '{\"cursor\": ', 0)")
    w = PatrolWatch(register(), PatrolOutlet(conn), conn, ManualClock(MON), tz=TZ)
    assert w.state["run"].round is None and w.state["run"].cursor == MON
    stored = conn.execute("SELECT state FROM patrol_state").fetchone()[0]
    assert json.loads(stored)["cursor"] == MON
    assert isinstance(conn, sqlite3.Connection)
