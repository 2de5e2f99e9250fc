"""The web duty room's persistent session on a real Mosquitto (issue 14, item 1).

The room reaches the broker through a cable the test pulls: while it is out, and while the
broker restarts on its store, the gateway publishes an ack from another station, a cancel,
a new alarm, a close, and re-sends one update (at least once). When the cable is back the
room's pages (over HTTPS, as an operator's browser fetches them) show every one of them,
once each, in order, and the gap itself.

With two nodes in front of the same broker (cables that count the room's SUBSCRIBE
packets): a session the broker kept is resumed on the next node without subscribing again
and the board kept; a new session, or a kept one met after a new one in the same gap, is
subscribed again and the board rebuilt from the retained copies, the gap told as one that
may miss updates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.core.broker import BrokerSettings
from gateway.dutyroom.web.room import Room
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
from tests.support.tcprelay import Cable, FreezeAtSubscribe, Reader, Writer, mqtt_packet, pipe
from tests.support.timing import until

GW, SITE = "gw1", "s1"
A, B, C, D = (f"{GW}-u{n}-1-1" for n in (1, 2, 3, 4))


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


class Node(Cable):
    """A cable to the broker, as a cluster's node: it counts the SUBSCRIBE packets the
    clients send through it (what a NATS node spends ~1.2 s of a failover on)."""

    def __init__(self, broker_port: int) -> None:
        super().__init__(broker_port)
        self.subscribes = 0

    async def relay(self, cr: Reader, cw: Writer, br: Reader, bw: Writer) -> None:
        async def up() -> None:
            buf = b""
            try:
                while data := await cr.read(65536):
                    buf += data
                    while (packet := mqtt_packet(buf)) is not None:
                        buf = buf[len(packet) :]
                        if packet[0] >> 4 == 8:  # SUBSCRIBE
                            self.subscribes += 1
                    bw.write(data)
                    await bw.drain()
            finally:
                bw.close()

        await asyncio.gather(up(), pipe(br, cw), return_exceptions=True)


def room_on(tmp: Path, *ports: int) -> Options:
    """The room's options, on the broker (or the cluster's nodes) at ``ports``."""
    if not (tmp / "keys").exists():
        write_pair(tmp / "keys", gateway_kid(GW))
    brokers = [BrokerSettings("127.0.0.1", port) for port in ports]
    return room_options(tmp, brokers, tmp / "keys", realert_s=1e9)


def gap_notices(server: DutyRoomServer) -> list[str]:
    """The broker notices the browsers got (their live feed) that tell a gap."""
    feed = server.room.db.feed_after(0)
    notices = [body.get("notice") or {} for _, _, body in feed]
    return [str(n["gap"]) for n in notices if n.get("kind") == "broker" and "gap" in n]


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


async def test_a_room_on_a_session_the_broker_kept_resumes_it_without_subscribing_again(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Issue 14: the room's node dies; on the next one the broker says the session is
    present. The room does not subscribe again (on NATS that cost ~1.2 s of the failover,
    cluster/SCALE.md), so no retained copy comes again: its board keeps every open
    incident, an untouched one too, and the kept session brings what came meanwhile (an
    ack by another station, a new alarm, a close). Before, it subscribed again on every
    connection."""
    first, second = Node(broker.port), Node(broker.port)
    await first.plug()
    await second.plug()
    server = DutyRoomServer(room_on(tmp_path, first.port, second.port))
    signer = Signer.load(tmp_path / "keys", gateway_kid(GW))
    async with server:
        room = server.room
        await until(lambda: room.connected.is_set(), 10, what="the room on the first node")
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            gw = Gateway(client, signer)
            for unit in ("u1", "u3", "u4"):
                await gw.send(update(unit, 1, "new"))
            await until(lambda: room.db.incident(D) is not None, 10, what="alarms before")
            await second.pull()
            await first.pull()  # the room's node is gone, and the next one is away too
            await until(lambda: not room.connected.is_set(), 10, what="the room cut off")
            acked = {"police_ack_at": "2027-01-15T08:00:05Z", "police_ack_by": "Station B"}
            await gw.send(update("u1", 2, "police_ack", **acked))
            await gw.send(update("u2", 1, "new"))
            await gw.send(update("u3", 2, "closed", state="closed"))
        await second.plug()

        await until(
            lambda: [len(room.db.timeline(i)) for i in (A, B, C, D)] == [2, 1, 2, 1],
            30,
            what="every update published while away",
        )
        await until(lambda: room.last_gap is not None, 10, what="the room back")
        assert first.subscribes > 0 and second.subscribes == 0  # (4 filters a packet)
        assert room.link.session_present and room.link.resumed
        shown = room.board.incidents
        assert [i in shown for i in (A, B, C, D)] == [True] * 4
        assert shown[A].data["police_ack_by"] == "Station B"
        assert shown[C].closed_seen_at is not None
        assert [shown[i].closed_seen_at for i in (A, B, D)] == [None] * 3
        assert room.last_gap is not None and room.last_gap.kept
        gaps = gap_notices(server)
        assert len(gaps) == 1 and "session kept" in gaps[0]


