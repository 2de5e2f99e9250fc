"""The journal's decisions (gateway/journal/store.py): outbox order, commit hooks, replay windows,
orphan cancels, unit boots, epochs (issue 19)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.errors import StoreError
from gateway.journal.store import (
    PRUNE_BATCH,
    RETENTION_DAYS,
    OutboxRow,
    Store,
    default_db_path,
    insert_event,
)

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


def test_an_event_written_without_a_detail_has_an_empty_json_one(store: Store) -> None:
    """insert_event is how benches and tests fill a journal without a gateway: what the
    reports read back as JSON must be JSON there too."""
    eid = insert_event(store.conn, at=T0, site="s", kind="k")
    (detail,) = store.conn.execute("SELECT detail FROM events WHERE id = ?", (eid,)).fetchone()
    assert json.loads(detail) == {}


def test_commit_counters(store: Store) -> None:
    commits, unchecked, timed = store.commits, store.unchecked, len(store.commit_s)
    with store.transaction():
        enqueue(store, 1)
    assert (store.commits, store.unchecked) == (commits + 1, unchecked + 1)
    assert store.wal.pending >= 0 and store.last_commit > 0
    assert len(store.commit_s) == timed + 1 and store.commit_s[-1] >= 0
    # the commit times behind the status's percentiles stay bounded over months of commits
    assert store.commit_s.maxlen == 4096


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


def test_a_new_journal_in_a_new_directory_counts_from_its_first_commit(tmp_path: Path) -> None:
    synced: list[int] = []
    s = Store(tmp_path / "var" / "lib" / "gw.db", fsync=synced.append)
    try:
        assert s.path.parent.is_dir()
        # the schema version is its one commit so far
        assert (s.commits, s.failures, s.unchecked, s.checkpoints) == (1, 0, 1, 0)
        assert synced  # the journal's own fsync, handed to the WAL's syncer
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert s.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        s.close()


def test_the_connection_belongs_to_the_loop_thread(store: Store) -> None:
    """Only the event loop's thread writes the journal; a stray thread is refused."""
    import threading

    errors: list[BaseException] = []

    def stray() -> None:
        try:
            store.conn.execute("SELECT 1")
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    t = threading.Thread(target=stray)
    t.start()
    t.join()
    assert len(errors) == 1


def test_a_checkpoint_copies_the_wal_into_the_database(store: Store, tmp_path: Path) -> None:
    for n in range(20):
        with store.transaction():
            enqueue(store, n)
    frames = store.conn.execute("PRAGMA wal_checkpoint(NOOP)").fetchone()
    assert frames is not None and frames[1] > 0
    assert store.checkpoint() == frames[1]
    assert store.checkpoints == 1
    copy = tmp_path / "copy.db"  # the database file alone, without its WAL
    copy.write_bytes(store.path.read_bytes())
    with sqlite3.connect(copy) as c:
        assert c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 20
    store.checkpoint()
    assert store.checkpoints == 2


def test_the_last_record_is_the_latest_frame_event_or_probe(store: Store) -> None:
    assert store.last_record_at() is None  # a new journal: nothing to compare a clock with
    with store.transaction():
        journal(store, 10, 5, "HEARTBEAT")  # at T0 + 5
    assert store.last_record_at() == T0 + 5
    with store.transaction():
        store.add_event(
            at=T0 + 9,
            site="s",
            kind="k",
            unit=None,
            post=None,
            code=None,
            qualifier=None,
            detail="",
        )
    assert store.last_record_at() == T0 + 9
    store.probe(T0 + 20.5)
    assert store.last_record_at() == T0 + 20.5
    with store.transaction():
        journal(store, 10, 30, "HEARTBEAT")
    assert store.last_record_at() == T0 + 30


