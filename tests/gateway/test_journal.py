"""The journal holds owners' names and phone numbers: private (0600), pruned after the
retention period (incidents and events stay for the reports), and copied consistently
while the gateway runs (``campusguard backup``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.journal.store import Store, insert_event
from tests.gateway.conftest import Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
DAY = 86400.0


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what a shell usually has: files 0644
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def _fill(store: Store, now: float, n: int, age_days: float, tag: str) -> None:
    """n frames, n delivered and 1 undelivered outbox rows, an incident, an event."""
    at = now - age_days * DAY
    with store.transaction() as c:
        for i in range(n):
            c.execute(
                "INSERT INTO frames(at, link, unit, addr, epoch, seq, type, body)"
                " VALUES (?, 'bus-a', 'shop-a', 257, ?, ?, 'HEARTBEAT', '{}')",
                (at, int(age_days), hash((tag, i)) & 0xFFFF),
            )
            c.execute(
                "INSERT INTO outbox(created_at, topic, payload, sent_at)"
                " VALUES (?, 't', '{\"phone\": \"+86 138\"}', ?)",
                (at, at + 1),
            )
        c.execute("INSERT INTO outbox(created_at, topic, payload) VALUES (?, 't', ?)", (at, tag))
        c.execute(
            "INSERT INTO incidents(id, site, unit, place, kind, first_press_at, received_at,"
            " presses, state, last_epoch, last_seq) VALUES (?, 's', 'shop-a', 'p', 'panic',"
            " ?, ?, 1, 'closed', 1, 1)",
            (f"inc-{tag}", at, at),
        )
        insert_event(c, at=at, site="s", unit="shop-a", kind="offline")


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_prune_drops_old_frames_and_delivered_messages_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "gateway.db")
    now = time.time()
    _fill(store, now, 1200, 120, "old")  # more than one batch
    _fill(store, now, 3, 10, "new")
    try:
        gone = 0
        while n := store.prune(now - 90 * DAY):
            gone += n
        assert gone == 2400
        c = store.conn
        assert c.execute("SELECT count(*) FROM frames").fetchone()[0] == 3
        # delivered old rows went; the undelivered one stays however old (never lost)
        assert c.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0] == 3
        assert {r[0] for r in c.execute("SELECT payload FROM outbox WHERE sent_at IS NULL")} == {
            "old",
            "new",
        }
        # what the reports read stays
        assert c.execute("SELECT count(*) FROM incidents").fetchone()[0] == 2
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    finally:
        store.close()


async def test_gateway_prunes_past_its_retention(
    site: Site, broker: Mosquitto, tmp_path: Path
) -> None:
    store = Store(site.db)
    now = time.time()
    _fill(store, now, 5, 40, "month")
    _fill(store, now, 5, 2, "recent")
    store.close()
    async with running_gateway(site, broker, retention_days=30) as gw:
        await until(lambda: gw.store.conn.execute("SELECT count(*) FROM frames").fetchone()[0] == 5)
        c = gw.store.conn
        assert c.execute("SELECT min(at) FROM frames").fetchone()[0] > now - 30 * DAY
        assert c.execute("SELECT count(*) FROM incidents").fetchone()[0] == 2


async def test_backup_copies_a_live_wal_journal(tmp_path: Path, loose_umask: None) -> None:
    db = tmp_path / "state" / "gateway.db"
    store = Store(db)  # the running gateway's connection: WAL, no automatic checkpoints
    now = time.time()
    try:
        _fill(store, now, 50, 1, "a")
        assert Path(f"{db}-wal").stat().st_size > 0  # committed, not yet in gateway.db
        naive = tmp_path / "naive.db"
        shutil.copyfile(db, naive)  # what `cp gateway.db` would keep
        to = tmp_path / "backup" / "journal.db"
        to.parent.mkdir()
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "backup",
            "--db",
            str(db),
            "--to",
            str(to),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # the gateway goes on writing while the copy is made
        more = 0
        done = asyncio.create_task(proc.communicate())
        while not done.done():
            _fill(store, now, 1, 0, f"w{more}")
            more += 1
            await asyncio.wait({done}, timeout=0.01)
        out, err = done.result()
        assert proc.returncode == 0, err.decode()
        assert "integrity ok" in out.decode()
    finally:
        store.close()
    assert _mode(to) == 0o600
    assert not Path(f"{to}-wal").exists()
    frames = _count(to, "SELECT count(*) FROM frames")
    assert 50 <= frames <= 50 + more  # a snapshot: the WAL's commits are in it
    assert _count(to, "SELECT count(*) FROM incidents") == frames - 49  # consistent
    conn = sqlite3.connect(to)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with pytest.raises(sqlite3.DatabaseError):
        _count(naive, "SELECT count(*) FROM frames")  # without its WAL: not even a schema


def test_backup_names_a_missing_journal(tmp_path: Path) -> None:
    import subprocess

    res = subprocess.run(
        [CAMPUSGUARD, "backup", "--db", str(tmp_path / "no.db"), "--to", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    no = tmp_path / "no.db"
    assert res.stderr.strip() == f"campusguard backup: --db {no}: no journal there (give --db PATH)"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (as `sudo campusguard backup`)")
def test_backup_of_a_stopped_journal_leaves_its_files_to_the_service_user(tmp_path: Path) -> None:
    import subprocess

    db = tmp_path / "gateway.db"
    Store(db).close()
    os.chown(db, 65534, 65534)  # the service's (dynamic) user owns its journal
    res = subprocess.run(
        [CAMPUSGUARD, "backup", "--db", str(db), "--to", str(tmp_path / "copy.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    for p in tmp_path.glob("gateway.db*"):
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p
