"""The guard-duty watchdog: check-ins, missed check-ins, the escalation ladder, shifts,
restarts. A week of duty runs in seconds on plain ``now`` floats passed to tick()."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Config
from gateway.core.timefmt import iso
from gateway.watch.duty import DutyWatch
from protocol.messages import Checkin, Heartbeat, HeartbeatFlags, SignalPattern
from tests.duty.helpers import MONDAY, TZ, Frames, RecordingOutlet, open_db, post, register
from tests.support import register as registers

T0 = MONDAY  # Monday 2026-01-05 00:00 in Asia/Shanghai
M = 60.0
H = 3600.0
D = 86400.0
ACK_TOPIC = "campusguard/school/duty/gate/ack"


class Rig:
    """A DutyWatch on a real SQLite file that can be restarted like the gateway."""

    def __init__(self, path: Path, config: Config, start: float = T0) -> None:
        self.path = path
        self.config = config
        self.frames = Frames()
        self.outlet = RecordingOutlet()
        self.conn = open_db(path)
        self._open(start)
        self.now = start
        self.last_tick: float | None = None

    def _open(self, at: float) -> None:
        self.outlet.conn = self.conn
        self.watch = DutyWatch(self.config, self.outlet, self.conn, ManualClock(at), tz=TZ)

    def restart(self, at: float) -> None:
        self.conn.close()
        self.conn = open_db(self.path)
        self._open(at)
        self.now = at
        self.last_tick = None

    def checkin(self, at: float, duress: bool = False) -> None:
        unit = self.config.units["guard"]
        self.watch.on_frame(unit, self.frames(unit, Checkin(1 if duress else 0, 4000)), at)

    def ack(self, at: float, by: str | None = "Lead Li") -> None:
        payload = b"" if by is None else json.dumps({"by": by}).encode()
        self.watch.on_command(ACK_TOPIC, payload, at)

    def run_to(self, until: float, step: float | None = None) -> None:
        """Tick up to and including ``until``.

        With a ``step``, every ``step`` seconds as the gateway does (5 Hz there). Without,
        at the watch's own ``next_deadline()`` each time, then at ``until``: a week runs in
        milliseconds, and a deadline the watch reports late, or acts on late, shows as an
        event at the wrong time.
        """
        if step is not None:
            t = self.now
            while t <= until:
                self.watch.tick(t)
                t += step
            self.now = t
            return
        t = self.now
        if t <= until and t != self.last_tick:
            self.watch.tick(t)
        while (d := self.watch.next_deadline()) is not None and d <= until:
            if d <= t:  # not acted on (a failing outlet): it is retried by the next tick
                break
            t = d
            self.watch.tick(t)
        if t < until:
            self.watch.tick(until)
        self.now = self.last_tick = max(self.now, until)

    def duty(self) -> list[tuple[str, float]]:
        return [(e["kind"], e["at"]) for e in self.outlet.events if e["topic"] == "duty"]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.duty()]


ALL_DAY = [{"days": "mon-sun", "start": "00:00", "end": "24:00"}]


# a week ticked at the watch's own deadlines (milliseconds of CPU, in the mutation runs),
# and the same week ticked every second as the gateway does (seconds: marked slow)
TICKS = [
    pytest.param(None, id="at-deadlines"),
    pytest.param(1.0, id="every-second", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("tick", TICKS)
def test_a_week_of_on_time_checkins_escalates_nothing(tmp_path: Path, tick: float | None) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    checkins = [T0 + k * 50 * M + (k % 7) * 13 for k in range(1, 7 * 24 * 60 // 50 + 1)]
    for c in checkins:
        r.run_to(c - 1, tick)
        r.checkin(c)
    r.run_to(T0 + 7 * D, tick)  # the last check-in at 167:30 + 78 s is due at 168:31
    assert r.kinds()[0] == "shift_start"
    assert r.kinds()[1:] == ["checkin"] * len(checkins)
    assert {e["detail"]["status"] for e in r.outlet.of("checkin")} == {"on_time"}
    assert r.outlet.signals == []
    assert len(checkins) > 200


@dataclass
class Guard:
    """The expected behaviour of the watch, written out independently of it."""

    periods: list[tuple[float, float]]
    plan: dict[int, str]  # check-in ordinal -> 'late' | 'lead' | 'police'
    actions: list[tuple[float, str]] = field(default_factory=list)
    expected: list[tuple[str, float]] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)

    def build(self, first_clock: float) -> None:
        n = 0
        for i, (start, end) in enumerate(self.periods):
            clock = first_clock if i == 0 else start
            self.expected.append(("shift_start", clock))
            while True:
                due = clock + H
                if due >= end:
                    break
                n += 1
                plan = self.plan.get(n)
                missed = due + 5 * M
                if plan is None:
                    clock = due - 10 * M
                    self.actions.append((clock, "checkin"))
                    self.expected.append(("checkin", clock))
                elif plan == "late":
                    clock = due + 3 * M
                    self.actions.append((clock, "checkin"))
                    self.expected.append(("checkin", clock))
                elif plan == "lead":  # the guard answers after the lead was told
                    clock = missed + 7 * M
                    self.actions.append((clock, "checkin"))
                    self.expected += [("missed_checkin", missed), ("escalation", missed)]
                    self.expected += [("escalation", missed + 5 * M), ("acknowledged", clock)]
                    self.steps += [("prompt_guard", missed), ("security_lead", missed + 5 * M)]
                else:  # nobody answers until the duty room acknowledges after the police step
                    clock = missed + 12 * M
                    self.actions.append((clock, "ack"))
                    self.expected += [("missed_checkin", missed), ("escalation", missed)]
                    self.expected += [
                        ("escalation", missed + 5 * M),
                        ("escalation", missed + 10 * M),
                    ]
                    self.expected.append(("acknowledged", clock))
                    self.steps += [
                        ("prompt_guard", missed),
                        ("security_lead", missed + 5 * M),
                        ("police", missed + 10 * M),
                    ]
            if end - T0 < 7 * D:
                self.expected.append(("shift_end", end))


def local(day: int, hour: float) -> float:
    """Local time in the test week: day 0 = Monday 5 January 2026."""
    return T0 + day * D + hour * H


@pytest.mark.parametrize("tick", TICKS)
def test_a_week_of_shifts_with_misses_escalates_each_at_the_right_step_and_time(
    tmp_path: Path, tick: float | None
) -> None:
    # weekdays: day shift 07:00-19:00 and a night shift every night 19:00-07:00; so the
    # post is off duty Saturday and Sunday 07:00-19:00, with hand-overs in between
    shifts = [
        {"days": "mon-fri", "start": "07:00", "end": "19:00"},
        {"days": "mon-sun", "start": "19:00", "end": "07:00"},
    ]
    r = Rig(tmp_path / "g.db", register([post(shifts)]))
    periods = [
        (local(-1, 19), local(5, 7)),  # Sunday night to Saturday morning
        (local(5, 19), local(6, 7)),  # Saturday night
        (local(6, 19), local(12, 7)),  # Sunday night into the next week
    ]
    guard = Guard(
        periods, {3: "late", 7: "lead", 20: "police", 45: "lead", 80: "late", 130: "police"}
    )
    guard.build(T0)
    assert any(a == "ack" for _, a in guard.actions)
    for at, what in guard.actions:
        if at > T0 + 7 * D:
            break
        r.run_to(at - 1, tick)
        if what == "checkin":
            r.checkin(at)
        else:
            r.ack(at)
    r.run_to(T0 + 7 * D, tick)
    expected = [(k, t) for k, t in guard.expected if t <= T0 + 7 * D]
    assert r.duty() == sorted(expected, key=lambda x: x[1])
    steps = [(e["detail"]["step"], e["at"]) for e in r.outlet.of("escalation")]
    assert steps == [(s, t) for s, t in guard.steps if t <= T0 + 7 * D]
    statuses = [e["detail"]["status"] for e in r.outlet.of("checkin")]
    assert statuses.count("late") == 2 and "off_duty" not in statuses
    # the prompt reached the post unit each time; the duty ack stopped the buzzer
    prompts = [s for s in r.outlet.signals if s[1] == SignalPattern.PROMPT_CHECKIN]
    assert len(r.outlet.of("missed_checkin")) == 4 == len(prompts)
    assert [s for s, _ in steps].count("police") == 2
    assert all(s == ("guard", SignalPattern.PROMPT_CHECKIN, 0) for s in prompts)
    assert r.outlet.signals.count(("guard", SignalPattern.STOP, 0)) == 2
    # nothing at all while off duty
    for start, end in [(local(5, 7), local(5, 19)), (local(6, 7), local(6, 19))]:
        assert [k for k, t in r.duty() if start < t < end] == []


def test_missed_checkin_is_seen_within_a_second_of_the_grace_end(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 10, step=0.2)
    c = T0 + 123.37
    r.run_to(c - 0.1, step=0.2)
    r.checkin(c)
    deadline = c + H + 5 * M
    r.run_to(deadline + 3, step=0.2)
    missed = r.outlet.of("missed_checkin")
    assert len(missed) == 1
    assert 0 <= missed[0]["at"] - deadline < 0.2 + 1e-6
    assert missed[0]["code"] == 102 and missed[0]["qualifier"] == 1
    assert missed[0]["detail"]["deadline"] == deadline and missed[0]["detail"]["due_at"] == c + H
    # the prompt rung (after 0 min) goes out with it
    assert r.outlet.of("escalation")[0]["detail"]["step"] == "prompt_guard"


def test_police_step_tells_the_duty_room_what_to_do(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 15 * M)
    police = [e for e in r.outlet.of("escalation") if e["detail"]["step"] == "police"]
    assert len(police) == 1
    e = police[0]
    assert (
        e["topic"] == "duty" and e["post"] == "gate" and e["site"] == "school" and e["unit"] is None
    )
    assert e["at"] == T0 + H + 15 * M
    d = e["detail"]
    assert d["place"] == "North gate post" and d["unit"] == "guard"
    assert d["guard_contact"] == "Post phone +86 200"
    assert d["minutes_overdue"] == 15.0 and d["rung"] == 3 and d["of"] == 3
    assert d["security_lead"] == {"name": "Lead Li", "phone": "+86 100"}
    assert "North gate post" in d["action"] and "15.0 min" in d["action"]
    lead = [e for e in r.outlet.of("escalation") if e["detail"]["step"] == "security_lead"]
    assert lead[0]["detail"]["security_lead"]["phone"] == "+86 100"


def test_duress_checkin_looks_normal_at_the_post(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 30 * M)
    r.checkin(T0 + 30 * M, duress=True)
    r.run_to(T0 + 30 * M + H + 4 * M)
    ev = r.outlet.of("checkin")
    assert (
        len(ev) == 1
        and ev[0]["detail"]["status"] == "on_time"
        and ev[0]["detail"]["duress"] is True
    )
    assert r.outlet.signals == []  # nothing at the post: it shows a normal check-in
    assert r.outlet.of("missed_checkin") == []  # and the clock restarted as usual


def test_duress_checkin_during_escalation_acknowledges_and_says_so(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 6 * M)
    r.checkin(T0 + H + 6 * M + 30, duress=True)
    ack = r.outlet.of("acknowledged")
    assert (
        len(ack) == 1
        and ack[0]["detail"]["duress"] is True
        and ack[0]["detail"]["via"] == "checkin"
    )
    assert ack[0]["qualifier"] == 3 and ack[0]["code"] == 102
    assert ack[0]["detail"]["steps_notified"] == ["prompt_guard"]


def test_off_duty_time_raises_nothing_and_checkins_there_change_nothing(tmp_path: Path) -> None:
    shifts = [{"days": "mon-fri", "start": "08:00", "end": "18:00"}]
    r = Rig(tmp_path / "g.db", register([post(shifts)]), start=local(5, 0))  # Saturday 00:00
    r.run_to(local(5, 12), step=5)
    r.checkin(local(5, 12))  # a guard presses on Saturday: noted, no clock
    r.run_to(
        local(
            7,
            7,
        ),
        step=5,
    )
    assert r.duty() == [("checkin", local(5, 12))]
    assert r.outlet.of("checkin")[0]["detail"]["status"] == "off_duty"
    r.run_to(local(7, 9) + 5 * M)
    assert r.duty()[1:] == [
        ("shift_start", local(7, 8)),
        ("missed_checkin", local(7, 9) + 5 * M),
        ("escalation", local(7, 9) + 5 * M),
    ]


def test_shift_end_owes_only_deadlines_before_it(tmp_path: Path) -> None:
    shifts = [{"days": "mon-fri", "start": "08:00", "end": "18:00"}]
    r = Rig(tmp_path / "g.db", register([post(shifts)]), start=local(0, 7))

    def checkins(day: int, before_h: int, last: float) -> None:
        """Every 50 minutes from 08:00 while one more is before ``before_h``, then ``last``."""
        c = local(day, 8)
        while c + 50 * M < local(day, before_h):
            c += 50 * M
            r.run_to(c - 1, step=10)
            r.checkin(c)
        r.checkin(last)

    # Monday: last check-in at 17:57 -> due 18:57 is after the end: not owed
    checkins(0, 18, local(0, 17) + 57 * M)
    r.run_to(local(1, 7), step=10)
    assert r.kinds()[-1] == "shift_end"
    assert r.outlet.of("missed_checkin") == []
    # Tuesday: last check-in at 16:57 -> due 17:57 is owed, missed at 18:02 after the end
    r.run_to(local(1, 8), step=10)
    checkins(1, 17, local(1, 16) + 57 * M)
    r.run_to(local(1, 19), step=1)
    tail = r.duty()[-5:]
    assert tail[0] == ("shift_end", local(1, 18))
    assert tail[1] == ("missed_checkin", local(1, 18) + 2 * M)
    end = next(e for e in r.outlet.of("shift_end") if e["at"] == local(1, 18))
    assert end["detail"]["still_owed_due"] == local(1, 17) + 57 * M
    # the ladder ran on after the shift: police told at 18:12, then acknowledged by the lead
    assert [e["detail"]["step"] for e in r.outlet.of("escalation")] == [
        "prompt_guard",
        "security_lead",
        "police",
    ]
    r.ack(local(1, 19), by="Lead Li")
    assert r.kinds()[-1] == "acknowledged"
    r.run_to(local(2, 8) + 30 * M, step=10)  # no check-in owed until Wednesday 09:00
    assert r.kinds()[-1] == "shift_start"


def test_restart_keeps_a_pending_deadline_exactly(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 20 * M)
    r.checkin(T0 + 20 * M)
    r.run_to(T0 + 40 * M)
    r.restart(T0 + 50 * M)  # down for ten minutes, deadline 21:25 still ahead
    r.run_to(T0 + 20 * M + H + 5 * M - 1)
    assert r.kinds() == ["shift_start", "checkin"]  # no second shift_start, nothing false
    r.run_to(T0 + 20 * M + H + 5 * M)
    assert r.duty()[-2:] == [("missed_checkin", T0 + 85 * M), ("escalation", T0 + 85 * M)]


def test_restart_after_an_on_time_checkin_raises_nothing(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    t = T0
    for k in range(1, 30):
        t = T0 + k * 50 * M
        r.run_to(t - 1, step=5)
        r.checkin(t)
        if k % 5 == 0:
            r.restart(t + 7 * M)  # a restart every few hours, each with a short outage
    r.run_to(t + 55 * M, step=5)
    assert r.kinds() == ["shift_start"] + ["checkin"] * 29


def test_restart_mid_escalation_continues_the_ladder(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 7 * M)  # missed at 01:05, prompt then; lead due 01:10
    r.restart(T0 + H + 8 * M)
    r.run_to(T0 + H + 20 * M)
    assert r.duty() == [
        ("shift_start", T0),
        ("missed_checkin", T0 + H + 5 * M),
        ("escalation", T0 + H + 5 * M),
        ("escalation", T0 + H + 10 * M),
        ("escalation", T0 + H + 15 * M),
    ]
    assert len(r.outlet.signals) == 1  # the prompt was not sent again


def test_rungs_due_while_the_gateway_was_down_go_out_at_once_in_order(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 6 * M)
    r.restart(T0 + H + 30 * M)  # lead (01:10) and police (01:15) fell in the outage
    r.run_to(T0 + H + 30 * M)
    steps = [
        (e["detail"]["step"], e["at"], e["detail"]["scheduled"]) for e in r.outlet.of("escalation")
    ]
    assert steps == [
        ("prompt_guard", T0 + H + 5 * M, T0 + H + 5 * M),
        ("security_lead", T0 + H + 30 * M, T0 + H + 10 * M),
        ("police", T0 + H + 30 * M, T0 + H + 15 * M),
    ]


def test_a_deadline_passed_while_down_gives_a_restart_grace(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 30 * M)
    r.checkin(T0 + 30 * M)  # due 01:30, missed at 01:35
    r.run_to(T0 + 60 * M)
    r.restart(T0 + 100 * M)  # back at 01:40: the guard's check-in may have been lost
    r.run_to(T0 + 104 * M)
    assert r.outlet.of("missed_checkin") == []
    r.checkin(T0 + 104 * M)  # comes in within the restart grace: late, not missed
    r.run_to(T0 + 104 * M + H + 4 * M)
    last = r.outlet.of("checkin")[-1]
    assert last["detail"]["status"] == "late" and r.outlet.of("missed_checkin") == []
    # the same outage without a check-in: missed five minutes after the restart
    r2 = Rig(tmp_path / "h.db", register([post(ALL_DAY)]))
    r2.run_to(T0 + 30 * M)
    r2.checkin(T0 + 30 * M)
    r2.run_to(T0 + 60 * M)
    r2.restart(T0 + 100 * M)
    r2.run_to(T0 + 106 * M)
    assert r2.duty()[-2:] == [("missed_checkin", T0 + 105 * M), ("escalation", T0 + 105 * M)]


def test_a_shift_that_ended_while_down_raises_no_false_alarm(tmp_path: Path) -> None:
    shifts = [{"days": "mon-fri", "start": "08:00", "end": "18:00"}]
    r = Rig(tmp_path / "g.db", register([post(shifts)]), start=local(0, 16))
    r.checkin(local(0, 16) + 30 * M)  # due 17:30, owed
    r.run_to(local(0, 17))
    r.restart(local(0, 20))  # down 17:00-20:00: the deadline and the shift's end passed
    r.run_to(local(1, 7), step=10)
    assert r.kinds() == ["shift_start", "checkin", "shift_end"]
    assert r.duty()[-1] == ("shift_end", local(0, 18))
    # and a shift that began while down is picked up at its real start
    r.restart(local(1, 9) + 30 * M)
    r.run_to(local(1, 9) + 30 * M)
    assert r.duty()[-1] == ("shift_start", local(1, 8))
    r.run_to(local(1, 9) + 35 * M - 1)
    assert r.outlet.of("missed_checkin") == []  # deadline 09:05 fell while down: grace
    r.run_to(local(1, 9) + 35 * M)
    assert r.duty()[-2:] == [
        ("missed_checkin", local(1, 9) + 35 * M),
        ("escalation", local(1, 9) + 35 * M),
    ]


def test_duty_ack_stops_the_ladder_and_restarts_the_clock(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 8 * M)
    r.ack(T0 + H + 8 * M, by=None)
    ack = r.outlet.of("acknowledged")[0]
    assert ack["detail"]["by"] == "duty room" and ack["detail"]["via"] == "duty_ack"
    assert ack["detail"]["next_due"] == T0 + 2 * H + 8 * M
    # due at T0 + H, deadline 5 min later; acknowledged 8 min after the due time
    assert ack["detail"]["missed_deadline"] == T0 + H + 5 * M
    assert ack["detail"]["minutes_overdue"] == 8
    assert ack["detail"]["steps_notified"] == ["prompt_guard"]
    assert ack["detail"]["duress"] is False
    assert r.outlet.signals[-1] == ("guard", SignalPattern.STOP, 0)
    r.run_to(T0 + 2 * H + 12 * M)
    assert [e["detail"]["step"] for e in r.outlet.of("escalation")] == ["prompt_guard"]
    r.run_to(T0 + 2 * H + 13 * M)
    assert len(r.outlet.of("missed_checkin")) == 2


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("campusguard/other-school/duty/gate/ack", b"{}"),
        ("campusguard/school/duty/nopost/ack", b"{}"),
        ("campusguard/school/duty/gate/something", b"{}"),
        ("ack", b""),
    ],
)
def test_acks_for_other_posts_or_topics_are_ignored(
    tmp_path: Path, topic: str, payload: bytes
) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 6 * M)
    r.watch.on_command(topic, payload, T0 + H + 6 * M)
    assert r.outlet.of("acknowledged") == []


def test_ack_with_nothing_pending_or_bad_json_does_no_harm(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 10 * M)
    r.ack(T0 + 10 * M)
    assert r.kinds() == ["shift_start"]
    r.run_to(T0 + H + 5 * M)
    r.watch.on_command(ACK_TOPIC, b"\xff not json", T0 + H + 5 * M + 1)
    assert r.outlet.of("acknowledged")[0]["detail"]["by"] == "duty room"


def test_frames_other_than_checkins_and_from_other_units_are_ignored(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0)
    shop = r.config.units["shop"]
    r.watch.on_frame(shop, r.frames(shop, Checkin(0, 1)), T0 + 10)
    guard = r.config.units["guard"]
    r.watch.on_frame(guard, r.frames(guard, Heartbeat(3900, 1, 1, HeartbeatFlags(0))), T0 + 11)
    assert r.kinds() == ["shift_start"]


def test_failed_outlet_retries_without_losing_the_miss(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H)
    r.outlet.fail = True
    r.run_to(T0 + H + 5 * M + 3)
    r.outlet.fail = False
    r.run_to(T0 + H + 5 * M + 4)
    missed = r.outlet.of("missed_checkin")
    assert len(missed) == 1 and missed[0]["at"] == T0 + H + 5 * M + 4
    assert missed[0]["detail"]["deadline"] == T0 + H + 5 * M


def test_state_is_in_sqlite(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 10)
    r.checkin(T0 + 20)
    row = r.conn.execute(
        "SELECT on_duty, due_at, deadline, last_checkin FROM duty_state"
    ).fetchone()
    assert row == (1, T0 + 20 + H, T0 + 20 + H + 5 * M, T0 + 20)
    assert r.watch.next_deadline() == T0 + 20 + H + 5 * M


def test_every_event_is_journalled(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 16 * M, step=2)
    rows = r.conn.execute(
        "SELECT kind, post, unit, code, qualifier FROM events ORDER BY id"
    ).fetchall()
    assert rows == [
        ("shift_start", "gate", None, None, None),
        ("missed_checkin", "gate", None, 102, 1),
        ("escalation", "gate", None, None, None),
        ("escalation", "gate", None, None, None),
        ("escalation", "gate", None, None, None),
    ]


def test_post_state_is_retained_with_shift_due_and_rung(tmp_path: Path) -> None:
    """post/<post>/state: shift, last check-in, next due, rung; at start and on changes."""
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0)
    st = r.outlet.retained["post/gate/state"]
    assert st["on_duty"] is True and st["shift"] is not None
    assert st["next_due"] == iso(T0 + 60 * M) and st["rung"] == 0 and st["of"] == 3
    r.checkin(T0 + 30 * M)
    st = r.outlet.retained["post/gate/state"]
    assert st["last_checkin"] == iso(T0 + 30 * M) and st["next_due"] == iso(T0 + 90 * M)
    r.run_to(T0 + 95 * M + 5 * M)  # missed at 95 min; the second rung 5 min later
    st = r.outlet.retained["post/gate/state"]
    assert st["escalating"] is True and st["rung"] == 2 and st["step"] == "security_lead"
    assert st["missed_deadline"] == iso(T0 + 95 * M)
    r.ack(T0 + 101 * M)
    st = r.outlet.retained["post/gate/state"]
    assert st["escalating"] is False and st["rung"] == 0
    assert st["next_due"] == iso(T0 + 161 * M)


def test_post_of_a_unit_not_installed_raises_no_ladder(tmp_path: Path) -> None:
    """No key, not deployed: nobody can check in there, so no hourly police escalation."""
    installed: set[str] = set()
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.watch = DutyWatch(
        r.config, r.outlet, r.conn, ManualClock(T0), tz=TZ, installed=installed.__contains__
    )
    r.run_to(T0 + 1 * D, step=30.0)
    assert "missed_checkin" not in r.kinds() and "escalation" not in r.kinds()
    assert r.outlet.retained["post/gate/state"]["installed"] is False
    installed.add("guard")  # its first frame came: from now on it is watched
    r.checkin(T0 + 1 * D + 60)
    r.run_to(T0 + 1 * D + 60 + 66 * M, step=30.0)
    assert "missed_checkin" in r.kinds() and "escalation" in r.kinds()


def test_nothing_scheduled_without_posts(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "gw.db")
    watch = DutyWatch(register(), RecordingOutlet(conn), conn, ManualClock(T0), tz=TZ)
    assert watch.next_deadline() is None
    watch.tick(T0 + 3600)
    conn.close()


# -- exact decisions: every field of every duty event, state and row ----------------------

WHO = {
    "post": "gate",
    "unit": "guard",
    "place": "North gate post",
    "guard_contact": "Post phone +86 200",
}
SITE = {"site_name": "Test Boarding School", "address": "1 School Road"}
LEAD = {"security_lead": {"name": "Lead Li", "phone": "+86 100"}}
DAY_SHIFT = [{"days": "mon-fri", "start": "08:00", "end": "18:00"}]


def duty_events(r: Rig) -> list[tuple[str, float, int | None, int | None, dict[str, object]]]:
    return [
        (e["kind"], e["at"], e["code"], e["qualifier"], e["detail"])
        for e in r.outlet.events
        if e["topic"] == "duty"
    ]


def row(r: Rig) -> tuple[object, ...]:
    """The post's duty_state row without its updated_at."""
    return tuple(r.conn.execute("SELECT * FROM duty_state WHERE post = 'gate'").fetchone()[:11])


