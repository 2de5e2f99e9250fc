"""gateway/arc/transmitter.py: the DC-09 transmitter against pysiaalarm's TCP server and our
own receivers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent

from gateway.arc import dc09
from gateway.arc.dc09 import Frame, Token
from gateway.arc.queue import ArcQueue
from gateway.arc.transmitter import ArcSettings, Endpoint, Transmitter
from gateway.journal.store import Store

KEY = "ABCDEFGHIJKLMNOP"  # panel style: 16 characters taken as bytes
RAW = dc09.parse_key(KEY)
WAIT_S = 30.0  # a generous ceiling on waits: failing tests end, passing ones are fast


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "journal.db", fsync=lambda fd: None)
    yield s
    s.close()


@dataclass
class Events:
    """What the transmitter reported through the Outlet."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def event(self, **kw: Any) -> None:
        self.seen.append(kw)

    def signal(self, *a: Any) -> None:  # pragma: no cover - Outlet's other half
        pass

    def kinds(self) -> list[tuple[str, int, int]]:
        return [(e["kind"], e["code"], e["qualifier"]) for e in self.seen]


def queue_alarms(q: ArcQueue, n: int, *, code: int = 120, account: str = "1234") -> list[int]:
    return [
        q.add(arc="arc", at=time.time(), account=account, qualifier=1, code=code, grp=1, zone=z)
        for z in range(1, n + 1)
    ]


def settings(*ports: int, key: bytes | None = RAW, **kw: Any) -> ArcSettings:
    base: dict[str, Any] = {
        "ack_timeout_s": 1.0,
        "connect_timeout_s": 1.0,
        "null_interval_s": 0,
        "failover_after": 2,
        "retry_s": 0.3,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
    }
    paths = tuple(Endpoint("127.0.0.1", p, receiver="1", line="1", key=key) for p in ports)
    return ArcSettings("arc", paths, **(base | kw))


