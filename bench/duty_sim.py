#!/usr/bin/env python3
"""A simulated month of a boarding school, through the real Supervisor and DutyWatch.

Every unit of boards.yaml heartbeats and self-tests for a whole month; some go silent for
a while, one runs its battery low, cases are opened, mains fail, alarms are pressed and
acknowledged by the police; the north-gate guard checks in around the clock, now and then
late, sometimes not at all (then the ladder runs: the prompt, the security lead, the
police). The gateway even restarts once mid-shift. Frames go through the real watchers
into a real SQLite journal (a small Outlet writes the ``events`` rows the way the
pipeline's store does; alarms go into ``incidents`` as the pipeline writes them), then
``campusguard report`` reads it back.

The simulator keeps its own tally of what it did (the truth) and checks the report's
figures against it. It prints figures (``--json``: one JSON object); ``--report md`` also
prints the monthly report, ``--keep PATH`` keeps the journal for ``campusguard report``.

    .venv/bin/python bench/duty_sim.py --report md --db /tmp/month.db
    .venv/bin/campusguard report --month 2026-01 --db /tmp/month.db --tz Asia/Shanghai \
        --config boards.yaml
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.clock import ManualClock
from gateway.core.config import Config, Unit, load_config
from gateway.dutyroom.report import month_window, monthly, per_site, render
from gateway.watch.duty import DutyWatch
from gateway.watch.shifts import zone
from gateway.watch.supervision import Supervisor
from protocol.messages import (
    Checkin,
    Fault,
    FaultCode,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Message,
    Test,
    TestKind,
)
from tests.support.outlet import JournalOutlet, open_journal

ROOT = Path(__file__).resolve().parents[1]
M = 60.0
H = 3600.0
D = 86400.0


@dataclass
class Truth:
    """What the simulation did, tallied independently of the watchers."""

    on_time: int = 0
    late: int = 0
    missed: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    acked_by_checkin: int = 0
    acked_by_duty: int = 0
    duress: int = 0
    offline_s: dict[str, float] = field(default_factory=dict)
    offline_n: Counter[str] = field(default_factory=Counter)
    tests: Counter[str] = field(default_factory=Counter)
    began: dict[str, Counter[str]] = field(default_factory=dict)
    alarms: Counter[str] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)
    cancelled: int = 0
    false_alarms: int = 0


class MonthSim:
    """One month of one site on the demo register."""

    def __init__(self, config: Config, db: Path, month: str, tz: str, seed: int) -> None:
        self.config = config
        self.db = db
        self.tzname = tz
        self.tz = zone(tz)
        w = month_window(month, self.tz)
        self.start, self.end = w.start, w.end
        self.rng = random.Random(seed)
        self.truth = Truth()
        self.queue: list[tuple[float, int, Callable[[float], None]]] = []
        self.n = 0
        self.seq: dict[int, int] = {}
        self.frames = 0
        self.conn = open_journal(db)
        self.outlet = JournalOutlet(self.conn)
        self._watchers(self.start)
        self.post = next(iter(config.posts.values()))
        self.guard_unit = config.units[self.post.unit]
        # what happens to which unit, as day offsets (local days from the month's start)
        u = list(config.units)
        self.outages: dict[str, list[tuple[float, float]]] = {
            u[0]: [(self.at(2, 10), self.at(2, 13))],  # shop-fruit: 3 h off the bus
            u[3]: [(self.at(17, 18), self.at(17, 23.5))],  # home-zhao: radio fade
            u[6]: [(self.at(9, 14), self.at(9, 14) + 100)],  # dorm-b: too short to matter
            u[1]: [(self.at(27, 23), self.end + D)],  # shop-stationery: dead at month end
        }
        self.low_battery = {u[4]: [(self.at(9, 9), self.at(11, 16))]}  # home-sun
        self.tamper = {
            u[2]: [(self.at(14, 14), self.at(14, 14.35))],  # shop-noodles, FAULT frames too
            u[6]: [(self.at(21, 3.2), self.at(21, 3.25))],  # dorm-b, heartbeat flags only
        }
        self.mains = {self.guard_unit.id: [(self.at(4, 2), self.at(4, 4))]}
        self.failed_test = {(u[3], 6)}  # home-zhao's test on day 6 fails (battery bit)
        self.restart_at = self.at(19, 10.28)
        self.down = (self.restart_at, self.restart_at + 40.0)
        # guard behaviour: (day, hour) -> what happens to the next check-in after then
        self.guard_plan: dict[float, str | float | None] = {
            self.at(3, 2): "late",
            self.at(6, 3): 90.0,  # missed; checks in 90 s after the prompt
            self.at(8, 14): "late",
            self.at(12, 4): 420.0,  # missed; answers after the security lead was told
            self.at(15, 23): None,  # missed; nobody answers: police, then the duty ack
            self.at(22, 13): "late",
            self.at(24, 12): "duress",
            self.at(26, 1): 200.0,
            self.at(29, 20): None,
        }

    # -- plumbing ------------------------------------------------------------------------

    def at(self, day: float, hour: float) -> float:
        """UTC seconds of local hour ``hour`` on day ``day`` (0 = the 1st) of the month."""
        return self.start + day * D + hour * H

    def _watchers(self, t: float) -> None:
        clock = ManualClock(t)
        self.sup = Supervisor(self.config, self.outlet, self.conn, clock)
        self.duty = DutyWatch(self.config, self.outlet, self.conn, clock, tz=self.tz)

    def schedule(self, t: float, fn: Callable[[float], None]) -> None:
        self.n += 1
        heapq.heappush(self.queue, (t, self.n, fn))

    def send(self, unit: Unit, body: Message, t: float) -> None:
        if self.down[0] <= t < self.down[1]:
            # the gateway is restarting: a check-in is retried by the unit until it is
            # acknowledged, so it arrives when the gateway is back; other frames are lost
            if isinstance(body, Checkin):
                self.schedule(self.down[1], lambda t2: self.send(unit, body, t2))
            return
        n = self.seq.get(unit.addr, 0) + 1
        self.seq[unit.addr] = n
        frame = Frame(unit.addr, 1, n, body)
        self.frames += 1
        self.sup.on_frame(unit, frame, t)
        self.duty.on_frame(unit, frame, t)

    def tick(self, t: float) -> None:
        self.sup.tick(t)
        self.duty.tick(t)

    @staticmethod
    def inside(windows: list[tuple[float, float]], t: float) -> bool:
        return any(a <= t < b for a, b in windows)

    def silent(self, unit: Unit, t: float) -> bool:
        return self.inside(self.outages.get(unit.id, []), t)

    # -- units ---------------------------------------------------------------------------

    def flags(self, unit: Unit, t: float) -> HeartbeatFlags:
        f = HeartbeatFlags(0)
        if self.inside(self.low_battery.get(unit.id, []), t):
            f |= HeartbeatFlags.LOW_BATTERY
        if self.inside(self.tamper.get(unit.id, []), t):
            f |= HeartbeatFlags.TAMPER
        if self.inside(self.mains.get(unit.id, []), t):
            f |= HeartbeatFlags.MAINS_LOST
        return f

    def heartbeat(self, unit: Unit) -> Callable[[float], None]:
        def beat(t: float) -> None:
            if not self.silent(unit, t):
                mv = 3350 if self.inside(self.low_battery.get(unit.id, []), t) else 3950
                self.send(unit, Heartbeat(mv, int(t - self.start), 0x0102, self.flags(unit, t)), t)
            if t + unit.heartbeat_s < self.end:
                self.schedule(t + unit.heartbeat_s, beat)

        return beat

    def test(self, unit: Unit, day: int) -> Callable[[float], None]:
        def run(t: float) -> None:
            if self.silent(unit, t):
                return
            result = 1 if (unit.id, day) in self.failed_test else 0
            self.send(unit, Test(TestKind.PERIODIC, result, 3900), t)

        return run

    def fault(self, unit: Unit, code: FaultCode, active: int) -> Callable[[float], None]:
        return lambda t: self.send(unit, Fault(code, active, 0), t)

    # -- the guard -----------------------------------------------------------------------

    def guard_checkin(self, t: float, duress: bool = False) -> None:
        self.send(self.guard_unit, Checkin(1 if duress else 0, 3000 if duress else 300), t)
        if duress:  # the pipeline makes this a silent duress incident; the police answer
            self.incident(self.guard_unit, t, "duress", 36.7, False, "genuine")

    def guard(self, clock: float) -> None:
        """Plan the guard's next check-in after the clock (re)started at ``clock``."""
        interval = self.post.checkin_interval_min * M
        grace = self.post.grace_min * M
        due = clock + interval
        if due >= self.end:
            return
        plan_at = next((p for p in sorted(self.guard_plan) if clock <= p < due), None)
        what = self.guard_plan.pop(plan_at) if plan_at is not None else "normal"
        if what in ("normal", "duress"):
            c = clock + self.rng.uniform(40 * M, 58 * M)
            self.truth.on_time += 1
            self.truth.duress += what == "duress"

            def checkin(t: float, duress: bool = what == "duress") -> None:
                self.guard_checkin(t, duress)
                self.guard(t)

            self.schedule(c, checkin)
        elif what == "late":
            c = due + self.rng.uniform(30, grace - 30)
            self.truth.late += 1

            def late(t: float) -> None:
                self.guard_checkin(t)
                self.guard(t)

            self.schedule(c, late)
        else:
            missed = due + grace
            self.truth.missed += 1
            delay = what if isinstance(what, float) else 13 * M
            for step in self.post.escalation:
                if step.after_min * M < delay or step.after_min == 0:
                    self.truth.steps[step.step] += 1
            if isinstance(what, float):
                self.truth.acked_by_checkin += 1

                def answer(t: float) -> None:
                    self.guard_checkin(t)
                    self.guard(t)

                self.schedule(missed + delay, answer)
            else:
                self.truth.acked_by_duty += 1

                def duty_ack(t: float) -> None:
                    topic = f"campusguard/{self.post.site}/duty/{self.post.id}/ack"
                    self.duty.on_command(topic, b'{"by": "Zhang Wei (security lead)"}', t)
                    self.guard(t)

                self.schedule(missed + delay, duty_ack)

    # -- alarms (the pipeline's incidents rows) ---------------------------------------------

    def alarms(self) -> None:
        units = list(self.config.units.values())
        plan = [
            # day, hour, unit index, kind, seconds to police ack (None: none), cancel, disposition
            (1, 7.6, 0, "panic", 38.2, False, "genuine"),
            (3, 16.1, 1, "panic", 41.0, True, "false_alarm"),
            (5, 12.5, 3, "medical", 55.4, False, "genuine"),
            (8, 21.3, 4, "panic", 33.9, False, "false_alarm"),
            (11, 8.2, 2, "silent", 47.5, False, "genuine"),
            (13, 15.0, 6, "panic", 29.1, True, "false_alarm"),
            (16, 10.0, 0, "panic", 62.0, False, "test"),
            (20, 19.9, 3, "fire", 44.4, False, "genuine"),
            (27, 6.5, 4, "panic", None, True, None),
        ]
        for day, hour, ui, kind, ack, cancel, disposition in plan:
            self.incident(units[ui], self.at(day, hour), kind, ack, cancel, disposition)

    def incident(
        self,
        unit: Unit,
        t: float,
        kind: str,
        ack: float | None,
        cancel: bool,
        disposition: str | None,
    ) -> None:
        """One alarm as the pipeline journals it, with the police acknowledgement."""
        day = int((t - self.start) // D)
        iid = f"{self.config.gateway_id}-{unit.id}-1-{int(t)}"
        self.conn.execute(
            "INSERT INTO incidents(id, site, unit, place, kind, first_press_at, received_at, "
            "relayed_at, presses, state, cancelled_at, police_ack_at, police_ack_by, "
            "disposition, last_epoch, last_seq, closed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?)",
            (
                iid,
                unit.site,
                unit.id,
                unit.place,
                kind,
                t,
                t + 0.05,
                t + 0.12,
                1 + (day % 3),
                "police_ack" if ack is not None else "cancelled",
                t + 12.0 if cancel else None,
                None if ack is None else t + ack,
                None if ack is None else "duty officer Liu",
                disposition,
                None if ack is None else t + ack + 600,
            ),
        )
        self.truth.alarms[kind] += 1
        self.truth.cancelled += cancel
        self.truth.false_alarms += disposition == "false_alarm"
        if ack is not None:
            self.truth.ack_times.append(ack)

    # -- truth for supervision -------------------------------------------------------------

    def supervision_truth(self) -> None:
        for unit in self.config.units.values():
            began: Counter[str] = Counter()
            hb = unit.heartbeat_s
            window = (unit.missed_heartbeats + 0.5) * hb
            phase = self.phase[unit.id]
            beats = [
                self.start + phase + k * hb for k in range(int((self.end - self.start) // hb) + 1)
            ]
            beats = [b for b in beats if b < self.end]
            total = 0.0
            for a, b in self.outages.get(unit.id, []):
                last = max(x for x in beats if x < a)
                if b - last <= window:
                    continue  # shorter than the supervision window: not offline
                off = last + window
                back = [x for x in beats if x >= b]
                restore = back[1] if len(back) > 1 else self.end
                total += min(restore, self.end) - off
                self.truth.offline_n[unit.id] += 1
            self.truth.offline_s[unit.id] = total
            if self.low_battery.get(unit.id):
                began["low_battery"] += len(self.low_battery[unit.id])
            if self.tamper.get(unit.id):
                began["tamper"] += len(self.tamper[unit.id])
            if self.mains.get(unit.id):
                began["mains_lost"] += len(self.mains[unit.id])
            began["test_failed"] = sum(1 for uid, _ in self.failed_test if uid == unit.id)
            self.truth.began[unit.id] = began

    # -- run -------------------------------------------------------------------------------

    def run(self) -> Truth:
        self.phase: dict[str, float] = {}
        for i, unit in enumerate(self.config.units.values()):
            self.phase[unit.id] = 7.0 + 3.0 * i
            self.schedule(self.start + self.phase[unit.id], self.heartbeat(unit))
            for day in range(32):
                t = self.at(day, 3) + 60 * i + 11
                if t < self.end:
                    self.schedule(t, self.test(unit, day))
                    if not self.silent(unit, t):
                        self.truth.tests[unit.id] += 1
            for a, b in self.tamper.get(unit.id, []):
                if unit.id == list(self.config.units)[2]:
                    self.schedule(a + 1, self.fault(unit, FaultCode.TAMPER, 1))
                    self.schedule(b + 1, self.fault(unit, FaultCode.TAMPER, 0))
            for a, b in self.mains.get(unit.id, []):
                self.schedule(a + 2, self.fault(unit, FaultCode.MAINS_LOST, 1))
                self.schedule(b + 2, self.fault(unit, FaultCode.MAINS_LOST, 0))
        self.schedule(self.restart_at, self.restart)
        self.tick(self.start)
        self.guard(self.start)
        self.alarms()
        self.supervision_truth()
        while self.queue:
            t = self.queue[0][0]
            nd = [x for x in (self.sup.next_deadline(), self.duty.next_deadline()) if x is not None]
            if nd and min(nd) < t and min(nd) < self.end:
                self.tick(min(nd))
                continue
            t, _, fn = heapq.heappop(self.queue)
            fn(t)
        self.tick(self.end - 1e-3)
        return self.truth

    def restart(self, t: float) -> None:
        """The gateway stops; it is back with a new connection and new watchers 40 s later."""
        self.conn.close()

        def back(t2: float) -> None:
            self.conn = open_journal(self.db)
            self.outlet.conn = self.conn
            self._watchers(t2)

        self.schedule(self.down[1], back)


def check(report: dict[str, Any], sim: MonthSim) -> list[str]:
    """Differences between the report and the simulation's own tally (empty: all agree)."""
    truth = sim.truth
    site = per_site(report)[sim.config.site]
    bad: list[str] = []

    def same(what: str, got: Any, want: Any) -> None:
        if got != want:
            bad.append(f"{what}: report {got!r}, simulation {want!r}")

    duty = site["duty"][0]
    same("on time", duty["on_time"], truth.on_time)
    same("late", duty["late"], truth.late)
    same("missed", duty["missed"], truth.missed)
    same("due", duty["due"], truth.on_time + truth.late + truth.missed)
    same("steps", duty["by_step"], {s: truth.steps.get(s, 0) for s in duty["by_step"]})
    same("acked by check-in", duty["acknowledged_by_checkin"], truth.acked_by_checkin)
    same("acked by duty", duty["acknowledged_by_duty"], truth.acked_by_duty)
    same("duress", duty["duress_checkins"], truth.duress)
    a = site["alarms"]
    same("alarms", a["by_kind"], dict(sorted(truth.alarms.items())))
    same("ack median", a["ack_median_s"], round(statistics.median(truth.ack_times), 3))
    same("ack worst", a["ack_worst_s"], round(max(truth.ack_times), 3))
    same("cancelled", a["cancelled"], truth.cancelled)
    same("false alarms", a["false_alarms"], truth.false_alarms)
    for u in site["units"]:
        uid = u["unit"]
        same(f"{uid} offline s", u["offline_s"], round(truth.offline_s[uid], 3))
        same(f"{uid} offline n", u["offline"], truth.offline_n[uid])
        same(f"{uid} tests", u["tests"], truth.tests[uid])
        for k in ("low_battery", "tamper", "mains_lost", "test_failed"):
            same(f"{uid} {k}", u[k], truth.began[uid][k])
        same(f"{uid} test_missing", u["test_missing"], 0)
        span = sim.end - sim.start
        same(f"{uid} availability", u["availability"], round(1 - truth.offline_s[uid] / span, 6))
    return bad


def simulate(
    db: Path, month: str = "2026-01", tz: str = "Asia/Shanghai", seed: int = 7
) -> tuple[MonthSim, dict[str, Any]]:
    """Run the month into ``db`` and make its monthly report (as data)."""
    config = load_config(ROOT / "boards.yaml")
    sim = MonthSim(config, db, month, tz, seed)
    sim.run()
    sim.conn.close()
    conn = sqlite3.connect(db)
    try:
        report = monthly(conn, month, sim.tz, config=config, now=sim.end + D)
    finally:
        conn.close()
    return sim, report


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", help="journal to write (default: a temporary file)")
    ap.add_argument("--month", default="2026-01")
    ap.add_argument("--tz", default="Asia/Shanghai")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--report", choices=("md", "csv", "json"), help="also print the report")
    ap.add_argument("--json", action="store_true", help="figures as one JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "month.db"
        if db.exists():
            print(f"{db} exists: give a new path", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        sim, report = simulate(db, args.month, args.tz, args.seed)
        elapsed = time.perf_counter() - t0
        bad = check(report, sim)
        figures = {
            "month": args.month,
            "simulated_days": round((sim.end - sim.start) / D, 2),
            "frames": sim.frames,
            "events": len(sim.outlet.events),
            "checkins_due": report["sites"][0]["duty"][0]["due"],
            "missed": report["sites"][0]["duty"][0]["missed"],
            "wall_s": round(elapsed, 2),
            "report_matches_simulation": not bad,
        }
        if args.report:
            sys.stdout.write(render(report, args.report))
        if args.json:
            print(json.dumps(figures))
        elif not args.report:
            for k, v in figures.items():
                print(f"{k:>28}: {v}")
        for line in bad:
            print("MISMATCH " + line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