def test_a_whole_ladder_event_by_event(tmp_path: Path) -> None:
    """Late, on the dot, missed, prompted, lead told, acknowledged: every field."""
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    late, dot = T0 + H + 100, T0 + 2 * H + 100
    r.run_to(late - 1)
    r.checkin(late)  # due 01:00, 100 s late
    r.run_to(dot - 1)
    r.checkin(dot)  # exactly at its due time: on time
    missed = dot + H + 5 * M
    r.run_to(missed + 5 * M)
    acked = missed + 7 * M + 30
    r.watch.on_command(ACK_TOPIC, json.dumps({"by": "  Lead Li  "}).encode(), acked)
    ladder = {"of": 3, "missed_deadline": missed, "last_checkin": dot, **WHO, **SITE}
    assert duty_events(r) == [
        ("shift_start", T0, None, None, {"due_at": T0 + H}),
        (
            "checkin",
            late,
            None,
            None,
            {
                "status": "late",
                "due_at": T0 + H,
                "next_due": late + H,
                "unit": "guard",
                "duress": False,
                "minutes_late": 1.7,
            },
        ),
        (
            "checkin",
            dot,
            None,
            None,
            {
                "status": "on_time",
                "due_at": dot,
                "next_due": dot + H,
                "unit": "guard",
                "duress": False,
            },
        ),
        (
            "missed_checkin",
            missed,
            102,
            1,
            {
                **WHO,
                "due_at": dot + H,
                "deadline": missed,
                "minutes_overdue": 5.0,
                "last_checkin": dot,
                "on_duty": True,
            },
        ),
        (
            "escalation",
            missed,
            None,
            None,
            {
                "step": "prompt_guard",
                "rung": 1,
                "after_min": 0,
                "scheduled": missed,
                "minutes_overdue": 5.0,
                **ladder,
            },
        ),
        (
            "escalation",
            missed + 5 * M,
            None,
            None,
            {
                "step": "security_lead",
                "rung": 2,
                "after_min": 5,
                "scheduled": missed + 5 * M,
                "minutes_overdue": 10.0,
                **ladder,
                **LEAD,
            },
        ),
        (
            "acknowledged",
            acked,
            102,
            3,
            {
                "by": "Lead Li",
                "via": "duty_ack",
                "duress": False,
                "missed_deadline": missed,
                "minutes_overdue": 12.5,
                "steps_notified": ["prompt_guard", "security_lead"],
                "next_due": acked + H,
                **WHO,
            },
        ),
    ]
    assert r.outlet.signals == [
        ("guard", SignalPattern.PROMPT_CHECKIN, 0),
        ("guard", SignalPattern.STOP, 0),
    ]
    assert row(r) == ("gate", 1, None, None, None, acked + H, acked + H + 5 * M, dot, None, None, 0)


