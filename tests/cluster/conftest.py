"""Fixtures for the city cluster: three real nats-server nodes (JetStream, MQTT, TLS), the
gateway in-process on them, and police stations with persistent sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.cancelling import cancel_and_wait
from gateway.journal.store import Store
from gateway.security.envelope import open_gateway
from gateway.security.signkeys import gateway_keys
from gateway.service.assembly import Gateway, Settings
from gateway.sim.natscluster import NatsCluster
from gateway.sim.police import Police
from tests.gateway.conftest import ACCOUNTS, GATEWAY_USER, Site, make_site
from tests.support.timing import scaled


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private CA for the session's clusters."""
    return tmp_path_factory.mktemp("ca")


# bcrypt's lowest cost for the users' password hashes: the nodes check passwords the same
# way, in well under a millisecond instead of ~0.2 s of CPU per user when a cluster's
# config is written and per client connection (every failover reconnects them all). The
# shipped cost is what `campusguard cluster-config` writes, checked in test_city.py.
TEST_BCRYPT_COST = 4


@pytest.fixture
def cluster(tmp_path: Path, ca_dir: Path) -> Iterator[NatsCluster]:
    """Three nodes, ready; killed at the end whatever the test did to them."""
    with NatsCluster(
        tmp_path / "nats", ACCOUNTS, ca_dir=ca_dir, bcrypt_cost=TEST_BCRYPT_COST
    ) as c:
        yield c


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    # three batches of units, each press its own incident
    s = make_site(
        tmp_path, [(f"shop-{b}-{i}", 257 + 16 * b + i) for b in range(3) for i in range(16)]
    )
    yield s
    s.port.close()


@contextlib.asynccontextmanager
async def station(
    cluster: NatsCluster, site: Site, name: str, first: str, user: str = "dutyroom-police"
) -> AsyncIterator[Police]:
    """A police station's duty room on a persistent session, on ``first`` and then the rest."""
    p = Police(
        cluster.settings(user, first=first),
        keydir=site.dutyroom_dir,
        identifier=f"station-{name}",
        time_scale=lambda: scaled(1.0),  # the load's factor when a wait begins
    )
    await p.start(timeout=scaled(30))
    try:
        yield p
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def gateway_on(
    cluster: NatsCluster, site: Site, first: str, **kw: Any
) -> AsyncIterator[Gateway]:
    """The gateway in-process, given every node (``first`` first), connected when entered."""
    broker, *more = cluster.settings(GATEWAY_USER, first=first)
    gw = Gateway(
        site.config,
        Settings(
            db_path=site.db, keydir=site.keydir, broker=broker, more_brokers=tuple(more), **kw
        ),
    )
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        async with asyncio.timeout(scaled(30)):
            await gw.ready.wait()
            await gw.relay.connected.wait()
        yield gw
    finally:
        gw.stop()
        try:
            async with asyncio.timeout(scaled(15)):
                await asyncio.shield(task)
        except TimeoutError:
            # a task left running would hang the event loop's teardown for ever
            await cancel_and_wait(task)
            raise AssertionError("the gateway did not stop within its time") from None


def published_alarms(store: Store, site: Site) -> set[tuple[str, int]]:
    """(incident, update_no) of every alarm publication the gateway queued (the truth)."""
    keys = gateway_keys(site.dutyroom_dir)
    out = set()
    for topic, payload in store.conn.execute("SELECT topic, payload FROM outbox ORDER BY id"):
        if "/alarm/" in topic:
            body = open_gateway(
                topic, payload.encode() if isinstance(payload, str) else payload, keys
            )
            out.add((body["incident"], int(body["update_no"])))
    return out


def received_alarms(police: Police) -> set[tuple[str, int]]:
    """(incident, update_no) of every alarm a station got: duplicates fold here."""
    return {(str(m.get("incident")), int(m.get("update_no"))) for m in police.alarms()}
