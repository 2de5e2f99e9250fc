"""The journal's decisions (gateway/journal/store.py): outbox order, commit hooks, replay windows,
orphan cancels, unit boots, epochs (issue 19)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.errors import StoreError
from gateway.journal.store import OutboxRow, Store, default_db_path

from .helpers import T0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "gw.db")
    yield s
    s.close()


def enqueue(store: Store, n: int, incident: str | None = None) -> int:
    return store.enqueue(at=T0 + n, topic=f"t/{n}", payload=f"p{n}", incident=incident)


def test_outbox_is_handed_over_in_order_after_the_commit(store: Store) -> None:
    got: list[list[OutboxRow]] = []
    store.on_commit = got.append
    with store.transaction():
        a = enqueue(store, 1)
        with store.transaction():  # an inner block joins the outer transaction
            b = enqueue(store, 2, incident="inc-1")
        assert got == []  # nothing before the commit
        assert store.in_transaction
    assert not store.in_transaction
    assert got == [
        [
            OutboxRow(a, "t/1", "p1", 1, False, None),
            OutboxRow(b, "t/2", "p2", 1, False, "inc-1"),
        ]
    ]
    assert b > a
    c = enqueue(store, 3)  # outside a transaction: committed at once, handed over at once
    assert [r.id for r in got[1]] == [c]


def test_rolled_back_rows_are_never_handed_over(store: Store) -> None:
    got: list[list[OutboxRow]] = []
    store.on_commit = got.append
    failures = store.failures
    with pytest.raises(RuntimeError), store.transaction():
        enqueue(store, 1)
        with store.transaction():
            enqueue(store, 2)
        raise RuntimeError("fails")
    assert got == []
    assert store.pending_count() == 0
    assert store.failures == failures + 1
    assert not store.in_transaction
    with store.transaction():
        enqueue(store, 3)
    assert [[r.topic for r in rows] for rows in got] == [["t/3"]]


def test_inner_failure_rolls_back_the_outer_work(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        enqueue(store, 1)
        with store.transaction():
            raise RuntimeError("inner")
    assert store.pending_count() == 0


def test_a_failing_commit_hook_keeps_the_commit(store: Store) -> None:
    def broken(rows: list[OutboxRow]) -> None:
        raise ValueError("relay broke")

    store.on_commit = broken
    commits = store.commits
    with store.transaction():
        enqueue(store, 1)
    assert store.pending_count() == 1  # the relay finds it in the outbox later
    assert store.commits == commits + 1


def test_pending_pages_through_unsent_rows_in_id_order(store: Store) -> None:
    ids = [enqueue(store, n) for n in range(10)]
    assert [r.id for r in store.pending(4)] == ids[:4]
    assert [r.id for r in store.pending(4, after=ids[3])] == ids[4:8]
    assert [r.id for r in store.pending(100, after=ids[8])] == ids[9:]
    sent = store.pending(3, after=ids[1])  # rows 2, 3, 4 PUBACKed
    store.mark_acked([(r, T0 + 100) for r in sent])
    assert [r.id for r in store.pending(100)] == ids[:2] + ids[5:]
    assert store.pending_count() == 7
    assert store.pending(0) == []


def test_puback_sets_relayed_at_of_the_incident_once(store: Store) -> None:
    store.conn.execute(
        "INSERT INTO incidents(id, site, unit, place, kind, first_press_at, received_at,"
        " presses, state, last_epoch, last_seq)"
        " VALUES ('inc-1', 's', 'u', 'p', 'panic', 1, 1, 1, 'open', 1, 1)"
    )
    first = enqueue(store, 1, incident="inc-1")
    second = enqueue(store, 2, incident="inc-1")
    plain = enqueue(store, 3)
    rows = {r.id: r for r in store.pending(10)}
    store.mark_acked([(rows[first], T0 + 5), (rows[plain], T0 + 5)])
    store.mark_acked([(rows[second], T0 + 9)])
    relayed = store.conn.execute("SELECT relayed_at FROM incidents WHERE id = 'inc-1'")
    assert relayed.fetchone()[0] == T0 + 5
    sent = dict(store.conn.execute("SELECT id, sent_at FROM outbox").fetchall())
    assert sent == {first: T0 + 5, second: T0 + 9, plain: T0 + 5}
    commits = store.commits
    store.mark_acked([])
    assert store.commits == commits  # nothing to record: no transaction


def test_enqueue_keeps_qos_and_retain(store: Store) -> None:
    store.enqueue(at=T0, topic="s", payload="x", qos=0, retain=True)
    (row,) = store.pending(10)
    assert (row.qos, row.retain) == (0, True)


def test_replay_windows_round_trip_and_replace(store: Store) -> None:
    store.replay_save(10, [(1, 5, 0b101), (2, 7, 1)])
    store.replay_save(11, [(3, 3, 1)])
    store.replay_save(10, [(2, 9, 0b11)])
    assert store.replay_load_all() == {10: [(2, 9, 0b11)], 11: [(3, 3, 1)]}
    big = (1 << 64) - 1  # a full 64-bit bitmap survives the JSON round trip
    store.replay_save(12, [(0xFFFFFFFF, 0xFFFF, big)])
    assert store.replay_load_all()[12] == [(0xFFFFFFFF, 0xFFFF, big)]


def journal(store: Store, addr: int, seq: int, type_name: str, **body: int) -> None:
    store.journal_frame(
        at=T0 + seq,
        link="bus",
        unit=f"u{addr}",
        addr=addr,
        epoch=1,
        seq=seq,
        type_name=type_name,
        body=body,
    )


def test_a_frame_is_journalled_once(store: Store) -> None:
    journal(store, 10, 1, "ALARM", kind=0)
    with pytest.raises(sqlite3.IntegrityError):
        journal(store, 10, 1, "ALARM", kind=0)
    journal(store, 11, 1, "ALARM", kind=0)  # another unit, same counter


def test_frame_incident(store: Store) -> None:
    store.journal_frame(
        at=T0,
        link="bus",
        unit="u",
        addr=10,
        epoch=2,
        seq=3,
        type_name="ALARM",
        body={},
        incident="inc-7",
    )
    journal(store, 10, 4, "HEARTBEAT")
    assert store.frame_incident(10, 2, 3) == "inc-7"
    assert store.frame_incident(10, 1, 4) is None  # journalled, no incident
    assert store.frame_incident(10, 2, 4) is None  # not journalled
    assert store.frame_incident(11, 2, 3) is None


def test_orphan_cancels_are_those_whose_alarm_never_arrived(store: Store) -> None:
    journal(store, 10, 5, "CANCEL", ref_epoch=1, ref_seq=4)  # ALARM 4 missing
    journal(store, 10, 6, "CANCEL", ref_epoch=1, ref_seq=4)  # again, later
    journal(store, 10, 7, "ALARM", kind=0)
    journal(store, 10, 8, "CANCEL", ref_epoch=1, ref_seq=7)  # its ALARM is there
    journal(store, 11, 9, "CANCEL", ref_epoch=1, ref_seq=2)
    store.journal_frame(
        at=T0,
        link="bus",
        unit="u",
        addr=12,
        epoch=1,
        seq=3,
        type_name="CANCEL",
        body={"ref_epoch": 1, "ref_seq": 1},
        incident="inc-1",
    )  # applied to an incident: not an orphan
    assert store.orphan_cancels() == {(10, 1, 4): T0 + 5, (11, 1, 2): T0 + 9}


def test_boots_keep_the_last_eight_and_move_only_by_more_than_a_second(store: Store) -> None:
    store.boot_set(10, 1, 1000.0)
    store.boot_set(10, 1, 1000.9)  # heartbeat rounding: not a move
    assert store.boot_at(10, 1) == 1000.0
    store.boot_set(10, 1, 1002.0)
    assert store.boot_at(10, 1) == 1002.0
    for epoch in range(2, 11):
        store.boot_set(10, epoch, 1000.0 * epoch)
    store.boot_set(11, 1, 5.0)
    assert store.boot_at(10, 2) is None and store.boot_at(10, 1) is None
    assert store.boot_at(11, 1) == 5.0
    rows = store.conn.execute("SELECT epoch FROM unit_boot WHERE addr = 10").fetchall()
    assert sorted(e for (e,) in rows) == list(range(3, 11))  # epoch 10 - 8 and older gone
    assert store.boot_at(10, 3) == 3000.0


def test_boots_are_read_back_at_start(tmp_path: Path) -> None:
    s = Store(tmp_path / "gw.db")
    s.boot_set(10, 4, 123.5)
    s.close()
    again = Store(tmp_path / "gw.db")
    assert again.boot_at(10, 4) == 123.5
    again.close()


def test_downlink_epoch_counts_up_across_restarts(tmp_path: Path) -> None:
    s = Store(tmp_path / "gw.db")
    assert [s.bump_epoch(), s.bump_epoch()] == [1, 2]
    s.close()
    again = Store(tmp_path / "gw.db")
    assert again.bump_epoch() == 3
    assert again.meta_get("downlink_epoch") == "3"
    again.meta_set("downlink_epoch", str(0xFFFFFFFF))
    with pytest.raises(StoreError):
        again.bump_epoch()
    again.close()


def test_meta_and_events(store: Store) -> None:
    assert store.meta_get("nothing") is None
    assert store.meta_get("schema_version") == "1"
    store.meta_set("k", "1")
    store.meta_set("k", "2")
    assert store.meta_get("k") == "2"
    a = store.add_event(
        at=T0, site="s", kind="k", unit=None, post=None, code=None, qualifier=None, detail="{}"
    )
    b = store.add_event(
        at=T0, site="s", kind="k", unit="u", post="p", code=1, qualifier=3, detail="{}"
    )
    assert b == a + 1
    store.probe(T0)
    assert store.meta_get("alive_at") == repr(T0)


def test_commit_counters(store: Store) -> None:
    commits, unchecked = store.commits, store.unchecked
    with store.transaction():
        enqueue(store, 1)
    assert (store.commits, store.unchecked) == (commits + 1, unchecked + 1)
    assert store.wal.pending >= 0 and store.last_commit > 0


def test_an_unopenable_journal_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"dir\.db"):
        Store(tmp_path / "dir.db")


def test_default_db_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/cg:/var/lib/other")
    assert default_db_path() == Path("/var/lib/cg/gateway.db")
    monkeypatch.delenv("STATE_DIRECTORY")
    assert default_db_path() == Path("var/gateway.db")


def test_the_last_downlink_epoch_is_usable(store: Store) -> None:
    store.meta_set("downlink_epoch", str(0xFFFFFFFE))
    assert store.bump_epoch() == 0xFFFFFFFF
    with pytest.raises(StoreError):
        store.bump_epoch()


def test_a_boot_moved_by_exactly_a_second_is_not_rewritten(store: Store) -> None:
    store.boot_set(10, 1, 1000.0)
    store.boot_set(10, 1, 1001.0)
    assert store.boot_at(10, 1) == 1000.0