def test_a_checkin_answers_the_ladder_as_the_guard(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 5 * M)
    r.checkin(T0 + H + 6 * M)
    assert duty_events(r)[-1] == (
        "acknowledged",
        T0 + H + 6 * M,
        102,
        3,
        {
            "by": "guard",
            "via": "checkin",
            "duress": False,
            "missed_deadline": T0 + H + 5 * M,
            "minutes_overdue": 6.0,
            "steps_notified": ["prompt_guard"],
            "next_due": T0 + 2 * H + 6 * M,
            **WHO,
        },
    )
    # the answer was a press at the post: it is the last check-in, and the buzzer stops
    assert row(r)[7] == T0 + H + 6 * M
    assert r.outlet.retained["post/gate/state"]["last_checkin"] == iso(T0 + H + 6 * M)


def test_retained_state_while_escalating_owes_no_check_in(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 5 * M)
    assert r.outlet.retained["post/gate/state"] == {
        "site": "school",
        **WHO,
        "on_duty": True,
        "shift": {"start": None, "end": None},
        "off_since": None,
        "last_checkin": None,
        "next_due": None,
        "deadline": None,
        "escalating": True,
        "missed_deadline": iso(T0 + H + 5 * M),
        "rung": 1,
        "of": 3,
        "step": "prompt_guard",
        "installed": True,
        "at": iso(T0 + H + 5 * M),
    }
    missed = T0 + H + 5 * M
    assert row(r) == ("gate", 1, None, None, None, None, None, None, missed, missed, 1)


