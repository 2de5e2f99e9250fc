"""A school term of patrols through the real patrol watch into a real journal, in seconds.

The register is boards.yaml (route ``school-run``: two checkpoints, 07:00-08:30 and
16:00-17:45 on school days by its calendar: the autumn term, the National Day holiday,
two make-up days). For every window a seeded patrol does one thing: a round in order, a
round out of order, a round started late, a round that never reaches its second
checkpoint, a round too slow, or no round at all; now and then a scan is a duress press.
The clock is a manual one, stepped to every deadline the watch names, so every
escalation happens at its exact time; the simulation keeps its own tally of what must
happen (window outcomes, rungs and their times) and checks the journal's events and the
monthly report against it.

    .venv/bin/python bench/patrol_sim.py [--from 2026-09-01] [--to 2027-01-22] [--seed 3]
        [--json] [--report md --month 2026-10 --db PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.clock import ManualClock
from gateway.core.config import Config, Patrol, load_config
from gateway.dutyroom.report import monthly, per_site, render
from gateway.watch.calendar import SchoolCalendar, slots
from gateway.watch.patrol import PatrolWatch
from gateway.watch.shifts import zone
from protocol.messages import Checkin, Frame
from tests.support.outlet import JournalOutlet, open_journal

ROOT = Path(__file__).resolve().parents[1]
M = 60.0
BEHAVIOURS = ("in_order", "out_of_order", "late_start", "stalled", "just_late", "none")
WEIGHTS = (70, 8, 7, 5, 4, 6)


@dataclass
class Truth:
    """What must happen, by the simulation's own reckoning."""

    outcomes: Counter[str] = field(default_factory=Counter)
    by_month: dict[str, Counter[str]] = field(default_factory=dict)
    rungs: list[tuple[str, float]] = field(default_factory=list)  # (step, exact time)
    missed: list[float] = field(default_factory=list)  # round_missed times
    overdue: list[float] = field(default_factory=list)
    duress: int = 0
    behaviours: Counter[str] = field(default_factory=Counter)


@dataclass
class Sim:
    config: Config
    route: Patrol
    truth: Truth
    outlet: JournalOutlet
    conn: sqlite3.Connection
    windows: int = 0
    scans: int = 0


def _ladder(route: Patrol, since: float, until: float | None) -> list[tuple[str, float]]:
    """The rungs that fire from ``since`` until an answer at ``until`` (None: never)."""
    out = []
    for step in route.escalation:
        t = since + step.after_min * 60
        if until is None or t < until:
            out.append((step.step, t))
    return out


def simulate(db: Path, first: date, last: date, seed: int) -> Sim:
    """Walk the route's windows from ``first`` to ``last`` (local days, both included)."""
    config = load_config(ROOT / "boards.yaml")
    route = config.patrols["school-run"]
    tz = zone(config.timezone)
    cal = SchoolCalendar(config.calendar)
    rnd = random.Random(seed)
    conn = open_journal(db)
    outlet = JournalOutlet(conn)
    start = slots(route, cal, tz, first)
    first_slot = next(start)
    clock = ManualClock(first_slot.start - 3600)
    watch = PatrolWatch(config, outlet, conn, clock, tz=tz, installed=lambda unit: True)
    sim = Sim(config, route, Truth(), outlet, conn)
    truth = sim.truth
    cps = list(route.checkpoints)
    max_round, between = route.max_round_min * M, route.max_between_min * M
    plan: list[tuple[float, str, bool]] = []  # (time, checkpoint, duress)
    for s in slots(route, cal, tz, first):
        if s.day > last:
            break
        sim.windows += 1
        month = s.day.strftime("%Y-%m")
        latest = max(s.start, s.end - max_round)
        what = rnd.choices(BEHAVIOURS, WEIGHTS)[0]
        truth.behaviours[what] += 1
        duress = rnd.random() < 0.02
        t0 = s.start + rnd.uniform(0, latest - s.start - 60)
        gap = rnd.uniform(3, 12) * M
        outcome = "done"
        if what in ("in_order", "out_of_order"):
            order = cps if what == "in_order" else cps[::-1]
            plan += [(t0, order[0], duress), (t0 + gap, order[1], False)]
        elif what == "late_start":
            t0 = latest + rnd.uniform(1, 15) * M
            plan += [(t0, cps[0], duress), (t0 + gap, cps[1], False)]
            truth.missed.append(latest)
            truth.rungs += _ladder(route, latest, t0)
            outcome = "late"
        elif what == "just_late":
            # 30 s after the latest start: only the first rung (after_min 0) is notified
            t0 = latest + 30
            plan += [(t0, cps[0], duress), (t0 + between - 60, cps[1], False)]
            truth.missed.append(latest)
            truth.rungs += _ladder(route, latest, t0)
            outcome = "late"
        elif what == "stalled":
            plan.append((t0, cps[0], duress))
            over = t0 + between
            truth.overdue.append(over)
            # nothing answers before the next window's first scan: the whole ladder
            truth.rungs += _ladder(route, over, None)
            outcome = "missed"
        else:  # no round at all: missed at the latest start, the whole ladder
            truth.missed.append(latest)
            truth.rungs += _ladder(route, latest, None)
            outcome = "missed"
        truth.duress += duress
        truth.outcomes[outcome] += 1
        truth.by_month.setdefault(month, Counter())[outcome] += 1

    def run_to(t: float) -> None:
        while (d := watch.next_deadline()) is not None and d <= t:
            clock.set(max(d, clock.now()))
            watch.tick(clock.now())
        clock.set(max(t, clock.now()))

    seq = 0
    for at, cp, duress in sorted(plan):
        run_to(at - 1e-6)
        clock.set(at)
        unit = config.units[cp]
        seq += 1
        frame = Frame(unit.addr, 1, seq, Checkin(flags=int(duress), press_ms=0))
        watch.on_frame(unit, frame, at)
        watch.tick(at)
        sim.scans += 1
    run_to(datetime.combine(last + timedelta(days=1), dtime(0), tzinfo=tz).timestamp())
    return sim


