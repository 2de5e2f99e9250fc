"""Faults on a real three-node NATS cluster: every alarm reaches every station, 0 lost.

The gateway publishes a burst of alarms; a fault lands while part of it is in flight; both
police stations (persistent sessions, on other nodes) must end up with every
(incident, update_no) the gateway queued, however often it arrived (at least once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.relay import relay as relay_module
from gateway.relay.relay import FAILOVER_PUBACK_S
from gateway.service.assembly import Gateway
from gateway.sim.natscluster import NatsCluster
from gateway.sim.police import Police
from protocol import Alarm, AlarmKind, Frame
from tests.cluster.conftest import gateway_on, published_alarms, received_alarms, station
from tests.gateway.conftest import Site, until

BURST = 16  # alarms per batch, each a unit's own incident


def press(site: Site, batch: int) -> list[Frame]:
    """One press of each unit of the batch: BURST new incidents at once."""
    units = [site.unit(f"shop-{batch}-{i}", epoch=4) for i in range(BURST)]
    return [u.send(Alarm(AlarmKind.PANIC, 1, 100)) for u in units]


async def burst_with_fault(
    cluster: NatsCluster,
    site: Site,
    fault: Callable[[Gateway, list[Police]], Awaitable[None]],
    *,
    gateway_first: str = "n1",
    stations: tuple[str, str] = ("n2", "n3"),
    after: Callable[[Gateway], Awaitable[None]] | None = None,
) -> tuple[Gateway, list[Police]]:
    async with (
        station(cluster, site, "north", stations[0]) as north,
        station(cluster, site, "south", stations[1], user="dutyroom-desk2") as south,
        gateway_on(cluster, site, gateway_first) as gw,
    ):
        frames = press(site, 0)
        await until(lambda: gw.relay.published >= 4, timeout=30)
        await fault(gw, [north, south])  # part of the first batch is still in flight
        frames += press(site, 1)
        if after is not None:
            await after(gw)
            frames += press(site, 2)
        await site.port.wait_for(lambda: all(site.port.acks_for(f) for f in frames), timeout=30)
        expected = published_alarms(gw.store, site)
        assert len(expected) == len(frames)  # one incident per press
        for p in (north, south):
            await p.wait_for(lambda p=p: received_alarms(p) >= expected, 90, "every alarm")
            assert received_alarms(p) == expected  # nothing the gateway did not send
        await until(lambda: gw.store.pending_count() == 0, timeout=30)
        return gw, [north, south]


def gateway_node(cluster: NatsCluster, gw: Gateway) -> str:
    """The node the gateway's relay is connected to (last connected to)."""
    assert gw.relay.node is not None
    return cluster.node_of(gw.relay.node.port)


async def test_kill_9_of_the_gateways_node_during_a_burst(
    cluster: NatsCluster, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed: list[str] = []
    subscribed: list[list[str]] = []  # the filters subscribed on each connection
    send = relay_module.send_subscriptions

    async def counted(client: Any, topics: Any, qos: int = 1) -> Any:
        subscribed.append(list(topics))
        return await send(client, subscribed[-1], qos)

    monkeypatch.setattr(relay_module, "send_subscriptions", counted)

    missed_before: list[int] = []

    async def kill(gw: Gateway, stations: list[Police]) -> None:
        killed.append(gateway_node(cluster, gw))  # n1, unless it did not answer in time
        missed_before.append(gw.relay.connacks_missed)
        cluster.kill(killed[0])

    gw, _ = await burst_with_fault(cluster, site, kill)
    assert gateway_node(cluster, gw) != killed[0]
    # the next node said the gateway's session was present, with its subscriptions: the
    # relay subscribed only its own status again (NATS updates each consumer first), unless
    # an attempt meanwhile sent its CONNECT and got no CONNACK (a node busy electing): then
    # "session present" may be a new, empty session, and everything is subscribed again
    assert gw.relay.connects >= 2 and len(subscribed[0]) > 1
    unsure = gw.relay.connacks_missed > missed_before[0]
    assert unsure or any(len(filters) == 1 for filters in subscribed[1:]), subscribed


async def test_kill_of_the_node_that_leads_the_mqtt_streams(
    cluster: NatsCluster, site: Site
) -> None:
    killed: list[str] = []

    async def kill_leader(gw: Gateway, stations: list[Police]) -> None:
        leaders = cluster.stream_leaders()
        killed.append(leaders["$MQTT_msgs"])
        cluster.kill(killed[0])

    await burst_with_fault(cluster, site, kill_leader)
    assert killed and not cluster.running(killed[0])
    # a new leader was elected among the two left
    await until(lambda: cluster.stream_leaders().get("$MQTT_msgs") not in (None, killed[0]), 30)


async def test_kill_of_a_stations_node(cluster: NatsCluster, site: Site) -> None:
    killed: list[str] = []

    async def kill(gw: Gateway, stations: list[Police]) -> None:
        north = stations[0]  # on n2, unless n2 did not answer it in time at the start
        killed.append(cluster.node_of(north.settings.port))
        cluster.kill(killed[0])

    _, (north, _south) = await burst_with_fault(cluster, site, kill)
    assert north.node_changes >= 1 and cluster.node_of(north.settings.port) != killed[0]
    # the next node said the session was present and delivered on its subscriptions: the
    # station did not subscribe again (NATS would first update every consumer of it),
    # unless an attempt meanwhile sent its CONNECT and got no CONNACK (a node busy in its
    # election): then "session present" may be a new, empty session, and it must
    trail = list(north.link.trail)
    up = next((i for i, (_, what, _) in enumerate(trail) if what == "subscribed"), 0)
    unsure = any(what == "no connack" for _, what, _ in trail[up:])
    assert north.link.subscriptions == (2 if unsure else 1), trail


async def test_a_frozen_node_sigstop_then_sigcont(
    cluster: NatsCluster, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """No FIN, no RST: the gateway sees only PUBACKs that do not come, and moves on."""
    caplog.set_level(logging.WARNING, logger="gateway.relay.relay")

    frozen: list[str] = []

    async def freeze(gw: Gateway, stations: list[Police]) -> None:
        frozen.append(gateway_node(cluster, gw))
        cluster.pause(frozen[0])

    gw, _ = await burst_with_fault(cluster, site, freeze)
    assert gateway_node(cluster, gw) != frozen[0]
    # left for the missing PUBACK after FAILOVER_PUBACK_S, not the 10 s of a lone broker
    port = cluster.node(frozen[0]).mqtt_port
    assert any(
        f":{port} unavailable (no PUBACK within {FAILOVER_PUBACK_S:.0f} s)" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    cluster.resume(frozen[0])
    cluster.wait_ready(frozen[0])
    # the resumed node finds its old sessions taken over; the city carries on, whole
    assert all(cluster.running(n.name) for n in cluster.nodes)


async def test_a_node_restarted_on_its_store_then_another_killed(
    cluster: NatsCluster, site: Site
) -> None:
    """n3 is killed and started again on its store; then n1 (the gateway's) is killed:
    the streams now rest on n2 and the restarted n3, so n3 must have caught up."""

    async def kill_n3(gw: Gateway, stations: list[Police]) -> None:
        cluster.kill("n3")

    async def restart_n3_kill_n1(gw: Gateway) -> None:
        await until(lambda: gw.store.pending_count() == 0, timeout=30)
        await asyncio.to_thread(cluster.start_node, "n3")
        cluster.kill("n1")

    gw, _ = await burst_with_fault(
        cluster, site, kill_n3, stations=("n2", "n3"), after=restart_n3_kill_n1
    )
    assert gateway_node(cluster, gw) != "n1"
