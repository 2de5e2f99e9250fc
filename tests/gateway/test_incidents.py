"""The incident rules of gateway/pipeline/incidents.py over a real journal (issue 19).

Open, fold, upgrade to duress, coalesce press updates, chatter, cancel (also a CANCEL that
overtakes its ALARM), police acknowledgement, close, reload. ``_first_press_at`` is left
to its own tests (issue 11).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.core.config import Config
from gateway.journal.store import Store
from gateway.pipeline.incidents import (
    CHATTER_PRESSES,
    CHATTER_WINDOW_S,
    PRESS_UPDATE_S,
    AckTarget,
    IncidentBook,
    iso,
)
from protocol import AckState, AlarmKind, Checkin, Frame

from .helpers import (
    T0,
    EventLog,
    alarm,
    cancel,
    config,
    duress_checkin,
    journal,
    open_store,
    outbox,
    publications,
    updates,
)

PREFIX = "campusguard/v1"


class Book:
    """An incident book over a real journal, each call in its own transaction."""

    def __init__(self, store: Store, cfg: Config) -> None:
        self.store = store
        self.cfg = cfg
        self.events = EventLog()
        self.book = IncidentBook(store, cfg, prefix=PREFIX, event=self.events)
        self.shop = cfg.units["shop"]
        self.home = cfg.units.get("home", self.shop)

    def press(self, seq: int, at: float, unit: str = "shop", **kw: object) -> str:
        u = self.cfg.units[unit]
        frame, body = alarm(u, seq, **kw)  # type: ignore[arg-type]
        with self.store.transaction():
            iid = self.book.on_alarm(u, frame, body, at, "bus")
            journal(self.store, frame, at, iid)
        return iid

    def cancel(self, seq: int, ref_seq: int, at: float, unit: str = "shop") -> str | None:
        u = self.cfg.units[unit]
        frame, body = cancel(u, seq, ref_seq)
        with self.store.transaction():
            iid = self.book.on_cancel(u, frame, body, at)
            journal(self.store, frame, at, iid)
        return iid

    def duress(self, seq: int, at: float, unit: str = "shop") -> str:
        u = self.cfg.units[unit]
        frame = duress_checkin(u, seq)
        with self.store.transaction():
            iid = self.book.on_duress_checkin(u, frame, at, "bus")
            journal(self.store, frame, at, iid)
        return iid

    def police(
        self, iid: str, at: float, by: str | None = "desk 1"
    ) -> tuple[AckTarget | None, bool]:
        with self.store.transaction():
            return self.book.on_police_ack(iid, by, "genuine", at)

    def row(self, iid: str) -> dict[str, object]:
        cur = self.store.conn.execute("SELECT * FROM incidents WHERE id = ?", (iid,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


@pytest.fixture
def b(tmp_path: Path) -> Iterator[Book]:
    store = open_store(tmp_path / "gw.db")
    yield Book(store, config())
    store.close()


def test_alarm_opens_an_incident_and_tells_the_police_first(b: Book) -> None:
    iid = b.press(5, T0)
    assert iid == "gw-test-shop-1-5"
    rows = outbox(b.store)
    assert len(rows) == 1
    assert rows[0].topic == f"{PREFIX}/school/alarm/shop"
    assert (rows[0].qos, rows[0].incident) == (1, iid)
    (p,) = publications(b.store)
    assert p["update"] == "new" and p["update_no"] == 1
    assert (p["kind"], p["contact_id"], p["presses"], p["state"]) == ("panic", 120, 1, "open")
    assert (p["gateway"], p["site"], p["unit"], p["place"]) == (
        "gw-test",
        "school",
        "shop",
        "Shop at the gate",
    )
    assert (p["owner"], p["role"], p["link"]) == ("Ms. Shop", "shop", "bus")
    assert p["received_at"] == iso(T0) == "2026-01-01T00:00:00.000Z"
    assert p["police_ack_at"] is None and p["cancelled_at"] is None and p["closed_at"] is None
    row = b.row(iid)
    assert (row["state"], row["presses"], row["kind"], row["unit"]) == ("open", 1, "panic", "shop")
    assert b.book.unit_ack_state(iid) is AckState.RECEIVED


@pytest.mark.parametrize("kind", list(AlarmKind))
def test_each_kind_opens_with_its_contact_id(b: Book, kind: AlarmKind) -> None:
    b.press(1, T0, kind=kind)
    (p,) = publications(b.store)
    assert (p["kind"], p["contact_id"]) == (kind.name.lower(), kind.contact_id)


def test_presses_within_the_window_fold_into_one_incident(b: Book) -> None:
    window = b.shop.incident_window_s
    first = b.press(1, T0)
    assert b.press(2, T0 + 10) == first
    assert b.press(3, T0 + 10 + window) == first  # exactly the window after the last press
    assert b.row(first)["presses"] == 3
    assert b.press(4, T0 + 10 + 2 * window + 1) != first  # quiet for longer: a new incident
    assert b.row(first)["presses"] == 3


def test_units_have_their_own_incidents(b: Book) -> None:
    a = b.press(1, T0)
    h = b.press(1, T0 + 1, unit="home")
    assert a != h
    assert b.row(h)["presses"] == 1 and b.row(a)["presses"] == 1


def test_press_updates_are_coalesced_to_one_per_second(b: Book) -> None:
    iid = b.press(1, T0)
    b.press(2, T0 + 2)  # more than PRESS_UPDATE_S after the last publication: at once
    assert updates(b.store) == ["new", "presses"]
    b.press(3, T0 + 2.3)
    b.press(4, T0 + 2.6)  # within a second of it: wait for the tick
    assert updates(b.store) == ["new", "presses"]
    assert not b.book.tick(T0 + 2 + PRESS_UPDATE_S - 0.01)
    assert b.book.tick(T0 + 2 + PRESS_UPDATE_S)
    assert updates(b.store) == ["new", "presses", "presses"]
    last = publications(b.store)[-1]
    assert (last["presses"], last["update_no"], last["incident"]) == (4, 3, iid)
    assert not b.book.tick(T0 + 10)  # nothing more is due


def test_retransmitted_press_series_counts_once(b: Book) -> None:
    # the unit repeats its presses count within one series (same press_ms): take the max
    iid = b.press(1, T0, presses=1, press_ms=500)
    b.press(2, T0 + 1, presses=3, press_ms=500)
    b.press(3, T0 + 2, presses=2, press_ms=500)
    assert b.row(iid)["presses"] == 3
    b.press(4, T0 + 5, presses=2, press_ms=9000)  # a new series adds to the earlier ones
    assert b.row(iid)["presses"] == 5


def test_a_late_alarm_of_the_series_folds_in_instead_of_counting_its_presses_twice(
    b: Book,
) -> None:
    """Regression (bench/e2e.py under load, lost -27): a unit keeps its series open while
    its ALARM is not ACKed, so a second press may come after the gateway's window and
    carry the series' count (2); it opened a new incident with presses 2, and the police
    were told of 3 presses for 2. Another series after the window still opens anew."""
    window = b.shop.incident_window_s
    iid = b.press(1, T0, presses=1, press_ms=500)
    assert b.press(2, T0 + window + 30, presses=2, press_ms=500) == iid
    assert b.row(iid)["presses"] == 2
    assert publications(b.store)[-1]["presses"] == 2
    other = b.press(3, T0 + 3 * window, presses=1, press_ms=90_000)
    assert other != iid and b.row(other)["presses"] == 1
    # after a reboot (a new epoch) an equal press_ms is another series
    assert b.press(1, T0 + 5 * window, presses=2, press_ms=90_000, epoch=2) != other


def test_a_press_that_adds_nothing_publishes_nothing(b: Book) -> None:
    b.press(1, T0, presses=2, press_ms=500)
    b.press(2, T0 + 5, presses=2, press_ms=500)
    assert updates(b.store) == ["new"]


def test_duress_upgrades_panic_silent_and_other_only(b: Book) -> None:
    for n, kind in enumerate((AlarmKind.PANIC, AlarmKind.SILENT, AlarmKind.OTHER)):
        at = T0 + n * 1000
        iid = b.press(10 * n + 1, at, kind=kind)
        assert b.press(10 * n + 2, at + 1, kind=AlarmKind.DURESS) == iid
        p = publications(b.store)[-1]
        assert (p["update"], p["kind"], p["contact_id"]) == ("kind", "duress", 121)
        assert b.row(iid)["kind"] == "duress"
    for n, kind in enumerate((AlarmKind.MEDICAL, AlarmKind.FIRE), start=5):
        at = T0 + n * 1000
        iid = b.press(10 * n + 1, at, kind=kind)
        b.press(10 * n + 2, at + 5, kind=AlarmKind.DURESS)
        assert b.row(iid)["kind"] == kind.name.lower()
        assert publications(b.store)[-1]["update"] == "presses"


def test_duress_checkin_opens_a_silent_duress_incident_the_unit_never_shows(b: Book) -> None:
    iid = b.duress(1, T0, unit="home")
    (p,) = publications(b.store)
    assert (p["update"], p["kind"], p["incident"]) == ("new", "duress", iid)
    target, news = b.police(iid, T0 + 5)
    assert news and target is None  # no ACK state 2 for a silent duress
    assert b.book.unit_ack_state(iid) is AckState.RECEIVED
    assert b.book.police_acked(b.home, iid)


def test_duress_checkin_dates_its_first_press_by_the_unit_uptime(b: Book) -> None:
    """A long press at a guard post is dated like an alarm's first press: by the unit's
    own uptime against its boot, not by when the frame came in."""
    u = b.cfg.units["home"]
    with b.store.transaction():
        b.store.boot_set(u.addr, 1, T0 - 100.0)
    frame = Frame(u.addr, 1, 7, Checkin(0x01, 97_250))  # pressed 97.25 s after its boot
    with b.store.transaction():
        iid = b.book.on_duress_checkin(u, frame, T0, "bus")
    (p,) = publications(b.store)
    assert (p["incident"], p["kind"]) == (iid, "duress")
    assert (p["first_press_at"], p["first_press_source"]) == (iso(T0 - 2.75), "unit_uptime")
    assert b.row(iid)["first_press_at"] == T0 - 2.75


def test_duress_checkin_upgrades_what_is_open(b: Book) -> None:
    iid = b.press(1, T0)
    assert b.duress(2, T0 + 3) == iid
    assert b.row(iid)["kind"] == "duress"
    assert updates(b.store) == ["new", "kind"]
    assert b.duress(3, T0 + 4) == iid  # already duress: nothing new to say
    assert updates(b.store) == ["new", "kind"]


def test_chatter_is_reported_once_at_ten_presses_in_ten_seconds(b: Book) -> None:
    for n in range(CHATTER_PRESSES - 1):
        b.press(n + 1, T0 + n)
    assert "button_chatter" not in b.events.kinds()
    b.press(CHATTER_PRESSES, T0 + CHATTER_PRESSES - 1)
    assert b.events.kinds() == ["button_chatter"]
    e = b.events.events[0]
    assert (e["code"], e["qualifier"], e["unit"], e["site"]) == (380, 1, "shop", "school")
    assert e["detail"] == {
        "incident": "gw-test-shop-1-1",
        "presses": CHATTER_PRESSES,
        "window_s": CHATTER_WINDOW_S,
    }
    for n in range(CHATTER_PRESSES, 2 * CHATTER_PRESSES):
        b.press(n + 1, T0 + n)
    assert b.events.kinds() == ["button_chatter"]


def test_slow_presses_are_not_chatter(b: Book) -> None:
    for n in range(2 * CHATTER_PRESSES):
        b.press(n + 1, T0 + n * 1.2)  # ten presses span more than ten seconds
    assert b.events.kinds() == []


def test_cancel_closes_the_incident_and_a_new_press_opens_another(b: Book) -> None:
    iid = b.press(1, T0)
    assert b.cancel(2, 1, T0 + 3) == iid
    row = b.row(iid)
    assert (row["state"], row["cancelled_at"]) == ("cancelled", T0 + 3)
    p = publications(b.store)[-1]
    assert (p["update"], p["state"], p["cancelled_at"]) == ("cancelled", "cancelled", iso(T0 + 3))
    (e,) = b.events.events
    assert (e["kind"], e["code"], e["qualifier"], e["unit"]) == ("cancel", 406, 1, "shop")
    assert e["detail"] == {"ref_epoch": 1, "ref_seq": 1, "incident": iid}
    assert b.press(3, T0 + 4) != iid
    # the same cancel again (a new counter for an old ALARM): recorded, nothing republished
    n = len(publications(b.store))
    assert b.cancel(4, 1, T0 + 5) == iid
    assert len(publications(b.store)) == n
    assert b.row(iid)["cancelled_at"] == T0 + 3


def test_cancel_that_overtakes_its_alarm_applies_when_the_alarm_arrives(b: Book) -> None:
    assert b.cancel(8, 7, T0) is None
    assert b.events.events[0]["detail"] == {"ref_epoch": 1, "ref_seq": 7, "incident": None}
    iid = b.press(7, T0 + 1)
    assert updates(b.store, iid) == ["new", "cancelled"]
    row = b.row(iid)
    assert (row["state"], row["cancelled_at"]) == ("cancelled", T0)
    assert b.press(9, T0 + 2) != iid  # a cancelled incident takes no more presses


def test_orphan_cancel_survives_a_restart(b: Book, tmp_path: Path) -> None:
    b.cancel(8, 7, T0)
    again = Book(b.store, b.cfg)
    iid = again.press(7, T0 + 1)
    assert again.row(iid)["state"] == "cancelled"


def test_police_ack_is_news_once_and_targets_the_latest_alarm(b: Book) -> None:
    iid = b.press(1, T0)
    b.press(3, T0 + 2)
    b.press(2, T0 + 3)  # a late frame with a lower counter
    target, news = b.police(iid, T0 + 10)
    assert news
    assert target == AckTarget(b.shop.addr, 1, 3)
    row = b.row(iid)
    assert (row["state"], row["police_ack_at"], row["police_ack_by"]) == (
        "police_ack",
        T0 + 10,
        "desk 1",
    )
    assert row["disposition"] == "genuine"
    p = publications(b.store)[-1]
    assert (p["update"], p["state"], p["police_ack_by"]) == ("police_ack", "police_ack", "desk 1")
    assert p["police_ack_at"] == iso(T0 + 10)
    n = len(outbox(b.store))
    target2, news2 = b.police(iid, T0 + 20, by="desk 2")
    assert (target2, news2) == (target, False)  # the unit is told again, nobody else
    assert len(outbox(b.store)) == n
    assert b.row(iid)["police_ack_by"] == "desk 1"
    assert b.book.unit_ack_state(iid) is AckState.POLICE_ACK
    assert b.book.unit_ack_state(None) is AckState.RECEIVED


def test_police_ack_of_an_unknown_incident_does_nothing(b: Book) -> None:
    assert b.police("gw-test-shop-9-9", T0) == (None, False)
    assert outbox(b.store) == []
    assert not b.book.police_acked(b.shop, "gw-test-shop-9-9")


def test_police_ack_clears_a_pending_press_update(b: Book) -> None:
    iid = b.press(1, T0)
    b.press(2, T0 + 0.2)  # update due at T0 + 1
    b.police(iid, T0 + 0.5)
    assert updates(b.store) == ["new", "police_ack"]
    b.book.tick(T0 + 1)
    assert updates(b.store) == ["new", "police_ack"]  # the ack carried presses = 2
    assert publications(b.store)[-1]["presses"] == 2


def test_acknowledged_incident_closes_once_quiet_unacknowledged_stays_open(b: Book) -> None:
    window = b.shop.incident_window_s
    acked = b.press(1, T0)
    waiting = b.press(1, T0, unit="home")
    b.police(acked, T0 + 5)
    assert not b.book.tick(T0 + window)  # quiet for exactly the window: not yet
    assert b.book.tick(T0 + window + 1)
    assert b.row(acked)["state"] == "closed" and b.row(acked)["closed_at"] == T0 + window + 1
    assert updates(b.store, acked)[-1] == "closed"
    assert not b.book.tick(T0 + 100 * window)  # unacknowledged: stays on the duty room's screen
    assert b.row(waiting)["state"] == "open"
    assert b.press(2, T0 + window + 2) != acked


def test_press_on_an_acknowledged_incident_still_folds(b: Book) -> None:
    iid = b.press(1, T0)
    b.police(iid, T0 + 1)
    assert b.press(2, T0 + 2) == iid
    assert b.row(iid)["state"] == "police_ack" and b.row(iid)["presses"] == 2


def test_open_incidents_survive_a_restart(b: Book) -> None:
    iid = b.press(1, T0)
    b.press(2, T0 + 2)
    again = Book(b.store, b.cfg)
    assert again.press(3, T0 + 4) == iid
    assert again.row(iid)["presses"] == 3
    # the restarted book still knows the alarm counter for the police ack
    target, _ = again.police(iid, T0 + 5)
    assert target == AckTarget(b.shop.addr, 1, 3)


def test_reload_forgets_what_a_failed_commit_did(b: Book) -> None:
    iid = b.press(1, T0)
    u = b.shop
    frame, body = alarm(u, 2)
    with pytest.raises(RuntimeError), b.store.transaction():
        b.book.on_alarm(u, frame, body, T0 + 2, "bus")
        raise RuntimeError("the commit fails")
    b.book.reload()
    assert b.press(3, T0 + 3) == iid
    assert b.row(iid)["presses"] == 2


def test_closed_incidents_are_still_found_for_late_acks(b: Book) -> None:
    iid = b.press(1, T0)
    b.cancel(2, 1, T0 + 1)
    again = Book(b.store, b.cfg)  # not in memory: read back from the journal
    target, news = again.police(iid, T0 + 5)
    assert news and target == AckTarget(b.shop.addr, 1, 1)
    assert again.row(iid)["state"] == "cancelled"  # acknowledged, but stays cancelled


# Further cases the mutation run asked for (issue 19).


def test_chatter_already_reported_stays_reported_after_a_restart(b: Book) -> None:
    for n in range(CHATTER_PRESSES):
        b.press(n + 1, T0 + n)
    again = Book(b.store, b.cfg)
    for n in range(CHATTER_PRESSES, 3 * CHATTER_PRESSES):
        again.press(n + 1, T0 + n * 0.1)
    assert b.events.kinds() == ["button_chatter"] and again.events.kinds() == []


def test_chatter_window_includes_a_press_exactly_ten_seconds_back(b: Book) -> None:
    times = [*range(CHATTER_PRESSES - 1), CHATTER_WINDOW_S]
    for n, t in enumerate(times):
        b.press(n + 1, T0 + t)
    (e,) = b.events.events
    assert e["at"] == T0 + CHATTER_WINDOW_S


def test_press_exactly_a_second_after_the_last_update_is_published_at_once(b: Book) -> None:
    b.press(1, T0)
    b.press(2, T0 + 0.5)  # due at T0 + 1
    b.press(3, T0 + PRESS_UPDATE_S)  # a second after "new": published now, with 3 presses
    assert updates(b.store) == ["new", "presses"]
    assert publications(b.store)[-1]["presses"] == 3
    assert not b.book.tick(T0 + PRESS_UPDATE_S)  # and not a second time from the tick
    assert updates(b.store) == ["new", "presses"]


def test_cancel_drops_a_pending_press_update(b: Book) -> None:
    b.press(1, T0)
    b.press(2, T0 + 0.5)  # due at T0 + 1
    b.cancel(3, 1, T0 + 0.6)
    b.book.tick(T0 + 5)
    assert updates(b.store) == ["new", "cancelled"]


def test_duress_checkin_incident_counts_one_press_then_alarm_presses(b: Book) -> None:
    iid = b.duress(1, T0)
    (p,) = publications(b.store)
    assert (p["presses"], p["link"], p["state"]) == (1, "bus", "open")
    assert b.press(2, T0 + 1, presses=1, press_ms=2000) == iid
    assert b.row(iid)["presses"] == 1  # the alarm's first press is that same press
    b.press(3, T0 + 2, presses=2, press_ms=2000)
    assert b.row(iid)["presses"] == 2


def test_every_publication_carries_its_times(b: Book) -> None:
    iid = b.press(1, T0)
    b.police(iid, T0 + 1)
    b.book.tick(T0 + 1 + b.shop.incident_window_s + 1)
    new, ack, closed = publications(b.store)
    assert new["published_at"] == iso(T0) and new["first_press_source"] == "received"
    assert ack["published_at"] == iso(T0 + 1)
    assert closed["closed_at"] == closed["published_at"] == iso(T0 + 2 + b.shop.incident_window_s)
    assert [p["update_no"] for p in (new, ack, closed)] == [1, 2, 3]


def test_closing_an_old_incident_keeps_the_newer_one_open(b: Book) -> None:
    window = b.shop.incident_window_s
    old = b.press(1, T0)
    b.police(old, T0 + 1)
    new = b.press(2, T0 + window + 5)  # quiet long enough: a new incident, not yet ticked
    assert new != old
    b.book.tick(T0 + window + 6)  # closes the old one
    assert b.row(old)["state"] == "closed"
    assert b.press(3, T0 + window + 7) == new


def test_incident_of_a_unit_gone_from_the_register(b: Book) -> None:
    iid = b.press(1, T0, unit="home")
    units = {k: v for k, v in b.cfg.units.items() if k != "home"}
    gone = Book(b.store, replace(b.cfg, units=units))
    gone.police(iid, T0 + 0.2)
    p = publications(b.store)[-1]
    assert (p["update"], p["owner"], p["role"], p["place"]) == (
        "police_ack",
        None,
        None,
        "Home by the wall",
    )
    assert gone.book.tick(T0 + 0.5)  # no window to wait for: closed at once
    assert gone.row(iid)["state"] == "closed"


def test_memory_keeps_open_incidents_however_many_are_closed(b: Book) -> None:
    from gateway.pipeline.incidents import CACHE_CLOSED

    for n in range(2 * CACHE_CLOSED + 20):  # cancelled, acknowledged, then closed below
        at = T0 + 1 + n * 0.1
        iid = b.press(2 * n + 1, at)
        b.cancel(2 * n + 2, 2 * n + 1, at)
        b.police(iid, at)
    with b.store.transaction():
        assert b.book.tick(T0 + 200)
    waiting = b.press(1, T0 + 201, unit="home")  # a new incident: the cache is trimmed
    assert len(b.book._by_id) <= 2 * CACHE_CLOSED + 1
    assert b.press(2, T0 + 260, unit="home") == waiting  # still folds
    target, news = b.police(waiting, T0 + 261)
    assert news and target == AckTarget(b.home.addr, 1, 2)
    assert b.book.unit_ack_state(waiting) is AckState.POLICE_ACK
    assert b.row(waiting)["presses"] == 2
    first = "gw-test-shop-1-1"  # long evicted from memory, read back from the journal
    assert b.police(first, T0 + 262) == (AckTarget(b.shop.addr, 1, 1), False)
    assert b.row(first)["state"] == "closed"


def test_a_test_mode_incident_stays_a_test_after_a_restart(b: Book) -> None:
    from gateway.pipeline.testmode import set_mode

    with b.store.transaction():
        set_mode(b.store.conn, "unit", "shop", at=T0 - 1, until=T0 + 60, by="installer")
    iid = b.press(1, T0)
    assert publications(b.store)[0]["test"] is True
    again = Book(b.store, b.cfg)  # read back from the journal
    again.police(iid, T0 + 120)  # the test mode is over by now: the incident stays a test
    assert publications(b.store)[-1]["test"] is True and b.row(iid)["test"] == 1
    plain = b.press(1, T0 + 1, unit="home")
    assert publications(b.store)[-1]["incident"] == plain
    assert publications(b.store)[-1]["test"] is False


def test_police_ack_of_says_who_acknowledged_and_how(b: Book) -> None:
    iid = b.press(1, T0)
    assert b.book.police_ack_of(iid) is None  # not acknowledged yet
    assert b.book.police_ack_of("gw-test-shop-9-9") is None  # unknown
    b.police(iid, T0 + 1, by="desk 2")
    assert b.book.police_ack_of(iid) == ("desk 2", "genuine")
    again = Book(b.store, b.cfg)
    assert again.book.police_ack_of(iid) == ("desk 2", "genuine")


def test_the_board_retains_the_latest_copy_until_the_close_clears_it(b: Book) -> None:
    iid = b.press(1, T0)
    with b.store.transaction():  # the pipeline flushes it before its commit
        b.book.flush_board(T0)
    board = [r for r in outbox(b.store) if "/open/" in r.topic]
    assert [(r.topic, r.retain, r.qos) for r in board] == [(f"{PREFIX}/school/open/{iid}", True, 1)]
    assert json.loads(board[0].payload)["update"] == "new"
    b.police(iid, T0 + 1)
    with b.store.transaction():
        b.book.flush_board(T0 + 1)
    b.book.tick(T0 + 2 + b.shop.incident_window_s)  # flushes its own
    board = [r for r in outbox(b.store) if "/open/" in r.topic]
    assert [r.retain for r in board] == [True, True, True]
    assert json.loads(board[1].payload)["update"] == "police_ack"
    assert board[2].payload == ""  # closed: the retained copy is cleared


@pytest.mark.parametrize(
    ("uptime_ms", "press_ms", "ago_s", "source"),
    [
        (100_000, 97_250, 2.75, "unit_uptime"),
        (1_000, 0, 1.0, "unit_uptime"),  # pressed as it booted
        (0, 500, 0.0, "unit_uptime"),  # booted just now: ahead, clamped to now
        (10_000, 12_000, 0.0, "unit_uptime"),  # up to 2 s ahead (PRESS_AHEAD_MS): now
        (10_000, 12_001, 0.0, "received"),  # further ahead: not of this boot
        (10_000, 60_000, 0.0, "received"),  # 50 s ahead: the boot estimate cannot be right
        ((1 << 32) + 10_000, 5_000, 5.0, "unit_uptime"),  # uptime past the 2^32 ms wrap
        (3_000_000_000, 2_900_000_000, 100_000.0, "unit_uptime"),  # a press long ago
        # 2.5 s short of the wrap, press_ms 0: more than PRESS_AHEAD_MS ahead of this
        # cycle, so the press of this cycle's start, not of the next one
        ((1 << 32) - 2_500, 0, ((1 << 32) - 2_500) / 1000.0, "unit_uptime"),
    ],
)
def test_first_press_is_dated_exactly_by_the_unit_uptime(
    b: Book, uptime_ms: int, press_ms: int, ago_s: float, source: str
) -> None:
    with b.store.transaction():
        b.store.boot_set(b.shop.addr, 1, T0 - uptime_ms / 1000.0)
    iid = b.press(1, T0, press_ms=press_ms)
    (p,) = publications(b.store)
    assert p["first_press_source"] == source
    assert b.row(iid)["first_press_at"] == pytest.approx(T0 - ago_s, abs=1e-3)


def test_a_boot_estimate_in_the_future_is_not_used(b: Book) -> None:
    with b.store.transaction():
        b.store.boot_set(b.shop.addr, 1, T0 + 0.001)
    iid = b.press(1, T0, press_ms=0)
    assert publications(b.store)[0]["first_press_source"] == "received"
    assert b.row(iid)["first_press_at"] == T0


def test_publications_name_the_cameras_that_see_the_place(b: Book) -> None:
    from gateway.core.config import Camera

    cam = Camera("gate-cam", "school", "Gate", rtsp="rtsp://10.0.0.9/1")
    shop = replace(b.shop, cameras=("gate-cam",))
    cfg = replace(b.cfg, cameras={"gate-cam": cam}, units={**b.cfg.units, "shop": shop})
    book = Book(b.store, cfg)
    book.press(1, T0)
    (row,) = [r for r in outbox(b.store) if "/alarm/" in r.topic]
    assert row.payload == json.dumps(json.loads(row.payload), separators=(",", ":"))
    assert json.loads(row.payload)["cameras"] == [
        {"id": "gate-cam", "name": "Gate", "rtsp": "rtsp://10.0.0.9/1", "snapshot": False}
    ]


def test_an_acknowledged_incident_loaded_at_start_closes_once_quiet(b: Book) -> None:
    iid = b.press(1, T0)
    b.police(iid, T0 + 1)
    again = Book(b.store, b.cfg)
    assert not again.book.tick(T0 + b.shop.incident_window_s)
    assert again.book.tick(T0 + b.shop.incident_window_s + 1)
    assert again.row(iid)["state"] == "closed"


def test_a_publication_outside_a_transaction_queues_its_board_copy_at_once(b: Book) -> None:
    iid = b.press(1, T0)
    b.book.on_police_ack(iid, "desk 1", "genuine", T0 + 1)  # no transaction around it
    rows = b.store.conn.execute(
        "SELECT created_at, topic FROM outbox WHERE topic LIKE '%/open/%'"
    ).fetchall()
    assert rows == [(T0 + 1, f"{PREFIX}/school/open/{iid}")]


def test_the_documented_limits_in_seconds_and_presses(b: Book) -> None:
    """At most one press update a second; ten presses in ten seconds are chatter."""
    b.press(1, T0)
    b.press(2, T0 + 0.999)  # waits for the tick
    b.press(3, T0 + 1.0)  # a second after the last publication: at once
    assert updates(b.store) == ["new", "presses"]
    for n in range(4, 11):  # the tenth press, 9 s after the first
        b.press(n, T0 + n - 1)
    assert b.events.kinds() == ["button_chatter"]
    assert b.events.events[0]["detail"]["window_s"] == 10.0