def test_a_shift_end_with_nothing_owed_then_the_next_shift(tmp_path: Path) -> None:
    """A check-in due exactly at the end of the shift is not owed; the next shift owes
    its first one an interval after it starts."""
    nine_hours = register([post(DAY_SHIFT, checkin_interval_min=540)])
    r = Rig(tmp_path / "g.db", nine_hours, start=local(0, 7))
    r.run_to(local(0, 9))
    r.checkin(local(0, 9))  # due 18:00, the very end of the shift
    r.run_to(local(0, 23))
    assert row(r) == ("gate", 0, local(0, 18), None, None, None, None, local(0, 9), None, None, 0)
    r.run_to(local(1, 17) + 5 * M)
    assert duty_events(r) == [
        (
            "shift_start",
            local(0, 8),
            None,
            None,
            {"period_start": local(0, 8), "period_end": local(0, 18), "due_at": local(0, 17)},
        ),
        (
            "checkin",
            local(0, 9),
            None,
            None,
            {
                "status": "on_time",
                "due_at": local(0, 17),
                "next_due": local(0, 18),
                "unit": "guard",
                "duress": False,
            },
        ),
        ("shift_end", local(0, 18), None, None, {}),
        (
            "shift_start",
            local(1, 8),
            None,
            None,
            {"period_start": local(1, 8), "period_end": local(1, 18), "due_at": local(1, 17)},
        ),
        (
            "missed_checkin",
            local(1, 17) + 5 * M,
            102,
            1,
            {
                **WHO,
                "due_at": local(1, 17),
                "deadline": local(1, 17) + 5 * M,
                "minutes_overdue": 5.0,
                "last_checkin": local(0, 9),
                "on_duty": True,
            },
        ),
        (
            "escalation",
            local(1, 17) + 5 * M,
            None,
            None,
            {
                "step": "prompt_guard",
                "rung": 1,
                "of": 3,
                "after_min": 0,
                "scheduled": local(1, 17) + 5 * M,
                "missed_deadline": local(1, 17) + 5 * M,
                "minutes_overdue": 5.0,
                "last_checkin": local(0, 9),
                **WHO,
                **SITE,
            },
        ),
    ]


