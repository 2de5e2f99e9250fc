"""The journal's durability: nothing waits on the disk but what must (journal/walsync.py)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from gateway.journal.store import Store
from protocol import AckState, Alarm, AlarmKind
from tests.gateway.conftest import Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled


class Gate:
    """An fsync that the test can hold until it opens the gate (and that counts calls)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()  # the store's start-up sync goes through
        self.entered = threading.Event()
        self.calls = 0
        self.error: OSError | None = None

    def hold(self) -> None:
        self.open.clear()
        self.entered.clear()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if not self.open.wait(10):
            raise OSError("gate never opened")
        if self.error is not None:
            raise self.error
        os.fsync(fd)


def commit(store: Store, key: str) -> None:
    store.meta_set(key, "x")


async def test_callback_waits_for_the_fsync_of_its_commit(tmp_path: Path) -> None:
    gate = Gate()
    store = Store(tmp_path / "j.db", fsync=gate)
    try:
        gate.hold()
        commit(store, "a")
        done = asyncio.Event()
        store.when_durable(done.set)
        assert await asyncio.to_thread(gate.entered.wait, 5)
        await asyncio.sleep(0)
        assert not done.is_set() and store.wal.pending == 1
        gate.open.set()
        await asyncio.wait_for(done.wait(), scaled(5))
        assert store.wal.pending == 0
        # nothing new committed: at once, without an fsync
        calls = gate.calls
        now: list[bool] = []
        store.when_durable(lambda: now.append(True))
        assert now == [True] and gate.calls == calls
    finally:
        store.close()


async def test_commits_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    gate = Gate()
    store = Store(tmp_path / "j.db", fsync=gate)
    try:
        gate.hold()
        first = asyncio.Event()
        commit(store, "a")
        store.when_durable(first.set)
        assert await asyncio.to_thread(gate.entered.wait, 5)
        calls = gate.calls
        later = [asyncio.Event() for _ in range(5)]
        for i, ev in enumerate(later):
            commit(store, f"b{i}")  # while the first fsync is under way
            store.when_durable(ev.set)
        gate.open.set()
        await asyncio.wait_for(asyncio.gather(first.wait(), *(e.wait() for e in later)), 5)
        assert gate.calls == calls + 1  # one more fsync for the five
    finally:
        store.close()


async def test_failed_fsync_withholds_acks_for_good(tmp_path: Path) -> None:
    gate = Gate()
    store = Store(tmp_path / "j.db", fsync=gate)
    try:
        gate.error = OSError(5, "Input/output error")
        commit(store, "a")
        called: list[str] = []
        store.when_durable(lambda: called.append("a"))
        async with asyncio.timeout(scaled(5)):
            while store.wal.failed is None:
                await asyncio.sleep(0.01)
        assert "Input/output error" in store.wal.failed
        gate.error = None  # a later fsync would succeed, but the pages may be gone
        commit(store, "b")
        store.when_durable(lambda: called.append("b"))
        # an absence: a healthy WalSync calls back on the loop's next turns after its
        # fsync thread returns (the first test above: well within 50 ms on an idle host);
        # a busy host only makes a wrong callback later, never a right one wrong
        await asyncio.sleep(0.05)
        assert called == [] and store.wal.syncs == 1
    finally:
        store.close()


async def test_replaced_wal_file_is_reopened(tmp_path: Path) -> None:
    synced: list[int] = []

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        os.fsync(fd)

    store = Store(tmp_path / "j.db", fsync=fsync)
    try:
        wal = Path(f"{store.path}-wal")
        first = wal.stat().st_ino
        # what a second process opening and closing the journal could do to the file
        copy = wal.read_bytes()
        wal.unlink()
        wal.write_bytes(copy)
        commit(store, "a")
        store.sync()
        assert synced[0] == first and synced[-1] == wal.stat().st_ino != first
    finally:
        store.close()


async def test_alarm_reaches_police_before_the_fsync_and_unit_ack_after(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    """The relay does not wait for the disk; the unit's ACK does."""
    unit = site.unit("shop-a", epoch=3)
    gate = Gate()
    gate.hold()
    async with running_gateway(site, broker) as gw:
        gw.store.wal.fsync = gate
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1000))
        await police.wait_for(lambda: bool(police.alarms()), timeout=3)
        assert gate.entered.is_set()
        assert site.port.acks_for(frame) == []  # journalled, published, not yet on disk
        gate.open.set()
        await site.port.wait_ack(frame, AckState.RECEIVED, timeout=3)
        assert police.alarms()[0]["incident"].endswith("-shop-a-3-0")
