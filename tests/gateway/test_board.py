"""The duty room's board (gateway/dutyroom/board.py): the model and its drawing, on plain values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.core.timefmt import iso
from gateway.dutyroom.board import CLOSED_KEEP_S, Board, Target, event_text, paint

T = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()
P = "campusguard/school"


def alarm(n: int, update_no: int = 1, **kw: Any) -> dict[str, Any]:
    """An alarm payload as the gateway publishes it, incident ``n`` opened at T + n."""
    at = iso(T + n)
    d: dict[str, Any] = {
        "incident": f"gw-u{n}-1-0",
        "update": "new",
        "update_no": update_no,
        "site": "school",
        "unit": f"u{n}",
        "place": f"Place {n}",
        "kind": "panic",
        "first_press_at": at,
        "received_at": at,
        "presses": 1,
        "state": "open",
        "police_ack_at": None,
        "disposition": None,
    }
    d.update(kw)
    return d


def acked(n: int, update_no: int = 2, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "update": "police_ack",
        "state": "police_ack",
        "police_ack_at": iso(T + n + 5),
        **kw,
    }
    return alarm(n, update_no, **fields)


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def test_a_restarted_console_rebuilds_from_retained_topics_and_can_ack() -> None:
    b = Board()
    b.take(f"{P}/open/gw-u1-1-0", alarm(1), T + 10)
    b.take(f"{P}/open/gw-u2-1-0", acked(2), T + 10)
    assert b.resolve("1") == Target("incident", "gw-u1-1-0", "school")
    assert b.resolve("gw-u2-1-0") == Target("incident", "gw-u2-1-0", "school")
    # a reconnect forgets what the retained topics will say again, keeping the numbers
    b.reconnected()
    assert b.incidents == {}
    b.take(f"{P}/open/gw-u2-1-0", acked(2), T + 20)
    assert b.resolve("2") == Target("incident", "gw-u2-1-0", "school")
    assert b.resolve("1") is None  # it closed while we were away: not on the board


def test_waiting_first_then_newest_and_the_header_stays_on_a_24_line_terminal() -> None:
    b = Board()
    for n in range(1, 12):  # 11 incidents: the old ones acknowledged, the new ones not
        b.take(f"{P}/alarm/u{n}", alarm(n), T + n)
        if n <= 8:
            b.take(f"{P}/alarm/u{n}", acked(n), T + n + 5)
    b.take(f"{P}/alarm/u1", acked(1, 3, state="closed", update="closed"), T + 30)
    order = [r.number for r in b.ordered()]
    assert order[:3] == [11, 10, 9]  # waiting, newest first
    assert order[3:] == [8, 7, 6, 5, 4, 3, 2, 1]
    text = b.render(T + 40, tz=UTC, width=120, height=24)
    out = lines_of(text)
    assert len(out) <= 24
    assert out[0].startswith("CampusGuard duty room  2026-12-01 12:00:40 UTC")
    assert "3 waiting for acknowledgement" in out[1]
    assert out[3].lstrip().startswith("11  OPEN")  # the newest waiting one, right under it
    assert out[5].lstrip().startswith("9  OPEN")
    # with 14 lines the oldest rows give way, never the header or the waiting ones
    small = lines_of(b.render(T + 40, tz=UTC, width=120, height=10))
    assert len(small) <= 10 and small[0].startswith("CampusGuard")
    assert any(line.lstrip().startswith("9  OPEN") for line in small)
    assert any("more incidents below" in line for line in small)


def test_a_closed_incident_leaves_the_board_after_a_minute() -> None:
    b = Board()
    b.take(f"{P}/alarm/u1", acked(1), T)
    b.take(f"{P}/alarm/u1", acked(1, 3, state="closed", update="closed"), T + 10)
    assert "gw-u1-1-0" in b.incidents
    b.render(T + 10 + CLOSED_KEEP_S)
    assert "gw-u1-1-0" in b.incidents
    b.render(T + 11 + CLOSED_KEEP_S)
    assert "gw-u1-1-0" not in b.incidents
    # the empty retained message of a close does the same
    b.take(f"{P}/open/gw-u2-1-0", acked(2), T)
    b.take(f"{P}/open/gw-u2-1-0", None, T + 100)
    assert b.incidents["gw-u2-1-0"].data["state"] == "closed"
    b.prune(T + 101 + CLOSED_KEEP_S)
    assert "gw-u2-1-0" not in b.incidents


def test_duplicates_keep_the_newest_and_only_news_rings_the_bell() -> None:
    b = Board()
    assert b.take(f"{P}/alarm/u1", alarm(1), T).alert is True  # a new alarm: the bell
    assert b.take(f"{P}/open/gw-u1-1-0", alarm(1), T).alert is False  # its retained copy
    more = alarm(1, 2, update="presses", presses=3)
    assert b.take(f"{P}/alarm/u1", more, T).alert is False
    b.take(f"{P}/alarm/u1", alarm(1), T)  # a late duplicate of the first
    assert b.incidents["gw-u1-1-0"].data["presses"] == 3
    assert b.take(f"{P}/alarm/u2", acked(2), T).alert is False  # already answered


def test_duress_upgrade_of_an_acknowledged_incident_realerts() -> None:
    b = Board()
    b.take(f"{P}/alarm/u1", alarm(1), T)
    b.take(f"{P}/alarm/u1", acked(1), T + 5)
    b.take(f"{P}/alarm/u2", alarm(2), T + 6)
    assert [r.number for r in b.ordered()] == [2, 1]
    taken = b.take(f"{P}/alarm/u1", acked(1, 3, update="kind", kind="duress"), T + 7)
    assert taken.alert is True
    assert [r.number for r in b.ordered()] == [2, 1]  # both waiting now: newest first
    row = b.incidents["gw-u1-1-0"]
    assert row.waiting and row.realert
    assert "DURESS!" in b.render(T + 8, tz=UTC)
    b.acked("gw-u1-1-0")
    assert not b.incidents["gw-u1-1-0"].waiting
    assert "DURESS!" not in b.render(T + 9, tz=UTC)


def test_missed_checkin_shows_rung_and_action_and_can_be_acknowledged() -> None:
    b = Board()
    missed = {
        "site": "school",
        "post": "north-gate",
        "kind": "missed_checkin",
        "qualifier": 1,
        "at": iso(T),
        "detail": {"place": "North gate post", "minutes_overdue": 5.0},
    }
    assert b.take(f"{P}/duty/north-gate", missed, T).alert is True
    police = {
        **missed,
        "kind": "escalation",
        "qualifier": None,
        "detail": {
            "step": "police",
            "rung": 3,
            "of": 3,
            "place": "North gate post",
            "action": "Guard at North gate post has not checked in for 15.0 min; check the post.",
        },
    }
    assert b.take(f"{P}/duty/north-gate", police, T + 600).alert is True
    text = b.render(T + 900, tz=UTC, width=200)
    line = next(x for x in lines_of(text) if "north-gate" in x and "MISSED" in x)
    assert "P1" in line and "rung 3/3 police" in line and "check the post." in line
    assert "15m00s" in line  # missed 15 minutes ago
    assert b.resolve("P1") == Target("post", "north-gate", "school")
    assert b.resolve("p1") == Target("post", "north-gate", "school")
    b.take(f"{P}/duty/north-gate", {**missed, "kind": "acknowledged", "qualifier": 3}, T + 950)
    assert "MISSED" not in b.render(T + 960, tz=UTC, width=200)


def test_a_missed_checkin_is_rebuilt_from_the_retained_post_state() -> None:
    b = Board()
    state = {
        "post": "north-gate",
        "site": "school",
        "place": "North gate post",
        "escalating": True,
        "missed_deadline": iso(T),
        "rung": 2,
        "of": 3,
        "step": "security_lead",
    }
    b.take(f"{P}/post/north-gate/state", state, T + 60)
    text = b.render(T + 60, tz=UTC, width=200)
    assert "rung 2/3 security_lead" in text
    assert b.resolve("P1") == Target("post", "north-gate", "school")
    b.take(f"{P}/post/north-gate/state", {**state, "escalating": False, "rung": 0}, T + 90)
    assert "MISSED" not in b.render(T + 90, tz=UTC, width=200)


def test_tamper_open_reads_apart_from_its_restore() -> None:
    e = {"kind": "tamper", "qualifier": 1, "unit": "u1", "at": iso(T)}
    assert event_text(e) == "TAMPER: case opened"
    assert event_text({**e, "qualifier": 3}) == "tamper restored: case closed"
    assert event_text({"kind": "mains_lost", "qualifier": 3}) == "mains_lost restored"
    lost = {"kind": "arc_path", "qualifier": 1, "detail": {"receiver": "10.0.0.9:5000"}}
    assert event_text(lost) == "RECEIVING CENTRE 10.0.0.9:5000 LOST"
    assert event_text({**lost, "qualifier": 3}) == "receiving centre 10.0.0.9:5000 back"
    b = Board()
    b.take(f"{P}/event/u1", e, T)
    b.take(f"{P}/unit/u1/state", {"state": "online", "tamper": True, "place": "Shop"}, T)
    b.take(f"{P}/unit/u2/state", {"state": "offline", "since": iso(T - 60)}, T)
    b.take(f"{P}/unit/u3/state", {"state": "not_installed"}, T)
    text = b.render(T, tz=UTC, width=200)
    assert "TAMPER: case opened" in text and "TAMPER: case open " in text
    assert "units: 1 not installed, 1 offline, 1 online" in text
    assert "OFFLINE since 11:59:00" in text


def test_local_time_ages_and_disposition() -> None:
    b = Board()
    b.take(f"{P}/alarm/u1", acked(1, disposition="false_alarm"), T + 10)
    sh = b.render(T + 61, tz=ZoneInfo("Asia/Shanghai"))
    assert lines_of(sh)[0].startswith("CampusGuard duty room  2026-12-01 20:01:01 CST")
    row = next(x for x in lines_of(sh) if x.lstrip().startswith("1 "))
    assert " 1m00s " in row and " false " in row
    later = b.render(T + 71, tz=ZoneInfo("Asia/Shanghai"))
    assert "20:01:11" in later and " 1m10s " in later  # the clock and the ages move


def test_garbage_from_the_broker_never_breaks_the_board() -> None:
    """Whoever can publish can send anything: the board neither raises nor draws badly."""
    b = Board()
    b.take(f"{P}/alarm/u1", alarm(1), T)
    junk: list[Any] = [
        None,
        "text",
        42,
        [1, 2],
        {"incident": ["x"]},
        {"incident": "gw-u1-1-0", "update_no": "many", "presses": {"a": 1}},
        {"incident": "gw-u9", "presses": [1], "received_at": 5, "place": {"x": 1}},
        {"kind": "escalation", "post": "p", "detail": [1], "at": 7},
        {"kind": "tamper", "detail": "x", "qualifier": "q", "at": {"t": 1}},
        {"post": "p", "escalating": True, "rung": "three", "of": None},
        {"state": ["online"], "tamper": "yes", "since": 12},
        {"incident": "gw-u8", "received_at": 1e300, "first_press_at": float("nan"), "at": -1e300},
        {"kind": "escalation", "post": "q", "detail": {"missed_deadline": 1e308}, "at": 1e308},
        {"state": "offline", "since": float("inf"), "at": float("-inf")},
    ]
    topics = [
        f"{P}/alarm/u1",
        f"{P}/open/gw-u1-1-0",
        f"{P}/event/u1",
        f"{P}/duty/p",
        f"{P}/unit/u1/state",
        f"{P}/post/p/state",
        "campusguard/gateway/gw/status",
        "x",
        "",
    ]
    for topic in topics:
        for data in junk:
            b.take(topic, data, T)
            text = b.render(T + 1, tz=UTC, width=80, height=20)
            assert text.startswith("CampusGuard duty room")
    assert b.incidents["gw-u1-1-0"].data["update_no"] in (1, "many")


def test_paint_keeps_the_prompt_row_for_the_operator() -> None:
    full = paint("a\nb", 4, full=True, bell=True)
    assert full.startswith("\a\x1b[H\x1b[2J") and full.endswith("\x1b[4;1H> ")
    assert "\x1b[1;1Ha\x1b[K\x1b[2;1Hb\x1b[K\x1b[3;1H\x1b[K" in full
    update = paint("a\nb\nc\nd\ne", 4, full=False)
    # rows 1..3 only (the board is cut above the prompt), and the cursor goes back
    assert update == "\x1b7\x1b[1;1Ha\x1b[K\x1b[2;1Hb\x1b[K\x1b[3;1Hc\x1b[K\x1b8"