def test_the_owed_check_in_after_the_shift_settles_it(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 16))
    r.checkin(local(0, 16) + 57 * M)  # due 17:57, in the shift; counts as missed at 18:02
    r.run_to(local(0, 18) + 1 * M)
    r.checkin(local(0, 18) + 1 * M)  # off duty, but the owed one: late, and settled
    r.run_to(local(1, 7))
    assert duty_events(r)[-2:] == [
        ("shift_end", local(0, 18), None, None, {"still_owed_due": local(0, 17) + 57 * M}),
        (
            "checkin",
            local(0, 18) + 1 * M,
            None,
            None,
            {
                "status": "late",
                "due_at": local(0, 17) + 57 * M,
                "unit": "guard",
                "duress": False,
                "minutes_late": 4.0,
            },
        ),
    ]
    assert row(r)[5:7] == (None, None)


def test_a_shift_end_noticed_late_says_when(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 16))
    r.run_to(local(0, 17))
    r.restart(local(0, 20))
    r.run_to(local(0, 20))
    noticed = {"noticed_at": local(0, 20)}
    assert duty_events(r)[-1] == ("shift_end", local(0, 18), None, None, noticed)
    r.restart(local(1, 8))  # back exactly as the shift starts: noticed on time
    r.run_to(local(1, 8))
    assert duty_events(r)[-1] == (
        "shift_start",
        local(1, 8),
        None,
        None,
        {"period_start": local(1, 8), "period_end": local(1, 18), "due_at": local(1, 9)},
    )