async def _a_gap_that_loses_the_session(
    room: Room, broker: Mosquitto, signer: Signer, cable: Node
) -> None:
    """Alarms of u1 and u4 shown; the room's node cut; its session wiped by a client with a
    clean session under its id; then u1's incident closed and a new alarm of u2."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        gw = Gateway(client, signer)
        for unit in ("u1", "u4"):
            await gw.send(update(unit, 1, "new"))
        await until(lambda: room.db.incident(D) is not None, 10, what="alarms before")
        await cable.pull()
        await until(lambda: not room.connected.is_set(), 10, what="the room cut off")
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier=room.link.identifier, clean_session=True
        ):
            pass  # the room's session is gone
        await gw.send(update("u1", 2, "closed", state="closed"))
        await gw.send(update("u2", 1, "new"))


async def test_a_new_session_after_a_gap_rebuilds_the_board_from_the_retained_copies(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The broker lost the room's session during a gap (here: discarded by a clean
    session under its client id): nothing was queued. The room subscribes again, and
    its board is what the retained ``open/`` copies tell: the open incidents, a new one
    among them, and not the one that closed meanwhile (its close was never seen); the
    browsers are told that updates may be missing."""
    cable = Node(broker.port)
    await cable.plug()
    server = DutyRoomServer(room_on(tmp_path, cable.port))
    signer = Signer.load(tmp_path / "keys", gateway_kid(GW))
    async with server:
        room = server.room
        await until(lambda: room.connected.is_set(), 10, what="the room subscribed")
        subscribes = cable.subscribes
        await _a_gap_that_loses_the_session(room, broker, signer, cable)
        await cable.plug()

        await until(
            lambda: room.last_gap is not None and B in room.board.incidents,
            30,
            what="the room back, its board rebuilt",
        )
        assert not room.link.session_present and not room.link.resumed
        assert cable.subscribes == 2 * subscribes  # as many packets as the first time
        assert sorted(room.board.incidents) == [B, D]
        assert room.last_gap is not None and not room.last_gap.kept
        gaps = gap_notices(server)
        assert len(gaps) == 1 and "session NOT kept" in gaps[0]


async def test_a_session_kept_after_a_new_one_in_the_same_gap_still_tells_that_updates_may_miss(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """In one gap the room met a new session (the broker had lost its own) on a node that
    froze at its SUBSCRIBE, then, on the next try, that session kept but not subscribed:
    the room subscribes again there (a session present is resumed only for topics seen
    granted), the retained copies rebuild the board, and the gap still says that updates
    published before the new session may be missing: the kept session holds only what
    came after it was made."""
    cable = Node(broker.port)
    await cable.plug()
    freezer = FreezeAtSubscribe(broker.port)
    await freezer.start()
    freezer.close()  # the second node: away for now
    server = DutyRoomServer(room_on(tmp_path, cable.port, freezer.port))
    signer = Signer.load(tmp_path / "keys", gateway_kid(GW))
    async with server:
        room = server.room
        await until(lambda: room.connected.is_set(), 10, what="the room subscribed")
        await _a_gap_that_loses_the_session(room, broker, signer, cable)
        await freezer.start()

        await until(
            lambda: room.last_gap is not None and B in room.board.incidents,
            30,
            what="the room back, its board rebuilt",
        )
        assert freezer.frozen == 1 and freezer.passed.is_set()
        assert room.link.session_present and not room.link.resumed
        assert sorted(room.board.incidents) == [B, D]
        assert room.last_gap is not None and not room.last_gap.kept
        gaps = gap_notices(server)
        assert len(gaps) == 1 and "session NOT kept" in gaps[0]