def test_prune_takes_old_frames_and_delivered_rows_a_batch_at_a_time(store: Store) -> None:
    with store.transaction():
        for seq in range(1, 6):
            journal(store, 10, seq, "HEARTBEAT")  # frames at T0 + 1 .. T0 + 5
        for n in range(1, 6):
            enqueue(store, n)  # created at T0 + 1 .. T0 + 5
    store.mark_acked([(r, T0 + 10) for r in store.pending(4)])  # the first four delivered
    assert store.prune(T0 + 4, batch=2) == 4  # two frames, two delivered rows
    assert store.prune(T0 + 4, batch=2) == 2  # the third of each before T0 + 4
    assert store.prune(T0 + 4, batch=2) == 0
    c = store.conn
    assert [r[0] for r in c.execute("SELECT seq FROM frames ORDER BY id")] == [4, 5]
    # t/4 was delivered but is not older than the cut; t/5 was never delivered
    assert [r[0] for r in c.execute("SELECT topic FROM outbox ORDER BY id")] == ["t/4", "t/5"]


def test_reseal_rewrites_only_the_unsent_rows_it_is_given_new_text_for(store: Store) -> None:
    with store.transaction():
        for n in range(1, 5):
            enqueue(store, n)
    store.mark_acked([(r, T0 + 10) for r in store.pending(1)])  # t/1 went out as it was

    def reseal(row: OutboxRow) -> str | None:
        new = {"t/1": "sealed-1", "t/2": "sealed-2", "t/3": row.payload, "t/4": "sealed-4"}
        return new.get(row.topic)  # t/3: the same text, no change

    assert store.reseal_pending(reseal) == 2
    payloads = dict(store.conn.execute("SELECT topic, payload FROM outbox"))
    assert payloads == {"t/1": "p1", "t/2": "sealed-2", "t/3": "p3", "t/4": "sealed-4"}


def test_the_arc_feed_sees_each_message_itself_and_the_outbox_its_envelope(
    store: Store,
) -> None:
    seen: list[tuple[OutboxRow, float]] = []
    store.seal = lambda topic, body: f"sealed({topic}):{body}"
    store.on_enqueue = lambda row, at: seen.append((row, at))
    with store.transaction():
        rid = store.enqueue(at=T0 + 3, topic="t/a", payload="body", retain=True, incident="i1")
        store.enqueue(at=T0 + 4, topic="t/b", payload="")  # clears a retained topic: as it is
    assert seen == [
        (OutboxRow(rid, "t/a", "body", 1, True, "i1"), T0 + 3),
        (OutboxRow(rid + 1, "t/b", "", 1, False, None), T0 + 4),
    ]
    stored = dict(store.conn.execute("SELECT topic, payload FROM outbox"))
    assert stored == {"t/a": "sealed(t/a):body", "t/b": ""}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what a shell usually has: files 0644
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_journal_is_created_private(tmp_path: Path, loose_umask: None) -> None:
    """It holds owners' names and phone numbers: 0600 in a 0700 directory, WAL included."""
    db = tmp_path / "var" / "gateway.db"
    store = Store(db)
    try:
        with store.transaction():
            enqueue(store, 1)
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert _mode(p) == 0o600, p
        assert _mode(db.parent) == 0o700
    finally:
        store.close()
    # an existing journal that others could read is made private at the next start
    db.chmod(0o644)
    Store(db).close()
    assert _mode(db) == 0o600


def test_another_connections_commit_is_news_once_its_own_never(tmp_path: Path) -> None:
    """changed_elsewhere() tells the gateway to read the outbox again after another process
    (``campusguard report --deliver``) queued a row, once per such commit."""
    db = tmp_path / "gw.db"
    store = Store(db)
    try:
        assert store.changed_elsewhere() is False
        enqueue(store, 1)
        assert store.changed_elsewhere() is False  # its own commit
        other = sqlite3.connect(db)
        other.execute(
            "INSERT INTO outbox(created_at, topic, payload, qos, retain)"
            " VALUES (2, 't', '{}', 1, 1)"
        )
        other.commit()
        other.close()
        assert store.changed_elsewhere() is True
        assert store.changed_elsewhere() is False  # the same commit is news once
    finally:
        store.close()


def test_retention_and_pruning_batch_defaults(store: Store) -> None:
    assert RETENTION_DAYS == 90  # what README and --retention-days promise
    with store.transaction():
        for seq in range(1, PRUNE_BATCH + 2):
            journal(store, 10, seq, "HEARTBEAT")
    assert store.prune(T0 + 10_000) == PRUNE_BATCH == 200  # one short transaction's worth
    assert store.prune(T0 + 10_000) == 1
