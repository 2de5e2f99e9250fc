"""The relay's reconnect on a NEW session: its CONNACK -> the first outbox PUBACK.

The gateway's relay (gateway/relay/relay.py), in-process, against a real broker: an open
Mosquitto on loopback, and a three-node NATS cluster (JetStream, MQTT, TLS, the city's
accounts) as `cluster/` ships it. Each round: the relay is connected and idle; a client
with a clean session takes its client id over (the broker drops the relay's session and
connection); one alarm-sized row is queued in the outbox while the relay is away (its
reconnect pause is held at the 0.1 s bound, so the row is there first); the relay
connects again, on a new session (CONNACK session-present 0), subscribes, and publishes.
Measured: from the start of the relay's work on that connection (a loop turn after its
client read the CONNACK) to the PUBACK of the row (both in the relay's process). What the
relay subscribes on a new session (its sites' ack topics and its own status) is in that
path when the outbox waits for the SUBACKs and the status; less when it goes out right
behind the SUBSCRIBEs (NATS handles a connection's packets one at a time: the PUBLISH
still waits behind each SUBSCRIBE's consumers and retained lookup there).

    .venv/bin/python bench/reconnect.py --json [--rounds 20] [--only mosquitto|nats]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway.core.broker import BrokerSettings  # noqa: E402
from gateway.core.clock import ManualClock  # noqa: E402
from gateway.journal.store import OutboxRow, Store  # noqa: E402
from gateway.relay.relay import Relay  # noqa: E402
from gateway.security.brokerconfig import ACK_LEAVES, Accounts  # noqa: E402
from gateway.security.envelope import Signer  # noqa: E402
from gateway.security.signkeys import gateway_kid, write_pair  # noqa: E402
from gateway.sim.localbroker import LocalBroker  # noqa: E402
from gateway.sim.natscluster import NatsCluster  # noqa: E402

GATEWAY = "gw-bench"
SITES = ("school-a", "school-b")
USER = f"gateway-{GATEWAY}"
STATUS = f"campusguard/gateway/{GATEWAY}/status"
PAYLOAD = json.dumps({"gateway": GATEWAY, "incident": "x" * 24, "kind": "panic", "pad": "y" * 80})


class _AtTheBound(random.Random):
    """Reconnect pauses at their bound (0.1 s first): the row is queued before the relay
    is back."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _Timed(Relay):
    """The relay, stamping each connection's start (its CONNACK read, a loop turn before)
    and the first PUBACK after it."""

    connack_at = 0.0
    first_puback_at: float | None = None

    async def _publisher(self, client: aiomqtt.Client) -> None:
        self.connack_at, self.first_puback_at = time.monotonic(), None
        await super()._publisher(client)

    def _on_puback(self, row: OutboxRow) -> None:
        if self.first_puback_at is None:
            self.first_puback_at = time.monotonic()
        super()._on_puback(row)


async def _rounds(
    nodes: list[BrokerSettings], taker: BrokerSettings, rounds: int, work: Path
) -> dict[str, Any]:
    signer = Signer.load(
        write_pair(work / "keys", gateway_kid(GATEWAY)).parent, gateway_kid(GATEWAY)
    )
    store = Store(work / "gw.db")
    store.seal = signer.seal
    relay = _Timed(
        store,
        nodes[0],
        ManualClock(time.time()),
        client_id=USER,
        subscriptions=[f"campusguard/{s}/{leaf}" for s in SITES for leaf in ACK_LEAVES],
        status_topic=STATUS,
        on_message=lambda topic, data: None,
        signer=signer,
        gateway_id=GATEWAY,
        brokers=nodes[1:],
        rng=_AtTheBound(),
    )
    store.on_commit = relay.submit
    task = asyncio.create_task(relay.run())
    times: list[float] = []
    present: list[bool] = []
    try:
        async with asyncio.timeout(60):
            await relay.connected.wait()
        for _ in range(rounds):
            with contextlib.suppress(aiomqtt.MqttError):  # the relay may take it back first
                async with aiomqtt.Client(
                    taker.host,
                    taker.port,
                    username=taker.username,
                    password=taker.password,
                    tls_context=taker.tls_context(),
                    identifier=USER,
                    clean_session=True,
                ):
                    pass
            async with asyncio.timeout(30):
                while relay.connected.is_set():
                    await asyncio.sleep(0.001)
            with store.transaction():
                store.enqueue(
                    at=time.time(), topic=f"campusguard/{SITES[0]}/alarm/u1", payload=PAYLOAD
                )
            async with asyncio.timeout(60):
                while store.pending_count() or relay.first_puback_at is None:
                    await asyncio.sleep(0.001)
                await relay.connected.wait()
            present.append(relay._session_present())
            times.append((relay.first_puback_at - relay.connack_at) * 1000.0)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)
        store.close()
    times.sort()
    return {
        "rounds": len(times),
        "new_sessions": present.count(False),
        "connack_to_first_puback_ms": {
            "p50": round(statistics.median(times), 2),
            "p90": round(times[int(0.9 * (len(times) - 1))], 2),
            "max": round(times[-1], 2),
        },
        "subscriptions": len(SITES) * len(ACK_LEAVES) + 1,
    }


async def _mosquitto(rounds: int, work: Path) -> dict[str, Any]:
    with LocalBroker(work / "mosquitto", open_listener="allow_anonymous true") as broker:
        s = broker.settings()
        return await _rounds([s], s, rounds, work)


async def _nats(rounds: int, work: Path) -> dict[str, Any]:
    accounts = Accounts(gateways={GATEWAY: list(SITES)}, dutyrooms={}, viewers={})
    with NatsCluster(work / "nats", accounts, bcrypt_cost=4) as cluster:
        nodes = cluster.settings(USER)
        return await _rounds(nodes, nodes[0], rounds, work)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=20, help="reconnects per broker")
    p.add_argument("--only", choices=("mosquitto", "nats"), help="one broker only")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the relay's one line per reconnect: not here
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="reconnect-") as tmp:
        for name, run in (("mosquitto", _mosquitto), ("nats", _nats)):
            if args.only in (None, name):
                work = Path(tmp) / name
                work.mkdir()
                result[name] = asyncio.run(run(args.rounds, work))
    if args.json:
        print(json.dumps(result))
    else:
        for name, r in result.items():
            f = r["connack_to_first_puback_ms"]
            print(
                f"{name}: {r['rounds']} reconnects ({r['new_sessions']} new sessions),"
                f" CONNACK -> first PUBACK p50 {f['p50']} ms, p90 {f['p90']} ms, max {f['max']} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