@contextlib.asynccontextmanager
async def running(tx: Transmitter) -> AsyncIterator[Transmitter]:
    task = asyncio.create_task(tx.run())
    try:
        yield tx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(tx: Transmitter, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        await tx.wait_until(predicate)


async def sent(tx: Transmitter, q: ArcQueue) -> None:
    """Run ``tx`` until nothing waits in ``q`` (each alarm delivered or given up)."""
    async with running(tx):
        tx.wake()
        await until(tx, lambda: q.waiting("arc") == 0)


# -- pysiaalarm: an independent receiver ------------------------------------------------


@contextlib.asynccontextmanager
async def pysia_server(
    got: asyncio.Queue[SIAEvent], key: str | None = KEY, port: int = 0
) -> AsyncIterator[int]:
    async def on_event(ev: SIAEvent) -> None:
        await got.put(ev)

    client = SIAClient("127.0.0.1", port, [SIAAccount("1234", key)], on_event)
    await client.async_start()
    assert client.server is not None
    try:
        yield client.server.sockets[0].getsockname()[1]
    finally:
        await client.async_stop()


async def test_pysiaalarm_gets_every_alarm_encrypted_in_order(store: Store) -> None:
    q = ArcQueue(store)
    got: asyncio.Queue[SIAEvent] = asyncio.Queue()
    async with pysia_server(got) as port:
        ids = queue_alarms(q, 20)
        tx = Transmitter(settings(port), q)
        await sent(tx, q)
    events = [got.get_nowait() for _ in range(got.qsize())]
    assert [(e.code, e.ri, e.partition, e.encrypted) for e in events] == [
        ("PA", f"{z:03d}", "01", True) for z in range(1, 21)
    ]
    seqs = [int(e.sequence) for e in events]
    assert seqs == list(range(1, 21))
    rows = store.conn.execute("SELECT id, seq, acked_by FROM arc_queue ORDER BY id").fetchall()
    assert rows == [(i, s, f"127.0.0.1:{port}") for i, s in zip(ids, seqs, strict=True)]


def test_prune_keeps_what_waits_and_what_was_refused(store: Store) -> None:
    q = ArcQueue(store)
    old = [
        q.add(arc="arc", at=100.0, account="1234", qualifier=1, code=120, grp=1, zone=z)
        for z in (1, 2, 3)
    ]
    new = q.add(arc="arc", at=900.0, account="1234", qualifier=1, code=120, grp=1, zone=4)
    q.acked(old[0], 101.0, "p")
    q.give_up(old[1], 101.0, "DUH")
    q.acked(new, 901.0, "p")
    assert q.prune(before=500.0) == 1
    assert [r[0] for r in store.conn.execute("SELECT id FROM arc_queue ORDER BY id")] == [
        old[1],
        old[2],
        new,
    ]


async def test_sia_dcs_receiver_gets_sia_codes(store: Store) -> None:
    q = ArcQueue(store)
    got: asyncio.Queue[SIAEvent] = asyncio.Queue()
    async with pysia_server(got) as port:
        q.add(arc="arc", at=0.0, account="1234", qualifier=1, code=121, grp=3, zone=7)
        q.add(arc="arc", at=0.0, account="1234", qualifier=3, code=302, grp=3, zone=7)
        tx = Transmitter(settings(port, token=Token.SIA_DCS), q)
        await sent(tx, q)
    events = [got.get_nowait() for _ in range(got.qsize())]
    assert [(e.message_type.value, e.code, e.ri, e.message) for e in events] == [
        ("SIA-DCS", "HA", "3", "007"),
        ("SIA-DCS", "YR", "3", "007"),
    ]


async def test_sequence_numbers_survive_a_restart(tmp_path: Path) -> None:
    s = Store(tmp_path / "j.db", fsync=lambda fd: None)
    assert [ArcQueue(s).take_seq("arc") for _ in range(3)] == [1, 2, 3]
    s.close()
    s = Store(tmp_path / "j.db", fsync=lambda fd: None)
    assert ArcQueue(s).take_seq("arc") == 4
    s.conn.execute("UPDATE arc_seq SET seq = 9999")
    assert ArcQueue(s).take_seq("arc") == 1  # 0001-9999, never 0000
    s.close()


async def test_nak_from_pysiaalarm_corrects_our_clock_for_that_receiver(store: Store) -> None:
    q = ArcQueue(store)
    got: asyncio.Queue[SIAEvent] = asyncio.Queue()
    async with pysia_server(got) as port:
        queue_alarms(q, 2)
        # our "real" clock is 5 minutes slow: pysiaalarm NAKs (window 40 s early, 20 s late)
        tx = Transmitter(settings(port), q, wall=lambda: time.time() - 300)
        await sent(tx, q)
    assert tx.counts["nak"] == 1  # the second message already carried the corrected time
    assert abs(tx.paths[0].offset - 300) < 5
    assert got.qsize() == 2


async def test_null_supervision_reaches_pysiaalarm(store: Store) -> None:
    q = ArcQueue(store)
    got: asyncio.Queue[SIAEvent] = asyncio.Queue()
    async with pysia_server(got) as port:
        tx = Transmitter(settings(port, null_interval_s=0.05), q, null_account="1234")
        async with running(tx):
            await until(tx, lambda: tx.counts["NULL:ack"] >= 3)
            ev = await asyncio.wait_for(got.get(), WAIT_S)
    assert (ev.message_type.value, ev.code) == ("NULL", "RP")


# -- our own receiver, scripted ---------------------------------------------------------

Reply = Callable[[Frame, int], Awaitable[bytes | None]]


class Receiver:
    """A DC-09 receiver whose answer to each frame a test writes (None: stay silent)."""

    def __init__(self, reply: Reply, key: bytes | None = RAW) -> None:
        self.reply = reply
        self.key = key
        self.frames: list[Frame] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        self.server = None

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.append(w)
        try:
            while raw := await r.readuntil(b"\r"):
                f = dc09.decode(raw, self.key)
                self.frames.append(f)
                out = await self.reply(f, len(self.frames))
                if out is not None:
                    w.write(out)
                    await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    def messages(self) -> list[Frame]:
        return [f for f in self.frames if f.token is not Token.NULL]


def ack(
    f: Frame,
    key: bytes | None = RAW,
    *,
    seq: int | None = None,
    account: str | None = None,
    age_s: float = 0.0,
) -> bytes:
    return Frame(
        Token.ACK,
        f.seq if seq is None else seq,
        account or f.account,
        line=f.line,
        receiver=f.receiver,
        timestamp=time.time() - age_s,
    ).encode(key)


async def always_ack(f: Frame, n: int) -> bytes:
    return ack(f)


async def scripted(
    store: Store, reply: Reply, alarms: int, **kw: Any
) -> tuple[Receiver, Transmitter]:
    """``alarms`` alarms sent (``kw``: settings) to a receiver that answers as ``reply``
    says, until none waits; the receiver, stopped, and the transmitter."""
    rx = Receiver(reply)
    q = ArcQueue(store)
    tx = Transmitter(settings(await rx.start(), **kw), q)
    queue_alarms(q, alarms)
    await sent(tx, q)
    await rx.stop()
    return rx, tx


async def test_nak_without_timestamp_then_ack(store: Store) -> None:
    async def reply(f: Frame, n: int) -> bytes:
        if n == 1:
            return Frame(Token.NAK, 0, None, timestamp=None).encode()
        return ack(f)

    rx, _ = await scripted(store, reply, 1)
    assert [f.seq for f in rx.messages()] == [1, 1]  # a repeat keeps its sequence number


async def test_duh_is_given_up_and_reported_and_does_not_block_the_queue(store: Store) -> None:
    async def reply(f: Frame, n: int) -> bytes:
        if "999" in f.data.split()[0]:  # our receiver does not know event 999
            return Frame(Token.DUH, f.seq, f.account, line=f.line, receiver=f.receiver).encode()
        return ack(f)

    rx = Receiver(reply)
    q = ArcQueue(store)
    events = Events()
    tx = Transmitter(settings(await rx.start(), duh_limit=3), q, outlet=events, site="s")
    bad = queue_alarms(q, 1, code=999)[0]
    good = queue_alarms(q, 1)[0]
    await sent(tx, q)
    await rx.stop()
    assert [f.data for f in rx.messages()] == ["#1234|1999 01 001"] * 3 + ["#1234|1120 01 001"]
    row = store.conn.execute("SELECT failure, acked_at FROM arc_queue WHERE id = ?", (bad,))
    assert row.fetchone() == ("DUH", None)
    assert store.conn.execute(
        "SELECT acked_at IS NOT NULL FROM arc_queue WHERE id = ?", (good,)
    ).fetchone() == (1,)
    assert events.kinds() == [("arc_rejected", 354, 1)]


async def test_a_replayed_old_ack_is_not_a_delivery(store: Store) -> None:
    async def reply(f: Frame, n: int) -> bytes:
        # the ACK an attacker recorded a week ago for the same sequence number
        return ack(f, age_s=7 * 86400) if n == 1 else ack(f)

    rx, tx = await scripted(store, reply, 1, ack_timeout_s=0.3)
    assert [f.seq for f in rx.messages()] == [1, 1]
    assert tx.counts["ack_stale"] == 1


async def test_a_message_that_cannot_be_framed_is_given_up_not_a_crash(store: Store) -> None:
    rx = Receiver(always_ack)
    q = ArcQueue(store)
    events = Events()
    tx = Transmitter(settings(await rx.start()), q, outlet=events, site="s")
    bad = q.add(arc="arc", at=0.0, account="1234", qualifier=1, code=1000, grp=1, zone=1)
    queue_alarms(q, 1)
    await sent(tx, q)
    await rx.stop()
    assert [f.data for f in rx.messages()] == ["#1234|1120 01 001"]
    failure = store.conn.execute("SELECT failure FROM arc_queue WHERE id = ?", (bad,)).fetchone()
    assert "out of range" in failure[0]
    assert events.kinds() == [("arc_rejected", 354, 1)]


@pytest.mark.parametrize("wrong", ["seq", "account", "plain"])
async def test_an_ack_that_does_not_match_is_not_a_delivery(store: Store, wrong: str) -> None:
    async def reply(f: Frame, n: int) -> bytes:
        if n == 1:
            if wrong == "seq":
                return ack(f, seq=f.seq + 1)
            if wrong == "account":
                return ack(f, account="9999")
            return ack(f, None)  # not encrypted: anyone could have sent it
        return ack(f)

    rx, tx = await scripted(store, reply, 1, ack_timeout_s=0.3)
    assert [f.seq for f in rx.messages()] == [1, 1]
    assert tx.counts["ack_mismatch"] == 1


async def test_lost_ack_repeats_with_the_same_sequence(store: Store) -> None:
    async def reply(f: Frame, n: int) -> bytes | None:
        return None if n == 1 else ack(f)

    rx, _ = await scripted(store, reply, 2, ack_timeout_s=0.3)
    assert [(f.seq, f.data) for f in rx.messages()] == [
        (1, "#1234|1120 01 001"),
        (1, "#1234|1120 01 001"),
        (2, "#1234|1120 01 002"),
    ]


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\xff" * 40 + b"\r", b"x" * 5000, b'\n0000001A"ACK"0001R0L0#1234[]\r', b"\r"],
    ids=["binary", "oversized", "bad-crc", "empty"],
)
async def test_a_garbage_reply_neither_crashes_nor_blocks(store: Store, garbage: bytes) -> None:
    async def reply(f: Frame, n: int) -> bytes:
        return garbage if n == 1 else ack(f)

    rx, tx = await scripted(store, reply, 2, ack_timeout_s=0.3)
    assert [f.seq for f in rx.messages()] == [1, 1, 2]
    assert tx.counts["garbage"] + tx.counts["timeout"] >= 1