def test_a_restart_exactly_at_the_deadline_raises_the_miss_at_once(tmp_path: Path) -> None:
    """The deadline did not pass while the gateway was down: it is now, so no grace."""
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + 30 * M)
    r.restart(T0 + H + 5 * M)
    r.run_to(T0 + H + 5 * M)
    assert r.kinds()[-2:] == ["missed_checkin", "escalation"]
    assert r.duty()[-1] == ("escalation", T0 + H + 5 * M)


def test_a_restart_exactly_at_the_shift_end_drops_a_deadline_missed_while_down(
    tmp_path: Path,
) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 16))
    r.checkin(local(0, 16) + 30 * M)  # due 17:30, deadline 17:35
    r.run_to(local(0, 17))
    r.restart(local(0, 18))  # down 17:00-18:00: the deadline and the shift are over
    r.run_to(local(0, 23))
    assert r.kinds() == ["shift_start", "checkin", "shift_end"]
    assert row(r)[5:7] == (None, None)


def test_an_ack_signed_before_the_miss_was_noticed_is_refused(tmp_path: Path) -> None:
    """The miss is noticed a minute after its deadline (the gateway was busy): an ack
    signed in between is older than the missed check-in it would answer."""
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    deadline = T0 + H + 5 * M
    r.run_to(deadline - 1)
    r.watch.tick(deadline + 60)
    assert r.duty()[-1] == ("escalation", deadline + 60)

    def ack(signed: float, at: float) -> None:
        doc = {"by": "Desk 1", "at": iso(signed)}
        r.watch.on_command(ACK_TOPIC, json.dumps(doc).encode(), at)

    ack(deadline + 30, deadline + 70)
    r.restart(deadline + 80)
    ack(deadline + 30, deadline + 90)
    forgery = {
        "site": "school",
        "kind": "forgery",
        "unit": None,
        "post": "gate",
        "code": 461,
        "qualifier": 1,
        "detail": {"channel": "mqtt", "predated": 1, "topics": [ACK_TOPIC]},
        "topic": "event",
    }
    assert r.outlet.of("forgery") == [
        {**forgery, "at": deadline + 70},
        {**forgery, "at": deadline + 90},
    ]
    assert r.outlet.of("acknowledged") == []
    ack(deadline + 56, deadline + 95)  # within the clock allowance of the notice
    assert r.outlet.of("acknowledged")[0]["detail"]["by"] == "Desk 1"


