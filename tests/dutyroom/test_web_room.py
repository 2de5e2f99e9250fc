"""The web duty room's intake and state, without a broker: signed messages in, board out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import parse_config, register_topics
from gateway.dutyroom.web.auth import Who
from gateway.dutyroom.web.db import DutyDb
from gateway.dutyroom.web.room import Room
from gateway.dutyroom.web.views import health_html, plan_html, queue_html, reports_html
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_keys, gateway_kid, write_pair
from gateway.sim.fleet import FleetPlan, register_yaml
from tests.support.dutyroom import Clock

P = "campusguard"
SITE = "hexi-primary"
GW = "demo-gw"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    write_pair(tmp_path / "keys", gateway_kid(GW))
    return tmp_path / "keys"


def make_room(tmp_path: Path, keys: Path, clock: Clock, realert_s: float = 30.0) -> Room:
    return Room(
        DutyDb(tmp_path / "room.db"),
        [],
        gateway_keys(keys),
        None,
        now=clock,
        realert_s=realert_s,
    )


def alarm(n: int, update: str = "new", **kw: Any) -> dict[str, Any]:
    return {
        "incident": f"{GW}-shop-02-1-{n}",
        "update": update,
        "update_no": kw.pop("update_no", 1),
        "gateway": GW,
        "site": SITE,
        "unit": "shop-02",
        "place": "Shop at No. 2 Hexi Road 河西路2号",
        "kind": kw.pop("kind", "panic"),
        "state": "open",
        "presses": 1,
        "received_at": kw.pop("received_at", "2027-01-15T08:00:00.000Z"),
        "police_ack_at": None,
        **kw,
    }


def send(room: Room, signer: Signer, topic: str, body: dict[str, Any]) -> None:
    room.take(topic, signer.seal_obj(topic, body).encode())


OPERATOR = Who("li", "Officer Li", "operator", "t", "h")


def test_unsigned_and_forged_messages_are_dropped_and_change_nothing(
    tmp_path: Path, keys: Path
) -> None:
    room = make_room(tmp_path, keys, Clock())
    topic = f"{P}/{SITE}/alarm/shop-02"
    room.take(topic, json.dumps(alarm(1)).encode())  # not an envelope
    write_pair(tmp_path / "other", gateway_kid(GW))  # the right name, another key
    send(room, Signer.load(tmp_path / "other", gateway_kid(GW)), topic, alarm(2))
    room.take(topic, b"[" * 5000)
    room.take(topic, b"x" * 20_000)
    assert room.board.dropped == 4
    assert room.board.incidents == {} and room.db.history() == []


def test_unacknowledged_alarm_realerts_once_and_tells_the_supervisor(
    tmp_path: Path, keys: Path
) -> None:
    clock = Clock()
    room = make_room(tmp_path, keys, clock, realert_s=30.0)
    notices: list[dict[str, Any]] = []
    room.on_change = lambda sections, notice: notices.append(notice) if notice else None
    signer = Signer.load(keys, gateway_kid(GW))
    send(room, signer, f"{P}/{SITE}/alarm/shop-02", alarm(1))
    assert notices[-1]["sound"] == "alarm"
    clock.t += 29
    assert room.check_realerts() == []
    clock.t += 2
    iid = f"{GW}-shop-02-1-1"
    assert room.check_realerts() == [iid]
    assert notices[-1] == {
        "kind": "realert",
        "incident": iid,
        "sound": "realert",
        "supervisor": True,
    }
    assert room.check_realerts() == []  # once
    html = queue_html(room, OPERATOR, clock(), None)
    assert "RE-ALERT" in html and "realert" in html
    assert any(a[2] == "realert" for a in room.db.audit_rows())
    # an acknowledged one does not re-alert
    send(
        room,
        signer,
        f"{P}/{SITE}/alarm/shop-02",
        alarm(2, update_no=1, police_ack_at="2027-01-15T08:00:01.000Z"),
    )
    clock.t += 60
    assert room.check_realerts() == []


def test_the_board_comes_back_from_the_database_after_a_restart(tmp_path: Path, keys: Path) -> None:
    clock = Clock()
    room = make_room(tmp_path, keys, clock)
    signer = Signer.load(keys, gateway_kid(GW))
    send(room, signer, f"{P}/{SITE}/alarm/shop-02", alarm(1, kind="duress"))
    unit = {"unit": "shop-02", "site": SITE, "state": "offline", "gateway": GW}
    send(room, signer, f"{P}/{SITE}/unit/shop-02/state", unit)
    room.take_incident(OPERATOR, f"{GW}-shop-02-1-1")
    before = queue_html(room, OPERATOR, clock(), None)
    room.db.close()
    again = make_room(tmp_path, keys, clock)
    assert queue_html(again, OPERATOR, clock(), None) == before
    assert "DURESS" in before and "Officer Li" in before
    assert again.board.units["shop-02"]["state"] == "offline"


def test_each_update_is_shown_once_and_a_late_one_never_replaces_a_newer(
    tmp_path: Path, keys: Path
) -> None:
    """At least once, a retained copy and a persistent session's queue bring an update
    again; another topic or node may bring an older one after a newer: each
    (incident, update_no) once, and the newest stays what the room shows."""
    clock = Clock()
    room = make_room(tmp_path, keys, clock)
    signer = Signer.load(keys, gateway_kid(GW))
    changes: list[set[str]] = []
    room.on_change = lambda sections, notice: changes.append(sections)
    iid = f"{GW}-shop-02-1-1"
    alarm_topic, open_topic = f"{P}/{SITE}/alarm/shop-02", f"{P}/{SITE}/open/{iid}"
    acked = {"police_ack_at": "2027-01-15T08:00:05.000Z", "police_ack_by": "Station B"}
    first = alarm(1)
    third = alarm(1, "cancelled", update_no=3, state="cancelled", **acked)
    second = alarm(1, "police_ack", update_no=2, **acked)
    for topic, body in (
        (alarm_topic, first),
        (open_topic, first),  # its retained copy
        (open_topic, third),  # the newest came first on the other topic
        (alarm_topic, second),  # late
        (alarm_topic, third),
        (alarm_topic, second),  # re-sent
        (open_topic, {**second, "presses": 5}),  # a replayed number with other content
    ):
        send(room, signer, topic, body)
    rows = room.db.timeline(iid)
    assert [(what, detail) for _, what, _, detail in rows] == [
        ("new", ""),
        ("cancelled", ""),
        ("police_ack", "update 2 arrived after update 3: not applied"),
    ]
    assert room.db.incident(iid) == third
    assert room.board.incidents[iid].data == third
    assert sum(f"incident:{iid}" in c for c in changes) == 3


def test_a_close_seen_first_as_the_cleared_retained_copy_shows_once(
    tmp_path: Path, keys: Path
) -> None:
    """Regression: on a cluster's failover the cleared ``open/`` copy came before the
    ``closed`` update on ``alarm/``: the timeline said "closed" twice."""
    clock = Clock()
    room = make_room(tmp_path, keys, clock)
    signer = Signer.load(keys, gateway_kid(GW))
    iid = f"{GW}-shop-02-1-1"
    send(room, signer, f"{P}/{SITE}/alarm/shop-02", alarm(1))
    room.take(f"{P}/{SITE}/open/{iid}", b"")  # the retained copy cleared: closed
    closed = alarm(1, "closed", update_no=2, state="closed")
    send(room, signer, f"{P}/{SITE}/alarm/shop-02", closed)
    assert [what for _, what, _, _ in room.db.timeline(iid)] == ["new", "closed"]
    assert room.db.incident(iid) == closed


def test_register_topics_draw_the_site_plan_with_alarms_lit(tmp_path: Path, keys: Path) -> None:
    config = parse_config(yaml.safe_load(register_yaml(FleetPlan(units=4, links=1))))
    topics = register_topics(config)
    assert set(topics) == {
        f"{SITE}/register/site",
        *(f"{SITE}/register/unit/{u}" for u in config.units),
    }
    assert topics[f"{SITE}/register/unit/guard-01"]["position"] == [0.0, 40.0]
    assert "pins" not in topics[f"{SITE}/register/unit/guard-01"]
    room = make_room(tmp_path, keys, Clock())
    signer = Signer.load(keys, gateway_kid(GW))
    for leaf, body in topics.items():
        send(room, signer, f"{P}/{leaf}", body)
    send(room, signer, f"{P}/{SITE}/alarm/shop-02", alarm(1))
    svg = plan_html(room, OPERATOR, 0.0, None)
    assert svg.startswith("<svg") and svg.count("<circle") == 4
    assert "class='unit lit' id='plan-shop-02'" in svg
    assert "class='unit' id='plan-home-03'" in svg


def test_gateway_links_and_clock_show_on_the_health_board_and_survive_a_restart(
    tmp_path: Path, keys: Path
) -> None:
    clock = Clock()
    room = make_room(tmp_path, keys, clock)
    signer = Signer.load(keys, gateway_kid(GW))
    topic = f"{P}/{SITE}/event/{GW}"

    def event(kind: str, qualifier: int, **detail: Any) -> dict[str, Any]:
        return {
            "event": f"{GW}-{kind}",
            "gateway": GW,
            "site": SITE,
            "unit": None,
            "kind": kind,
            "qualifier": qualifier,
            "at": "2027-01-15T08:00:00.000Z",
            "detail": detail,
        }

    status = {"gateway": GW, "state": "online", "at": "2027-01-15T08:00:00.000Z"}
    send(room, signer, f"{P}/gateway/{GW}/status", status)
    send(room, signer, topic, event("link_down", 1, link="bus-a"))
    send(room, signer, topic, event("clock_unsynced", 1))
    send(room, signer, topic, event("link_down", 1, link="radio-b"))
    send(room, signer, topic, event("link_up", 3, link="radio-b"))
    html = health_html(room, OPERATOR, clock(), None)
    assert "link bus-a: serial link down" in html and "clock: clock not synchronised" in html
    assert "radio-b" not in html
    room.db.close()
    again = make_room(tmp_path, keys, clock)
    assert health_html(again, OPERATOR, clock(), None) == html
    send(again, signer, topic, event("clock_unsynced", 3))
    send(again, signer, topic, event("link_up", 3, link="bus-a"))
    assert "clock, links ok" in health_html(again, OPERATOR, clock(), None)


def test_a_monthly_report_larger_than_an_alarm_is_kept_to_read_and_download(
    tmp_path: Path, keys: Path
) -> None:
    room = make_room(tmp_path, keys, Clock())
    signer = Signer.load(keys, gateway_kid(GW))
    topic = f"{P}/{SITE}/report/2027-01"
    body = {
        "gateway": GW,
        "report": "monthly",
        "period": "2027-01",
        "site": {"site": SITE, "alarms": 12, "units": ["x" * 40] * 250},  # ~11 KB
    }
    send(room, signer, topic, body)
    assert room.board.dropped == 0
    html = reports_html(room, None)
    assert "monthly 2027-01" in html and "download" in html
    text = room.db.report(topic)
    assert text is not None and json.loads(text)["site"]["alarms"] == 12
    huge = {**body, "site": {"site": SITE, "units": ["x" * 40] * 500}}  # ~22 KB
    send(room, signer, f"{P}/{SITE}/report/2027-02", huge)
    assert room.board.dropped == 1 and room.db.report(f"{P}/{SITE}/report/2027-02") is None


@pytest.mark.parametrize("bad", [[1], [1, 2, 3], ["a", 2], [True, 2], [2e5, 0], "north"])
def test_a_bad_position_names_the_unit_and_the_field(bad: Any) -> None:
    from gateway.core.errors import ConfigError

    doc = yaml.safe_load(register_yaml(FleetPlan(units=2, links=1)))
    doc["units"][1]["position"] = bad
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert "shop-02" in str(err.value) and "position" in str(err.value)
    assert "[east, north]" in str(err.value)


def test_duress_and_silent_alarms_are_marked_in_the_queue(tmp_path: Path, keys: Path) -> None:
    clock = Clock()
    room = make_room(tmp_path, keys, clock)
    signer = Signer.load(keys, gateway_kid(GW))
    for n, kind in ((1, "silent"), (2, "duress"), (3, "panic")):
        at = f"2027-01-15T08:0{n}:00.000Z"
        send(room, signer, f"{P}/{SITE}/alarm/shop-02", alarm(n, kind=kind, received_at=at))
    html = queue_html(room, OPERATOR, clock(), None)
    assert html.count("SILENT 静默") == 1 and html.count("DURESS 胁迫") == 1
    rows = html.split("<tr class='incident")[1:]
    assert [r.split("data-incident='")[1].split("'")[0][-1] for r in rows] == ["3", "2", "1"]
