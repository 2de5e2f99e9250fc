"""Unit supervision: offline/online with hysteresis, conditions without storms, tests,
restart without repeats. Real SQLite, a recording Outlet, times passed to tick()."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.contact_id import KINDS, NEW, RESTORE
from gateway.core.timefmt import iso
from gateway.watch.supervision import STATE_REFRESH_S, Supervisor, offline_after
from protocol.messages import (
    Alarm,
    AlarmKind,
    Checkin,
    Fault,
    FaultCode,
    Heartbeat,
    HeartbeatFlags,
    Test,
    TestKind,
)
from tests.duty.helpers import MONDAY, Frames, RecordingOutlet, open_db, register

T0 = MONDAY
F = HeartbeatFlags
NONE = F(0)


def hb(flags: HeartbeatFlags = NONE, mv: int = 3900) -> Heartbeat:
    return Heartbeat(battery_mv=mv, uptime_s=100, fw=0x0102, flags=flags)


class Rig:
    def __init__(self, path: Path, start: float = T0) -> None:
        self.path = path
        self.config = register()
        self.conn = open_db(path)
        self.outlet = RecordingOutlet(self.conn)
        self.clock = ManualClock(start)
        self.sup = Supervisor(self.config, self.outlet, self.conn, self.clock)
        self.frames = Frames()

    def send(self, unit_id: str, body: object, at: float) -> None:
        unit = self.config.units[unit_id]
        self.sup.on_frame(unit, self.frames(unit, body), at)  # type: ignore[arg-type]

    def beat(
        self, unit_id: str, t0: float, t1: float, every: float, flags: HeartbeatFlags = NONE
    ) -> float:
        t = t0
        while t < t1:
            self.send(unit_id, hb(flags), t)
            self.sup.tick(t)
            t += every
        return t

    def restart(self, at: float) -> None:
        self.conn.close()
        self.conn = open_db(self.path)
        self.outlet = RecordingOutlet(self.conn)
        self.clock = ManualClock(at)
        self.sup = Supervisor(self.config, self.outlet, self.conn, self.clock)

    def mine(self, unit: str) -> list[tuple[str, int | None, float]]:
        return [
            (e["kind"], e["qualifier"], e["at"]) for e in self.outlet.events if e["unit"] == unit
        ]


def test_offline_after_missed_heartbeats_exactly_once(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    shop = r.config.units["shop"]
    assert offline_after(shop) == 210.0
    r.send("shop", hb(), T0 + 10)
    r.sup.tick(T0 + 10 + 209.9)
    assert r.mine("shop") == []
    r.sup.tick(T0 + 220)
    for k in range(1, 100):
        r.sup.tick(T0 + 220 + k * 60)
    assert r.mine("shop") == [("offline", NEW, T0 + 220)]
    ev = next(e for e in r.outlet.of("offline") if e["unit"] == "shop")
    assert ev["code"] == 381 and ev["topic"] == "event" and ev["site"] == "school"
    assert ev["detail"]["last_seen"] == T0 + 10 and ev["detail"]["place"] == "Shop at the gate"
    assert not r.sup.is_online("shop")
    # journalled in the real events table
    rows = r.conn.execute("SELECT kind, code, qualifier FROM events WHERE unit='shop'").fetchall()
    assert rows == [("offline", 381, 1)]


def test_a_unit_never_heard_is_not_installed_not_offline(tmp_path: Path) -> None:
    """Registered, never heard (no key yet, not deployed): no offline to the police, one
    notice to the security lead, state not_installed until its first authentic frame."""
    r = Rig(tmp_path / "g.db")
    assert r.sup.next_deadline() is None
    for k in range(0, 3 * 24 * 60):
        r.sup.tick(T0 + k * 60)
    for uid in ("shop", "home", "guard"):
        # told once, when the unit was still silent a supervision window after the start
        window = offline_after(r.config.units[uid])
        assert r.mine(uid) == [("not_installed", NEW, T0 + 60 * math.ceil(window / 60))]
        assert r.outlet.retained[f"unit/{uid}/state"]["state"] == "not_installed"
        assert not r.sup.is_installed(uid)
    notice = next(e for e in r.outlet.of("not_installed") if e["unit"] == "shop")
    assert notice["detail"]["security_lead"] == {"name": "Lead Li", "phone": "+86 100"}
    assert "campusguard keygen shop" in notice["detail"]["action"]
    assert "campusguard deploy shop" in notice["detail"]["action"]
    # a restart tells nobody again
    r.restart(T0 + 4 * 86400)
    r.sup.tick(T0 + 4 * 86400)
    assert r.outlet.events == []
    assert r.outlet.retained["unit/shop/state"]["state"] == "not_installed"
    # the first frame installs it: from then on it is supervised like any unit
    t1 = T0 + 5 * 86400
    r.send("shop", hb(), t1)
    assert r.sup.is_installed("shop")
    r.sup.tick(t1)  # retained states go out at the tick after the frame
    assert r.outlet.retained["unit/shop/state"]["state"] == "online"
    r.sup.tick(t1 + 210)
    assert r.mine("shop") == [("offline", NEW, t1 + 210)]
    assert r.outlet.retained["unit/shop/state"]["state"] == "offline"
    assert r.mine("home") == []  # still not installed, still quiet


def test_units_heard_before_the_upgrade_stay_installed(tmp_path: Path) -> None:
    """A journal older than supervision_install: its heard units are not "not installed"."""
    conn = open_db(tmp_path / "g.db")
    conn.execute(
        "CREATE TABLE frames (id INTEGER PRIMARY KEY, at REAL, link TEXT, unit TEXT, addr INT,"
        " epoch INT, seq INT, type TEXT, body TEXT, incident TEXT)"
    )
    conn.execute(
        "INSERT INTO frames(at, link, unit, addr, epoch, seq, type, body)"
        " VALUES (?, 'bus', 'shop', 10, 1, 0, 'HEARTBEAT', '{}')",
        (T0 - 86400,),
    )
    conn.close()
    r = Rig(tmp_path / "g.db")
    assert r.sup.is_installed("shop") and not r.sup.is_installed("home")
    r.sup.tick(T0 + 211)
    assert r.mine("shop") == [("offline", NEW, T0 + 211)]
    assert r.mine("home") == []  # not heard yet: its window runs
    r.sup.tick(T0 + 1050)
    assert r.mine("home") == [("not_installed", NEW, T0 + 1050)]


def test_unit_state_is_retained_on_every_change(tmp_path: Path) -> None:
    """unit/<unit>/state: online/offline, battery, tamper open vs closed, mains, last heard."""
    r = Rig(tmp_path / "g.db")

    def state(body: object, at: float) -> dict[str, object]:
        r.send("shop", body, at)
        r.sup.tick(at)  # the retained state goes out at the tick after the frame
        return r.outlet.retained["unit/shop/state"]

    st = state(hb(mv=3900), T0)
    assert st["state"] == "online" and st["battery_mv"] == 3900 and st["fw"] == "1.2"
    assert st["tamper"] is False and st["mains_lost"] is False and st["low_battery"] is False
    assert st["last_heard"] == iso(T0) and st["place"] == "Shop at the gate"
    st = state(hb(F.TAMPER | F.MAINS_LOST), T0 + 60)
    assert st["tamper"] is True and st["mains_lost"] is True
    assert set(st["conditions"]) == {"tamper", "mains_lost"}  # type: ignore[arg-type]
    n = len(r.outlet.retained_log)
    state(hb(F.TAMPER | F.MAINS_LOST), T0 + 120)  # nothing changed: not again
    assert len(r.outlet.retained_log) == n
    state(hb(), T0 + 180)
    st = state(hb(), T0 + 240)  # two clear heartbeats restore
    assert st["tamper"] is False and st["mains_lost"] is False
    # heard, unchanged, for longer than the refresh: last_heard is refreshed
    t = r.beat("shop", T0 + 300, T0 + 300 + STATE_REFRESH_S + 60, 60)
    last = r.outlet.retained["unit/shop/state"]["last_heard"]
    assert last >= iso(T0 + 240 + STATE_REFRESH_S)
    r.sup.tick(t + 300)
    assert r.outlet.retained["unit/shop/state"]["state"] == "offline"
    # several frames between two ticks: one retained message
    n = len(r.outlet.retained_log)
    r.send("shop", hb(F.TAMPER), t + 400)
    r.send("shop", hb(F.TAMPER | F.LOW_BATTERY), t + 401)
    r.sup.tick(t + 401)
    assert len(r.outlet.retained_log) == n + 1


def test_online_needs_half_a_heartbeat_of_frames(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", hb(), T0)
    r.sup.tick(T0 + 1000)
    r.send("shop", hb(), T0 + 2000)
    r.send("shop", Alarm(AlarmKind.PANIC, 1, 5), T0 + 2029)
    assert r.mine("shop") == [("offline", NEW, T0 + 1000)]
    r.send("shop", hb(), T0 + 2030)
    assert r.mine("shop") == [("offline", NEW, T0 + 1000), ("online", RESTORE, T0 + 2030)]
    on = r.outlet.of("online")[0]
    assert on["code"] == 381 and on["detail"]["offline_since"] == T0 + 1000
    assert on["detail"]["offline_s"] == 1030


def test_a_unit_heard_now_and_then_stays_offline_without_flapping(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    # one frame every 4 heartbeats for a day: one offline event, no restore storm
    t = T0
    while t < T0 + 86400:
        r.send("shop", hb(), t)
        for k in range(1, 5):
            r.sup.tick(t + k * 60)
        t += 240
    assert [k for k, _, _ in r.mine("shop")] == ["offline"]
    # it recovers for real: heartbeats every minute again
    r.beat("shop", t, t + 600, 60)
    assert [k for k, _, _ in r.mine("shop")] == ["offline", "online"]


def test_flag_in_every_heartbeat_is_one_event_and_restore_needs_two_clear(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    t = r.beat("shop", T0, T0 + 600, 60, F.TAMPER)
    assert r.mine("shop") == [("tamper", NEW, T0)]
    assert r.outlet.of("tamper")[0]["code"] == 383
    r.send("shop", hb(), t)
    assert len(r.mine("shop")) == 1
    r.send("shop", hb(F.TAMPER), t + 60)  # open again: the clear count starts over
    r.send("shop", hb(), t + 120)
    r.send("shop", hb(), t + 180)
    assert r.mine("shop") == [("tamper", NEW, T0), ("tamper", RESTORE, t + 180)]
    assert r.outlet.events[-1]["detail"]["since"] == T0


def test_wavering_low_battery_is_one_event(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    t = T0
    for k in range(61):  # LOW_BATTERY flag in every other heartbeat, an hour long
        r.send("shop", hb(F.LOW_BATTERY if k % 2 == 0 else F(0), mv=3300), t)
        t += 60
    assert r.mine("shop") == [("low_battery", NEW, T0)]
    assert r.outlet.of("low_battery")[0]["code"] == 302
    for _ in range(4):
        r.send("shop", hb(), t)
        t += 60
    assert len(r.mine("shop")) == 1
    r.send("shop", hb(), t)
    assert r.mine("shop")[-1] == ("low_battery", RESTORE, t)


def test_every_flag_maps_to_its_condition_and_code(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    all_flags = (
        F.TAMPER | F.LOW_BATTERY | F.MAINS_LOST | F.BUTTON_STUCK | F.SAFE_MODE | F.ALARM_PENDING
    )
    r.send("shop", hb(all_flags), T0)
    got = {(e["kind"], e["code"]) for e in r.outlet.events if e["unit"] == "shop"}
    assert got == {
        ("tamper", 383),
        ("low_battery", 302),
        ("mains_lost", 301),
        ("button_stuck", 380),
        ("safe_mode", 300),
    }
    assert r.sup.active_conditions("shop") == {k: T0 for k, _ in got}


def test_fault_frames_begin_and_restore_at_once(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", Fault(FaultCode.MAINS_LOST, 1, 0), T0)
    r.send("shop", hb(F.MAINS_LOST), T0 + 60)  # the heartbeat agrees: nothing new
    r.send("shop", Fault(FaultCode.MAINS_LOST, 0, 0), T0 + 90)
    r.send("shop", Fault(FaultCode.STORAGE, 1, 7), T0 + 100)
    r.send("shop", hb(), T0 + 120)  # heartbeats say nothing about storage
    r.send("shop", hb(), T0 + 180)
    r.send("shop", Fault(FaultCode.WATCHDOG_RESET, 1, 2), T0 + 200)
    r.send("shop", Fault(FaultCode.WATCHDOG_RESET, 0, 0), T0 + 201)
    r.send("shop", Fault(FaultCode.LINK_LOST, 1, 95), T0 + 210)
    r.send("shop", Fault(FaultCode.LINK_LOST, 0, 0), T0 + 211)
    assert r.mine("shop") == [
        ("mains_lost", NEW, T0),
        ("mains_lost", RESTORE, T0 + 90),
        ("storage_fault", NEW, T0 + 100),
        ("watchdog_reset", NEW, T0 + 200),
        ("link_lost", NEW, T0 + 210),
        ("link_lost", RESTORE, T0 + 211),
    ]
    codes = {e["kind"]: e["code"] for e in r.outlet.events if e["unit"] == "shop"}
    assert codes == {
        "mains_lost": 301,
        "storage_fault": 300,
        "watchdog_reset": 305,
        "link_lost": 350,
    }
    assert r.outlet.of("watchdog_reset")[0]["detail"]["boots_in_a_row"] == 2


def test_tests_failures_and_missing_tests(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    day = 86400.0
    tests_at = {
        T0: Test(TestKind.PERIODIC, 0, 3900),
        T0 + 100: Test(TestKind.MANUAL, 0, 3900),
        T0 + day: Test(TestKind.PERIODIC, 0b1001, 3900),
        T0 + 2 * day: Test(TestKind.PERIODIC, 0b0001, 3900),
        T0 + 3 * day: Test(TestKind.PERIODIC, 0, 3900),
    }
    # the home unit heartbeats every 300 s throughout; its periodic test stops after day 3
    t = T0
    end = T0 + 4 * day + 3600 + 300
    while t <= end:
        r.send("home", hb(), t)
        for ta in [x for x in tests_at if t <= x < t + 300]:
            r.send("home", tests_at[ta], ta)
        r.sup.tick(t + 1)
        t += 300
    tests = [
        (e["kind"], e["code"], e["qualifier"], e["at"])
        for e in r.outlet.events
        if e["unit"] == "home"
    ]
    missing_at = T0 + 3 * day + 86400 + 3600  # interval + one hour
    assert tests == [
        ("test", 602, NEW, T0),
        ("test", 601, NEW, T0 + 100),
        ("test", 602, NEW, T0 + day),
        ("test_failed", 307, NEW, T0 + day),
        ("test", 602, NEW, T0 + 2 * day),
        ("test", 602, NEW, T0 + 3 * day),
        ("test_failed", 307, RESTORE, T0 + 3 * day),
        ("test_missing", 354, NEW, missing_at),  # seen by the heartbeat arriving then
    ]
    assert r.outlet.of("test_failed")[0]["detail"]["failed"] == ["battery", "sounder"]
    r.send("home", Test(TestKind.PERIODIC, 0, 3900), t)
    assert r.mine("home")[-2:] == [("test", NEW, t), ("test_missing", RESTORE, t)]


def test_an_offline_unit_is_not_also_reported_for_its_missing_test(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", Test(TestKind.PERIODIC, 0, 3900), T0)
    for k in range(1, 60):
        r.sup.tick(T0 + k * 3600)
    assert [k for k, _, _ in r.mine("shop")] == ["test", "offline"]


def test_restart_repeats_nothing_and_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    r = Rig(path)
    r.send("shop", hb(F.TAMPER), T0)
    r.beat("home", T0, T0 + 3000, 300)
    r.sup.tick(T0 + 3000)  # shop is offline by now; guard too (never heard)
    before = r.mine("shop")
    assert before == [("tamper", NEW, T0), ("offline", NEW, T0 + 300)]  # home's tick at 300
    r.restart(T0 + 4000)
    # nothing repeated, however long we look while things stay as they are
    r.send("shop", hb(F.TAMPER), T0 + 4010)
    for k in range(1, 10):
        r.sup.tick(T0 + 4000 + k * 100)
    assert r.mine("shop") == []
    assert not r.sup.is_online("shop")
    assert "tamper" in r.sup.active_conditions("shop")
    # the comeback and the tamper restore after the restart are reported
    r.send("shop", hb(), T0 + 4060)
    r.send("shop", hb(), T0 + 4120)
    assert r.mine("shop") == [("online", RESTORE, T0 + 4060), ("tamper", RESTORE, T0 + 4120)]
    # home was online: the restart gives it a full window from the restart, not from its last frame
    r.sup.tick(T0 + 4000 + 1049)
    assert r.mine("home") == []
    r.sup.tick(T0 + 4000 + 1050)
    assert r.mine("home") == [("offline", NEW, T0 + 5050)]


def test_failed_outlet_loses_nothing(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", hb(), T0)
    r.outlet.fail = True
    r.sup.tick(T0 + 300)  # the event cannot be journalled: logged, state unchanged
    r.send("shop", hb(F.TAMPER), T0 + 301)
    assert r.sup.is_online("shop")
    r.outlet.fail = False
    r.sup.tick(T0 + 302)  # shop was heard at 301, so it is online
    r.send("shop", hb(F.TAMPER), T0 + 360)
    assert r.mine("shop") == [("tamper", NEW, T0 + 360)]
    r.sup.tick(T0 + 360 + 211)
    assert r.mine("shop")[-1] == ("offline", NEW, T0 + 571)


def test_checkins_and_alarms_count_as_signs_of_life(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    for k in range(20):
        r.send("guard", Checkin(0, 1000), T0 + k * 200)
        r.sup.tick(T0 + k * 200 + 100)
    assert r.mine("guard") == []


def test_state_tables_are_in_the_same_database(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", hb(F.TAMPER), T0)
    other = sqlite3.connect(tmp_path / "g.db")
    assert other.execute("SELECT unit, kind FROM supervision_condition").fetchall() == [
        ("shop", "tamper")
    ]
    other.close()


def test_every_emitted_kind_is_in_the_vocabulary(tmp_path: Path) -> None:
    r = Rig(tmp_path / "g.db")
    r.send("shop", hb(F.TAMPER | F.SAFE_MODE), T0)
    r.send("shop", Test(TestKind.PERIODIC, 1, 3000), T0 + 1)
    r.sup.tick(T0 + 5000)
    for e in r.outlet.events:
        assert e["kind"] in KINDS
        assert e["code"] in (KINDS[e["kind"]].code, 601)


def test_start_up_line_names_units_not_installed_and_what_to_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.watch.supervision"):
        r = Rig(tmp_path / "g.db")
    line = next(m for m in caplog.messages if "not installed yet" in m)
    assert "shop, home, guard" in line
    assert "campusguard keygen UNIT" in line and "campusguard deploy UNIT" in line
    r.send("shop", hb(), T0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.watch.supervision"):
        r.restart(T0 + 60)
    line = next(m for m in caplog.messages if "not installed yet" in m)
    assert "home, guard" in line and "shop" not in line
