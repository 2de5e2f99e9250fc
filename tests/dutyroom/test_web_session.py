"""The web duty room's persistent session on a real Mosquitto (issue 14, item 1).

The room reaches the broker through a cable the test pulls: while it is out, and while the
broker restarts on its store, the gateway publishes an ack from another station, a cancel,
a new alarm, a close, and re-sends one update (at least once). When the cable is back the
room's pages (over HTTPS, as an operator's browser fetches them) show every one of them,
once each, in order, and the gap itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.core.broker import BrokerSettings
from gateway.dutyroom.web.server import DutyRoomServer, Options
from gateway.dutyroom.web.views import status_html
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid, write_pair
from tests.support.dutyroom import (
    PASSWORD,
    Client,
    incident_update,
    published,
    room_options,
    trusting,
)
from tests.support.mosquitto import Mosquitto, open_broker
from tests.support.tcprelay import Cable
from tests.support.timing import until

GW, SITE = "gw1", "s1"
A, B, C = (f"{GW}-u{n}-1-1" for n in (1, 2, 3))


def update(unit: str, no: int, what: str, **kw: Any) -> dict[str, Any]:
    return incident_update(GW, SITE, unit, no, what, **kw)


class Gateway:
    """Publishes as the gateway does: ``alarm/<unit>``, then the retained ``open/<id>``."""

    def __init__(self, client: aiomqtt.Client, signer: Signer) -> None:
        self.client = client
        self.signer = signer

    async def send(self, body: dict[str, Any]) -> None:
        for topic, payload, retain in published(self.signer, body):
            await self.client.publish(topic, payload, qos=1, retain=retain)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    with open_broker(tmp_path / "mqtt", persistent=True) as b:
        yield b


def room_on(tmp: Path, port: int) -> Options:
    """The room's options, on the broker at ``port``."""
    if not (tmp / "keys").exists():
        write_pair(tmp / "keys", gateway_kid(GW))
    return room_options(tmp, [BrokerSettings("127.0.0.1", port)], tmp / "keys", realert_s=1e9)


async def timeline(c: Client, iid: str) -> list[str]:
    """The incident page's timeline, one entry per line (time of day cut off)."""
    status, page = await c.get(f"/incident/{iid}")
    assert status == 200
    body = page.split("<ol class='timeline'>", 1)[1].split("</ol>", 1)[0]
    items = [li.split("</li>", 1)[0] for li in body.split("<li>")[1:]]
    return [i.split(" ", 1)[1].replace("<b>", "").replace("</b>", "") for i in items]


async def test_updates_published_while_the_room_was_away_are_all_shown_once_in_order(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Regression (issue 14): the room reconnected with a clean session and rebuilt its
    board from the retained ``open/`` copies: an ack by another station and a cancel came
    and went unseen (only the latest retained copy arrived), and an alarm closed meanwhile
    stayed open on the room's pages for good."""
    cable = Cable(broker.port)
    await cable.plug()
    server = DutyRoomServer(room_on(tmp_path, cable.port))
    server.add_account("li", "Li", "operator", PASSWORD)
    ctx = trusting(tmp_path)
    signer = Signer.load(tmp_path / "keys", gateway_kid(GW))
    async with server:
        room = server.room
        await room.connected.wait()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            gw = Gateway(client, signer)
            await gw.send(update("u1", 1, "new"))
            await gw.send(update("u3", 1, "new"))
            await until(lambda: room.db.incident(C) is not None, 10, what="alarms before")
        await cable.pull()
        await until(lambda: not room.connected.is_set(), 10, what="the room cut off")

        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            gw = Gateway(client, signer)
            acked = {"police_ack_at": "2027-01-15T08:00:05Z", "police_ack_by": "Station B"}
            await gw.send(update("u1", 2, "police_ack", **acked))
            await gw.send(update("u2", 1, "new"))
        broker.stop()  # the broker goes away too, and comes back on its store
        broker.start()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            gw = Gateway(client, signer)
            await gw.send(update("u1", 3, "cancelled", state="cancelled", **acked))
            await gw.send(update("u1", 2, "police_ack", **acked))  # re-sent: at least once
            await gw.send(update("u3", 2, "closed", state="closed"))
            await gw.send(update("u2", 2, "presses", presses=3))
        await cable.plug()

        await until(lambda: room.connected.is_set(), 30, what="the room back")
        c = Client(server, ctx)
        try:
            assert await c.login("li") == 303

            await until(
                lambda: [len(room.db.timeline(i)) for i in (A, B, C)] == [3, 2, 2],
                30,
                what="every update published while away",
            )
            assert [await timeline(c, i) for i in (A, B, C)] == [
                ["new", "police_ack · Station B", "cancelled · Station B"],
                ["new", "presses"],
                ["new", "closed"],
            ]
            assert room.db.incident(A)["update_no"] == 3  # type: ignore[index]
            assert room.db.incident(A)["state"] == "cancelled"  # type: ignore[index]
            assert room.db.incident(C)["state"] == "closed"  # type: ignore[index]
            assert room.board.incidents[B].data["presses"] == 3
            _, status = await c.get("/fragment/status")
            assert "connection gap" in status and "session kept" in status
        finally:
            await c.http.close()


async def test_a_room_restarted_meanwhile_shows_what_came_while_it_was_down(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The duty room's server stopped (an update, a reboot) while an ack from another
    station and a new alarm came: started again on its database, it shows both, once."""
    options = room_on(tmp_path, broker.port)
    signer = Signer.load(tmp_path / "keys", gateway_kid(GW))
    async with DutyRoomServer(options) as server:
        await server.room.connected.wait()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await Gateway(client, signer).send(update("u1", 1, "new"))
            await until(lambda: server.room.db.incident(A) is not None, 10, what="the alarm")
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        gw = Gateway(client, signer)
        await gw.send(update("u1", 2, "police_ack", police_ack_by="Station B"))
        await gw.send(update("u1", 3, "presses", police_ack_by="Station B", presses=2))
        await gw.send(update("u2", 1, "new"))
    async with DutyRoomServer(options) as server:
        room = server.room
        await until(
            lambda: room.db.incident(B) is not None and len(room.db.timeline(A)) == 3,
            10,
            what="what came while the room was down",
        )
        await until(lambda: room.connected.is_set(), 10, what="subscribed")
        assert [w for _, w, _, _ in room.db.timeline(A)] == ["new", "police_ack", "presses"]
        assert [w for _, w, _, _ in room.db.timeline(B)] == ["new"]
        assert B in room.board.incidents and room.board.incidents[A].data["update_no"] == 3


async def test_a_broker_that_lost_the_session_is_shown_as_a_gap_that_may_miss_updates(
    tmp_path: Path,
) -> None:
    """A broker restarted without its store has no session of ours: nothing was queued,
    and the page says that what came meanwhile may be missing."""
    with open_broker(tmp_path / "mqtt") as broker:
        async with DutyRoomServer(room_on(tmp_path, broker.port)) as server:
            room = server.room
            await room.connected.wait()
            broker.stop()
            await until(lambda: not room.connected.is_set(), 10, what="the room cut off")
            assert "BROKER NOT CONNECTED" in status_html(room, room.now())
            broker.start()
            await until(lambda: room.connected.is_set(), 30, what="the room back")
            assert room.last_gap is not None and not room.last_gap.kept
            shown = status_html(room, room.now())
            assert "session NOT kept" in shown and "may be missing" in shown
            assert any(a[2] == "broker_gap" for a in room.db.audit_rows())