def test_a_register_changed_while_down_sets_the_running_shift(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 8))
    r.run_to(local(0, 8))
    r.checkin(local(0, 16))
    r.config = register([post([{"days": "mon-fri", "start": "08:00", "end": "20:00"}])])
    r.restart(local(0, 17))  # the shift now ends at 20:00
    r.run_to(local(0, 17))
    assert r.outlet.retained["post/gate/state"]["shift"] == {
        "start": iso(local(0, 8)),
        "end": iso(local(0, 20)),
    }
    assert r.outlet.retained["post/gate/state"]["last_checkin"] == iso(local(0, 16))
    r.run_to(local(0, 23))
    assert r.duty()[-5:] == [
        ("missed_checkin", local(0, 17) + 5 * M),
        ("escalation", local(0, 17) + 5 * M),
        ("escalation", local(0, 17) + 10 * M),
        ("escalation", local(0, 17) + 15 * M),
        ("shift_end", local(0, 20)),
    ]


def test_a_post_taken_off_duty_while_down_ends_its_shift_at_the_restart(
    tmp_path: Path,
) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 8))
    r.run_to(local(0, 8))
    r.checkin(local(0, 9))
    r.config = register([post([{"days": "sat", "start": "08:00", "end": "18:00"}])])
    r.restart(local(0, 9) + 30 * M)
    r.run_to(local(0, 23))
    assert duty_events(r)[-1] == ("shift_end", local(0, 9) + 30 * M, None, None, {})
    assert r.outlet.of("missed_checkin") == []
    assert row(r)[1:3] == (0, local(0, 9) + 30 * M)


def test_ack_topics_are_read_from_their_end_whatever_the_prefix(tmp_path: Path) -> None:
    for n, topic in enumerate(["school/duty/gate/ack", "a/b/c/school/duty/gate/ack"]):
        r = Rig(tmp_path / f"g{n}.db", register([post(ALL_DAY)]))
        r.run_to(T0 + H + 5 * M)
        r.watch.on_command(topic, json.dumps({"by": "x" * 100}).encode(), T0 + H + 6 * M)
        assert [e["detail"]["by"] for e in r.outlet.of("acknowledged")] == ["x" * 80]


def test_each_post_follows_its_own_unit_and_the_earliest_deadline_is_next(
    tmp_path: Path,
) -> None:
    back = {**WHO, "place": "Back gate post"}
    del back["post"]
    units = [
        registers.unit(
            "guard2",
            13,
            site="school",
            link="bus",
            pins=registers.GUARD_PINS,
            place="Back gate post",
            owner="Post phone +86 300",
        )
    ]
    config = register([post(ALL_DAY, id="back", unit="guard2"), post(ALL_DAY)], units=units)
    r = Rig(tmp_path / "g.db", config)
    r.run_to(T0)
    assert r.watch.next_deadline() == T0 + H + 5 * M
    r.checkin(T0 + 10 * M)  # the "gate" post's unit, the second post in the register
    assert [(e["post"], e["kind"]) for e in r.outlet.events][-1] == ("gate", "checkin")
    assert r.watch.next_deadline() == T0 + H + 5 * M  # "back" is still due first
    unit = r.config.units["guard2"]
    r.watch.on_frame(unit, r.frames(unit, Checkin(0, 4000)), T0 + 20 * M)
    assert [(e["post"], e["kind"]) for e in r.outlet.events][-1] == ("back", "checkin")
    assert r.watch.next_deadline() == T0 + H + 15 * M


def state(**changes: object) -> dict[str, object]:
    """The retained post state of the ALL_DAY post at T0, with ``changes``."""
    return {
        "site": "school",
        **WHO,
        "on_duty": True,
        "shift": {"start": None, "end": None},
        "off_since": None,
        "last_checkin": None,
        "next_due": iso(T0 + H),
        "deadline": iso(T0 + H + 5 * M),
        "escalating": False,
        "missed_deadline": None,
        "rung": 0,
        "of": 3,
        "step": None,
        "installed": True,
        "at": iso(T0),
        **changes,
    }