async def test_receiver_restart_loses_nothing(store: Store) -> None:
    rx = Receiver(always_ack)
    port = await rx.start()
    q = ArcQueue(store)
    tx = Transmitter(settings(port, failover_after=100), q)
    queue_alarms(q, 3)
    async with running(tx):
        tx.wake()
        await until(tx, lambda: q.waiting("arc") == 0)
        await rx.stop()  # the receiver restarts: our idle connection is dead
        queue_alarms(q, 2)
        tx.wake()
        await until(tx, lambda: tx.counts["failures"] >= 1)  # refused while it is away
        await rx.start(port)
        await until(tx, lambda: q.waiting("arc") == 0)
    await rx.stop()
    assert [int(f.data[-3:]) for f in rx.messages()] == [1, 2, 3, 1, 2]


async def test_primary_down_backup_takes_over_and_primary_comes_back(store: Store) -> None:
    primary, backup = Receiver(always_ack), Receiver(always_ack)
    p_port = await primary.start()
    await primary.stop()  # primary is down from the start
    b_port = await backup.start()
    q = ArcQueue(store)
    events = Events()
    tx = Transmitter(
        settings(p_port, b_port, null_interval_s=0.1),
        q,
        outlet=events,
        site="s",
        null_account="1234",
    )
    queue_alarms(q, 3)
    async with running(tx):
        tx.wake()
        await until(tx, lambda: q.waiting("arc") == 0)
        assert [int(f.data[-3:]) for f in backup.messages()] == [1, 2, 3]
        assert tx.path_down(0) and not tx.path_down(1)
        await primary.start(p_port)  # its NULL supervision finds it back
        await until(tx, lambda: not tx.path_down(0))
        queue_alarms(q, 1)
        tx.wake()
        await until(tx, lambda: q.waiting("arc") == 0)
    await primary.stop()
    await backup.stop()
    assert [int(f.data[-3:]) for f in primary.messages()] == [1]
    assert ("arc_path", 351, 1) in events.kinds() and ("arc_path", 351, 3) in events.kinds()
    assert events.kinds().index(("arc_path", 351, 1)) < events.kinds().index(("arc_path", 351, 3))


async def test_all_paths_down_keeps_the_alarm_queued(store: Store) -> None:
    rx = Receiver(always_ack)
    port = await rx.start()
    await rx.stop()
    q = ArcQueue(store)
    events = Events()
    tx = Transmitter(settings(port), q, outlet=events, site="s")
    queue_alarms(q, 1)
    async with running(tx):
        tx.wake()
        await until(tx, lambda: tx.counts["failures"] >= 4)
        assert q.waiting("arc") == 1
        await rx.start(port)
        await until(tx, lambda: q.waiting("arc") == 0)
    await rx.stop()
    assert events.kinds() == [("arc_path", 351, 1), ("arc_path", 351, 3)]