def check(sim: Sim) -> list[str]:
    """Every difference between the journal and the simulation's own tally."""
    bad: list[str] = []
    ev = sim.outlet.events
    t = sim.truth
    got = Counter(e["detail"]["outcome"] for e in ev if e["kind"] == "patrol_window_close")
    if got != t.outcomes:
        bad.append(f"outcomes: journal {dict(got)}, simulation {dict(t.outcomes)}")
    rungs = sorted((e["detail"]["step"], e["at"]) for e in ev if e["kind"] == "patrol_escalation")
    if rungs != sorted(t.rungs):
        extra = sorted(set(rungs) - set(t.rungs))[:3]
        lacking = sorted(set(t.rungs) - set(rungs))[:3]
        bad.append(f"rungs: {len(rungs)} journalled, {len(t.rungs)} expected; {extra} {lacking}")
    missed = sorted(e["at"] for e in ev if e["kind"] == "round_missed")
    if missed != sorted(t.missed):
        bad.append(f"round_missed times differ: {len(missed)} vs {len(t.missed)}")
    overdue = sorted(e["at"] for e in ev if e["kind"] == "round_overdue")
    if overdue != sorted(t.overdue):
        bad.append(f"round_overdue times differ: {len(overdue)} vs {len(t.overdue)}")
    duress = sum(1 for e in ev if e["kind"] == "patrol_scan" and e["detail"].get("duress"))
    if duress != t.duress:
        bad.append(f"duress scans: journal {duress}, simulation {t.duress}")
    return bad


def check_report(sim: Sim, month: str, report: Mapping[str, Any]) -> list[str]:
    """The monthly report's patrol figures against the simulation's tally for ``month``."""
    row = per_site(report)["hexi-primary"]["patrol"][0]
    want = sim.truth.by_month.get(month, Counter())
    got = {k: row[k] for k in ("done", "late", "missed")}
    exp = {k: want.get(k, 0) for k in ("done", "late", "missed")}
    out = [] if got == exp else [f"report {month}: {got}, simulation {exp}"]
    if row["due"] != sum(want.values()):
        out.append(f"report {month}: due {row['due']}, simulation {sum(want.values())}")
    return out


def figures(sim: Sim) -> dict[str, Any]:
    """The closing note's figures: rounds, misses, escalation times."""
    ev = sim.outlet.events
    kinds = Counter(e["kind"] for e in ev)
    steps = Counter(e["detail"]["step"] for e in ev if e["kind"] == "patrol_escalation")
    # minutes from the raise (round_missed / round_overdue) to each rung, as journalled
    delays: dict[str, list[float]] = {}
    since: float | None = None
    for e in sorted(ev, key=lambda e: e["at"]):
        if e["kind"] in ("round_missed", "round_overdue") and e["detail"].get("escalating"):
            since = e["at"]
        elif e["kind"] == "patrol_escalation" and since is not None:
            delays.setdefault(e["detail"]["step"], []).append(round((e["at"] - since) / 60, 3))
    return {
        "windows": sim.windows,
        "scans": sim.scans,
        "rounds": kinds["round_start"],
        "rounds_complete": kinds["round_complete"],
        "rounds_incomplete": kinds["round_incomplete"],
        "outcomes": dict(sim.truth.outcomes),
        "round_missed": kinds["round_missed"],
        "round_overdue": kinds["round_overdue"],
        "rungs": dict(steps),
        "rung_minutes_after_raise": {k: sorted(set(v)) for k, v in delays.items()},
        "acknowledged": kinds["patrol_acknowledged"],
        "duress_scans": sim.truth.duress,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--from", dest="first", default="2026-09-01", type=date.fromisoformat)
    ap.add_argument("--to", dest="last", default="2027-01-22", type=date.fromisoformat)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--db", help="journal to write (default: a temporary file)")
    ap.add_argument("--report", choices=("md", "csv", "json"), help="print a monthly report")
    ap.add_argument("--month", default="2026-10", help="the month of --report")
    ap.add_argument("--json", action="store_true", help="figures as one JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "term.db"
        if db.exists():
            print(f"{db} exists: give a new path", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        sim = simulate(db, args.first, args.last, args.seed)
        wall = time.perf_counter() - t0
        bad = check(sim)
        months = sorted(sim.truth.by_month)
        for m in months:
            rep = monthly(sim.conn, m, zone(sim.config.timezone), config=sim.config, now=2e9)
            bad += check_report(sim, m, rep)
        out = {**figures(sim), "wall_s": round(wall, 2), "journal_matches": not bad}
        if args.report:
            rep = monthly(
                sim.conn, args.month, zone(sim.config.timezone), config=sim.config, now=2e9
            )
            sys.stdout.write(render(rep, args.report))
        if args.json:
            print(json.dumps(out))
        elif not args.report:
            for k, v in out.items():
                print(f"{k:>26}: {v}")
        for line in bad:
            print("MISMATCH " + line, file=sys.stderr)
        sim.conn.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
