"""Which events text whom (issue 17 item 7): the site's ladder, the faults that need a
person, a unit offline for hours (and not one back within them)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.clock import ManualClock
from gateway.core.config import ConfigError, SmsSettings, parse_config
from gateway.core.contact_id import NEW, RESTORE
from gateway.notify.pager import SitePager
from gateway.notify.queue import Person, SmsQueue
from gateway.pipeline.ports import JournalledEvent
from gateway.watch.duty import DutyWatch
from gateway.watch.patrol import PatrolWatch
from tests.duty.helpers import MONDAY, TZ, RecordingOutlet, open_db, post, register
from tests.gateway.conftest import SITE, register_yaml
from tests.patrol.helpers import TERM_MONDAY, PatrolOutlet, open_journal
from tests.patrol.helpers import TZ as PATROL_TZ
from tests.patrol.helpers import register as patrol_register

T0 = 1_767_225_600.0


def config(tmp_path: Path, **sms: Any) -> Any:
    data = yaml.safe_load(register_yaml(tmp_path / "tty", [("shop-a", 257), ("guard-n", 300)]))
    data["sites"][0]["security_lead"] = {"name": "Zhang Wei", "phone": "+86 138 0000 0100"}
    data["sites"][0]["deputies"] = [
        {"name": "Li Na", "phone": "+86 138 0000 0101"},
        {"name": "Zhang Wei again", "phone": "+8613800000100"},  # same phone: once
    ]
    data["sms"] = {"port": str(tmp_path / "ttyGSM"), **sms}
    return parse_config(data, "boards.yaml")


def ev(kind: str, qualifier: int | None = None, **detail: Any) -> JournalledEvent:
    unit = None if kind == "escalation" else "shop-a"
    post = "north" if kind == "escalation" else None
    return JournalledEvent(f"gw-{kind}", SITE, kind, T0, unit, post, qualifier,
                           {"place": "East gate", **detail})  # fmt: skip


def rows(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT reason, state, next_at, people, text FROM sms_queue ORDER BY id"
    ).fetchall()


def test_the_ladder_is_the_lead_then_the_deputies(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.sms is not None and cfg.sms.retries == 3
    pager = SitePager(cfg, SmsQueue(sqlite3.connect(":memory:")), cfg.sms)
    assert pager.people(SITE) == [
        Person("Zhang Wei", "+8613800000100"),
        Person("Li Na", "+8613800000101"),
    ]


def test_events_that_need_a_person_queue_an_sms(tmp_path: Path) -> None:
    cfg = config(tmp_path, offline_after_h=3)
    db = sqlite3.connect(":memory:", isolation_level=None)
    woken: list[int] = []
    pager = SitePager(cfg, SmsQueue(db), cfg.sms, wake=lambda: woken.append(1))
    pager.on_event(ev("escalation", step="prompt_guard"))
    pager.on_event(ev("tamper", RESTORE))
    pager.on_event(ev("checkin"))
    assert rows(db) == []  # the guard's own prompt, a restore, a check-in: nobody texted
    pager.on_event(ev("escalation", step="security_lead", minutes_overdue=11.0))
    pager.on_event(ev("tamper", NEW))
    pager.on_event(ev("low_battery", NEW))
    pager.on_event(ev("offline", NEW))
    got = rows(db)
    assert [r[0] for r in got] == ["escalation", "tamper", "low_battery", "offline"]
    assert "11.0 分钟未签到" in got[0][4] and "East gate" in got[0][4]
    assert got[3][2] == T0 + 3 * 3600  # texted only if still offline 3 h later
    assert all('"+8613800000100"' in r[3] and '"+8613800000101"' in r[3] for r in got)
    assert len(woken) == 4
    pager.on_event(ev("online"))  # heard again in time: the offline SMS never goes
    assert [r[1] for r in rows(db)] == ["queued"] * 3 + ["cancelled"]


def test_faults_can_be_narrowed_and_bad_entries_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, faults=["escalation"])
    db = sqlite3.connect(":memory:", isolation_level=None)
    assert isinstance(cfg.sms, SmsSettings)
    SitePager(cfg, SmsQueue(db), cfg.sms).on_event(ev("tamper", NEW))
    assert rows(db) == []
    with pytest.raises(ConfigError, match="faults"):
        config(tmp_path, faults=["fire"])
    with pytest.raises(ConfigError, match="did you mean 'retry_s'"):
        config(tmp_path, retry=3)
    data = yaml.safe_load(register_yaml(tmp_path / "tty", [("shop-a", 257)]))
    data["sites"][0]["deputies"] = [{"name": "X", "phone": "ask the office"}]
    with pytest.raises(ConfigError, match="phone"):
        parse_config(data, "boards.yaml")


class PagingOutlet(RecordingOutlet):
    """The pipeline's event hook, as Pipeline.event calls it, over the duty tests' outlet."""

    def __init__(self, conn: sqlite3.Connection, pager: SitePager) -> None:
        super().__init__(conn)
        self.pager = pager

    def event(self, **kw: Any) -> None:
        super().event(**kw)
        e = self.events[-1]
        self.pager.on_event(JournalledEvent(
            f"gw-{len(self.events)}", e["site"], e["kind"], e["at"], e["unit"], e["post"],
            e["qualifier"], e["detail"],
        ))  # fmt: skip


def test_a_missed_checkin_texts_the_lead_at_the_security_lead_rung(tmp_path: Path) -> None:
    cfg = register([post([{"days": "mon-sun", "start": "00:00", "end": "24:00"}])])
    conn = open_db(tmp_path / "g.db")
    settings = SmsSettings(port="/dev/null")
    queue = SmsQueue(conn)
    outlet = PagingOutlet(conn, SitePager(cfg, queue, settings))
    watch = DutyWatch(cfg, outlet, conn, ManualClock(MONDAY), tz=TZ)
    t = MONDAY
    while t <= MONDAY + 3600 + 16 * 60:  # nobody checks in for an hour and 16 minutes
        watch.tick(t)
        t += 1.0
    got = conn.execute("SELECT created_at, reason, people, text FROM sms_queue").fetchall()
    steps = [e["detail"]["step"] for e in outlet.of("escalation")]
    assert steps == ["prompt_guard", "security_lead", "police"]
    # due at 1 h, missed after 5 min grace, the lead's rung 5 min later: one SMS, then
    assert len(got) == 1 and got[0][0] == MONDAY + 3600 + 10 * 60
    assert got[0][1] == "escalation" and "Lead Li" in got[0][2] and "未签到" in got[0][3]


def test_another_ladder_pages_its_own_people_first_and_can_withdraw(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    db = sqlite3.connect(":memory:", isolation_level=None)
    pager = SitePager(cfg, SmsQueue(db), cfg.sms)
    leader = Person("Patrol leader Wu", "+8613800000199")
    sid = pager.page(
        site=SITE, text="巡逻未开始", reason="patrol", ref="route-east", at=T0,
        due_at=T0 + 600, cancel_key="patrol:route-east", people=[leader, *pager.people(SITE)],
    )  # fmt: skip
    assert sid is not None
    people = json.loads(db.execute("SELECT people FROM sms_queue").fetchone()[0])
    assert [p[0] for p in people] == ["Patrol leader Wu", "Zhang Wei", "Li Na"]
    assert pager.withdraw("patrol:route-east", T0 + 60) == 1
    assert pager.page(site="nowhere", text="x", reason="r", ref=None, at=T0) is None


class PatrolPagingOutlet(PatrolOutlet):
    """The pipeline's event hook, as Pipeline.event calls it, over the patrol tests' outlet."""

    def __init__(self, conn: sqlite3.Connection, pager: SitePager) -> None:
        super().__init__(conn)
        self.pager = pager

    def event(self, **kw: Any) -> None:  # type: ignore[override]
        super().event(**kw)
        e = self.events[-1]
        self.pager.on_event(JournalledEvent(
            f"gw-{len(self.events)}", e["site"], e["kind"], e["at"], e["unit"], None,
            e["qualifier"], e["detail"], e["route"],
        ))  # fmt: skip


def test_a_patrol_window_without_a_round_texts_the_leader_then_the_school(
    tmp_path: Path,
) -> None:
    cfg = patrol_register()
    conn = open_journal(tmp_path / "g.db")
    pager = SitePager(cfg, SmsQueue(conn), SmsSettings(port="/dev/null"))
    outlet = PatrolPagingOutlet(conn, pager)
    clock = ManualClock(TERM_MONDAY)
    watch = PatrolWatch(cfg, outlet, conn, clock, tz=PATROL_TZ)
    end = TERM_MONDAY + 8 * 3600 + 12 * 60
    while (d := watch.next_deadline()) is not None and d <= end:
        clock.set(max(d, clock.now()))
        watch.tick(clock.now())
    got = conn.execute("SELECT created_at, reason, people, text FROM sms_queue").fetchall()
    steps = [e["detail"]["step"] for e in outlet.of("patrol_escalation")]
    assert steps == ["remind_leader", "security_lead", "police"]
    # the window's latest start is 08:00: the leader then, the school 5 min later, no more
    at = TERM_MONDAY + 8 * 3600
    assert [(r[0], r[1]) for r in got] == [
        (at, "patrol_remind_leader"),
        (at + 5 * 60, "patrol_security_lead"),
    ]
    assert [p[0] for p in json.loads(got[0][2])] == ["Officer Liu", "Lead Li"]
    assert [p[0] for p in json.loads(got[1][2])] == ["Lead Li"]
    assert "未按时开始巡逻" in got[0][3] and "run" in got[0][3]
