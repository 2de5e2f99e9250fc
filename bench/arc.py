"""ARC latency: journalled alarm -> the receiving centre's ACK, over encrypted SIA DC-09.

The gateway's own pieces (journal, ``Store.on_enqueue`` -> ARC feed -> ARC queue ->
transmitter) against pysiaalarm 3.2's TCP receiver (an independent implementation) on
loopback, AES-128, in one process:

- idle: alarms one at a time, each journalled (an incident's MQTT message queued in a
  transaction, which also queues its Contact ID message), then waited for until ACKed;
- burst: 1,000 alarms journalled back to back, then all waited for.

Latency is from the commit of the alarm's transaction to the moment the ACK was
recorded in the ARC queue; ``exchange_ms`` the part of it from writing the frame to
reading the receiver's ACK (the receiver's share). ``lost`` counts alarms not ACKed
(still queued) at the end. Goal: lost 0, p99 < 10 ms idle. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent

from gateway.arc.dc09 import parse_key
from gateway.arc.feed import Addressing, ArcFeed
from gateway.arc.queue import ArcQueue
from gateway.arc.transmitter import ArcSettings, Endpoint, Transmitter
from gateway.journal.store import Store

KEY = "BENCHKEY01234567"
ACCOUNT = "4C21"
UNITS = [f"unit-{i}" for i in range(200)]


class TimedQueue(ArcQueue):
    """The ARC queue, noting when each row's ACK was recorded."""

    acked_at: dict[int, float]

    def acked(self, row: int, at: float, path: str) -> None:
        super().acked(row, at, path)
        self.acked_at[row] = time.perf_counter()


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "n": len(s),
        "p50": round(s[(len(s) - 1) // 2] * 1000, 3),
        "p99": round(s[round(0.99 * (len(s) - 1))] * 1000, 3),
        "max": round(s[-1] * 1000, 3),
    }


def journal_alarm(store: Store, n: int) -> tuple[int, float]:
    """One alarm's journal entry: its outbox message (and, via the hook, its ARC row)."""
    payload = {
        "incident": f"bench-{n}",
        "update": "new",
        "contact_id": 120,
        "site": "bench",
        "unit": UNITS[n % len(UNITS)],
        "kind": "panic",
    }
    with store.transaction():
        topic = f"campusguard/bench/alarm/{payload['unit']}"
        store.enqueue(at=time.time(), topic=topic, payload=json.dumps(payload))
    t = time.perf_counter()
    row = int(store.conn.execute("SELECT max(id) FROM arc_queue").fetchone()[0])
    return row, t


async def main(idle: int, burst: int) -> dict[str, Any]:
    received = 0

    async def on_event(ev: SIAEvent) -> None:
        nonlocal received
        received += 1

    sia = SIAClient("127.0.0.1", 0, [SIAAccount(ACCOUNT, KEY)], on_event)
    await sia.async_start()
    assert sia.server is not None
    port = sia.server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "journal.db")
        queue = TimedQueue(store)
        queue.acked_at = {}
        addressing = Addressing(
            ACCOUNT, {}, {"bench": 1}, {u: i for i, u in enumerate(UNITS, 1)}, {}
        )
        settings = ArcSettings(
            "bench",
            (Endpoint("127.0.0.1", port, "1", "1", parse_key(KEY)),),
            null_interval_s=0,
        )
        tx = Transmitter(settings, queue)
        store.on_enqueue = ArcFeed(queue, ["bench"], addressing, on_queued=tx.wake).on_enqueue
        task = asyncio.create_task(tx.run())
        try:
            lat: list[float] = []
            for n in range(idle):
                row, t = journal_alarm(store, n)
                await asyncio.wait_for(tx.wait_until(lambda r=row: r in queue.acked_at), 30)
                lat.append(queue.acked_at[row] - t)
            exchange = list(tx.ack_s)  # frame written -> ACK decoded, idle
            t0 = time.perf_counter()
            sent = [journal_alarm(store, idle + n) for n in range(burst)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tx.wait_until(lambda: queue.waiting("bench") == 0), 120)
            burst_s = time.perf_counter() - t0
            blat = [queue.acked_at[r] - t for r, t in sent if r in queue.acked_at]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            lost = queue.waiting("bench")
            store.close()
            # let pysiaalarm's handler see our connection close before its server stops
            await asyncio.sleep(0.1)
            await sia.async_stop()
    return {
        "alarms": idle + burst,
        "acked": len(lat) + len(blat),
        "lost": lost,
        "received_by_arc": received,
        "encryption": "AES-128-CBC",
        "receiver": "pysiaalarm 3.2 TCP, loopback",
        "latency_ms": pct(lat),
        "exchange_ms": pct(exchange),
        "burst": {
            "alarms": burst,
            "seconds": round(burst_s, 3),
            "per_s": round(burst / burst_s, 1),
            "latency_ms": pct(blat) if blat else None,
        },
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--idle", type=int, default=300, help="alarms one at a time")
    p.add_argument("--burst", type=int, default=1000, help="alarms in the burst")
    a = p.parse_args()
    res = asyncio.run(main(a.idle, a.burst))
    if a.json:
        print(json.dumps(res))
    else:
        lm, b = res["latency_ms"], res["burst"]
        print(f"alarms {res['alarms']}, acked {res['acked']}, lost {res['lost']}")
        print(f"idle: journalled -> ARC ACK p50 {lm['p50']} ms, p99 {lm['p99']} ms")
        print(f"burst of {b['alarms']}: {b['seconds']} s ({b['per_s']}/s), {b['latency_ms']}")