def test_the_post_state_is_retained_at_start_and_on_changes_only(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.watch = DutyWatch(
        r.config, r.outlet, r.conn, ManualClock(T0), tz=TZ, installed={"guard"}.__contains__
    )
    r.watch.tick(T0)  # the shift start's state, then the start-up announcement
    assert r.outlet.retained_log == [("post/gate/state", state())] * 2
    r.watch.tick(T0 + 1)
    r.watch.tick(T0 + 2)
    assert len(r.outlet.retained_log) == 2  # nothing changed, nothing said again
    r.watch.tick(T0 + H + 5 * M)
    # the missed check-in is retained before its first rung: escalating, no rung yet
    assert r.outlet.retained_log[2:] == [
        (
            "post/gate/state",
            state(
                next_due=None,
                deadline=None,
                escalating=True,
                missed_deadline=iso(T0 + H + 5 * M),
                at=iso(T0 + H + 5 * M),
            ),
        ),
        (
            "post/gate/state",
            state(
                next_due=None,
                deadline=None,
                escalating=True,
                missed_deadline=iso(T0 + H + 5 * M),
                rung=1,
                step="prompt_guard",
                at=iso(T0 + H + 5 * M),
            ),
        ),
    ]
    assert r.outlet.retained_by == [
        ("school", "post/gate/state", T0),
        ("school", "post/gate/state", T0),
        ("school", "post/gate/state", T0 + H + 5 * M),
        ("school", "post/gate/state", T0 + H + 5 * M),
    ]


def test_the_post_state_off_duty(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 7))
    r.run_to(local(0, 7))
    assert r.outlet.retained["post/gate/state"] == state(
        on_duty=False,
        shift=None,
        off_since=iso(local(0, 7)),
        next_due=None,
        deadline=None,
        at=iso(local(0, 7)),
    )


def test_shifts_are_read_in_a_time_zone_given_as_a_tzinfo(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "g.db")
    outlet = RecordingOutlet(conn)
    config = register([post(DAY_SHIFT)])
    watch = DutyWatch(config, outlet, conn, ManualClock(local(0, 7)), tz=ZoneInfo(TZ))
    watch.tick(local(0, 7))
    assert watch.next_deadline() == local(0, 8)
    conn.close()


def test_a_rung_due_at_the_end_of_the_shift_goes_out_before_the_end(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 16))
    r.checkin(local(0, 16) + 55 * M)  # due 17:55, missed at 18:00, as the shift ends
    r.run_to(local(0, 18))
    assert r.duty()[-3:] == [
        ("missed_checkin", local(0, 18)),
        ("escalation", local(0, 18)),
        ("shift_end", local(0, 18)),
    ]


def test_a_check_in_owed_from_the_last_shift_stays_owed_into_the_next(tmp_path: Path) -> None:
    shifts = [
        {"days": "mon", "start": "08:00", "end": "18:00"},
        {"days": "mon", "start": "18:02", "end": "23:00"},
    ]
    r = Rig(tmp_path / "g.db", register([post(shifts)]), start=local(0, 16))
    r.run_to(local(0, 16))
    r.checkin(local(0, 16) + 58 * M)  # due 17:58, in the day shift: missed at 18:03
    r.run_to(local(0, 18) + 4 * M)
    assert r.duty()[-4:] == [
        ("shift_end", local(0, 18)),
        ("shift_start", local(0, 18) + 2 * M),
        ("missed_checkin", local(0, 18) + 3 * M),
        ("escalation", local(0, 18) + 3 * M),
    ]
    start = r.outlet.of("shift_start")[-1]["detail"]
    assert start["due_at"] == local(0, 17) + 58 * M


def test_a_shift_start_noticed_late_says_when(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(DAY_SHIFT)]), start=local(0, 7))
    r.run_to(local(0, 7))
    r.restart(local(0, 8) + 30 * M)
    r.run_to(local(0, 8) + 30 * M)
    assert duty_events(r)[-1] == (
        "shift_start",
        local(0, 8),
        None,
        None,
        {
            "period_start": local(0, 8),
            "period_end": local(0, 18),
            "due_at": local(0, 9),
            "noticed_at": local(0, 8) + 30 * M,
        },
    )


def test_a_post_whose_unit_is_not_installed_owes_the_next_one_an_interval_on(
    tmp_path: Path,
) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.watch = DutyWatch(
        r.config, r.outlet, r.conn, ManualClock(T0), tz=TZ, installed=set[str]().__contains__
    )
    r.run_to(T0 + H + 5 * M)
    nxt = T0 + H + 5 * M + H
    assert row(r)[5:7] == (nxt, nxt + 5 * M)
    assert r.watch.next_deadline() == nxt + 5 * M
    assert r.kinds() == ["shift_start"]


def test_an_ack_with_an_unreadable_time_still_acknowledges(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]))
    r.run_to(T0 + H + 5 * M)
    doc = {"by": "Desk 2", "at": "yesterday"}
    r.watch.on_command(ACK_TOPIC, json.dumps(doc).encode(), T0 + H + 6 * M)
    assert [e["detail"]["by"] for e in r.outlet.of("acknowledged")] == ["Desk 2"]


def test_an_escalation_journalled_before_missed_at_existed_dates_acks_by_its_deadline(
    tmp_path: Path,
) -> None:
    """A journal from an older gateway: escalating, with no time the miss was noticed.
    An ack is judged against the missed deadline itself, with the clock allowance."""
    missed = T0 + H + 5 * M
    conn = open_db(tmp_path / "g.db")
    DutyWatch(register([post(ALL_DAY)]), RecordingOutlet(conn), conn, ManualClock(T0), tz=TZ)
    conn.execute(
        "UPDATE duty_state SET due_at = NULL, deadline = NULL, missed_deadline = ?, "
        "missed_at = NULL, next_step = 1",
        (missed,),
    )
    conn.close()
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY)]), start=missed + 60)
    r.run_to(missed + 60)

    def ack(signed: float) -> None:
        doc = {"by": "Desk 1", "at": iso(signed)}
        r.watch.on_command(ACK_TOPIC, json.dumps(doc).encode(), missed + 70)

    ack(missed - 5 - 0.001)
    assert len(r.outlet.of("forgery")) == 1 and r.outlet.of("acknowledged") == []
    ack(missed - 5)  # exactly the allowance: taken
    assert [e["detail"]["by"] for e in r.outlet.of("acknowledged")] == ["Desk 1"]


def test_the_restart_grace_is_at_least_a_minute(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db", register([post(ALL_DAY, grace_min=1)]))
    r.run_to(T0 + 30 * M)  # due 01:00, deadline 01:01
    r.restart(T0 + H + 10 * M)
    r.run_to(T0 + H + 12 * M)
    assert r.duty()[-2:] == [("missed_checkin", T0 + H + 11 * M), ("escalation", T0 + H + 11 * M)]
