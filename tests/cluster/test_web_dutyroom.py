"""The web duty room on the city cluster: its node dies, its persistent session does not.

Three real nats-server nodes; the duty room knows n1 and n2 (through cables the test can
pull). n1 is killed while n2's cable is out, so the room is away for sure while the
gateway's messages keep coming on n3 (at least once): an ack from another station, a
press, a new alarm, one that opens and closes. When n2's cable is back, the room shows
every one, once, in order, and that the broker kept its session over the gap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.dutyroom.web.server import DutyRoomServer
from gateway.relay.mqttsocket import NodeLoop, fixed_pause
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid
from gateway.sim.natscluster import NatsCluster
from tests.gateway.conftest import GATEWAY_ID, GATEWAY_USER, SITE, Site
from tests.support.dutyroom import incident_update, published, room_options
from tests.support.tcprelay import Cable
from tests.support.timing import until

A, B, C = (f"{GATEWAY_ID}-u{n}-1-1" for n in (1, 2, 3))


def update(unit: str, no: int, what: str, **kw: Any) -> dict[str, Any]:
    return incident_update(GATEWAY_ID, SITE, unit, no, what, **kw)


async def publish(
    cluster: NatsCluster, signer: Signer, first: str, *bodies: dict[str, Any]
) -> None:
    """As the gateway publishes (``alarm/<unit>``, then the retained ``open/<id>``): on
    ``first`` or the next node that answers, again after a failure (at least once)."""
    todo = [message for body in bodies for message in published(signer, body)]

    async def serve(client: aiomqtt.Client) -> None:
        while todo:
            topic, payload, retain = todo[0]
            await client.publish(topic, payload, qos=1, retain=retain)
            todo.pop(0)

    link = NodeLoop(cluster.settings(GATEWAY_USER, first=first), pause=fixed_pause(0.1))
    await link.run(lambda: [], lambda topic, raw: None, serve=serve)


@pytest.fixture
def signer(site: Site) -> Iterator[Signer]:
    yield Signer.load(site.keydir, gateway_kid(GATEWAY_ID))


async def test_the_room_on_a_killed_node_shows_every_update_of_the_gap_once_in_order(
    cluster: NatsCluster, site: Site, signer: Signer, tmp_path: Path
) -> None:
    n1, n2, _ = cluster.settings("dutyroom-police", first="n1")
    cables = [Cable(n1.port), Cable(n2.port)]
    for cable in cables:
        await cable.plug()
    nodes = [dataclasses.replace(n, port=c.port) for n, c in zip((n1, n2), cables, strict=True)]
    options = room_options(tmp_path, nodes, site.dutyroom_dir, sites=[SITE], realert_s=1e9)
    async with DutyRoomServer(options) as server:
        room = server.room
        await until(lambda: room.connected.is_set(), 30, what="the room subscribed on n1")
        await publish(cluster, signer, "n2", update("u1", 1, "new"))
        await until(lambda: room.db.incident(A) is not None, 30, what="the first alarm")

        await cables[1].pull()
        cluster.kill("n1")  # the room's node: it has nowhere to go for now
        await until(lambda: not room.connected.is_set(), 30, what="the room away")
        by_b = {"police_ack_by": "Station B", "police_ack_at": "2027-01-15T08:00:05Z"}
        await publish(
            cluster,
            signer,
            "n3",
            update("u1", 2, "police_ack", **by_b),
            update("u2", 1, "new"),
            update("u1", 3, "presses", presses=3, **by_b),
            update("u3", 1, "new"),
            update("u3", 2, "closed", state="closed"),
            update("u1", 2, "police_ack", **by_b),  # re-sent
        )
        assert not room.connected.is_set()
        await cables[1].plug()  # n2 holds the room's session too
        try:
            await until(
                lambda: [len(room.db.timeline(i)) for i in (A, B, C)] == [3, 1, 2],
                20,
                what="every update of the gap",
            )
        except AssertionError:
            shown = {i: [w for _, w, _, _ in room.db.timeline(i)] for i in (A, B, C)}
            raise AssertionError(f"the room shows {shown}") from None
        await until(lambda: room.last_gap is not None, 30, what="the room back")
        assert [w for _, w, _, _ in room.db.timeline(A)] == ["new", "police_ack", "presses"]
        assert [w for _, w, _, _ in room.db.timeline(C)] == ["new", "closed"]
        assert room.db.incident(A)["presses"] == 3  # type: ignore[index]
        assert room.db.incident(C)["state"] == "closed"  # type: ignore[index]
        assert room.last_gap is not None and room.last_gap.kept
        assert room.link.node is not None and room.link.node.port == cables[1].port
