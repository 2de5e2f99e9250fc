"""The duty room's boards on retained topics: what a (re)connecting client gets at once.

``<prefix>/<site>/open/<incident>``: the latest full alarm payload of every incident not
yet closed (open, police-acknowledged or cancelled), cleared at the close;
``<prefix>/<site>/unit/<unit>/state`` and ``<prefix>/<site>/post/<post>/state``.
Real Mosquitto, the gateway in-process with its watchers, a fresh MQTT client each time.
"""

from __future__ import annotations

import secrets
from typing import Any

from gateway.core.clock import ManualClock
from gateway.security.envelope import open_gateway
from gateway.service.watchers import build_watchers
from protocol import AckState, Alarm, AlarmKind, Cancel, Heartbeat, HeartbeatFlags
from tests.gateway.conftest import (
    GATEWAY_ID,
    SITE,
    Police,
    Site,
    client_for,
    running_gateway,
)
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

BOARD = ("campusguard/+/open/+", "campusguard/+/unit/+/state", "campusguard/+/post/+/state")


async def retained(broker: Mosquitto, site: Site) -> dict[str, Any]:
    """Connect as a duty-room client would and return the retained board topics, verified.

    The broker sends retained messages right after the SUBSCRIBE; a marker published on
    the same connection afterwards arrives after them, so its arrival ends the wait (an
    ack topic: the one a duty room may write; the gateway counts it as a bad ack).
    """
    marker = f"campusguard/{SITE}/ack/marker-{secrets.token_hex(4)}"
    out: dict[str, Any] = {}
    async with client_for(broker.settings("dutyroom-desk2")) as client:
        for t in BOARD:
            await client.subscribe(t, qos=1)
        await client.subscribe(marker, qos=1)
        await client.publish(marker, b"end", qos=1)
        async for m in client.messages:
            topic = str(m.topic)
            if topic == marker:
                break
            raw = m.payload if isinstance(m.payload, bytes) else b""
            out[topic] = open_gateway(topic, raw, site.trusted) if raw else None
    return out


def open_of(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    prefix = f"campusguard/{SITE}/open/"
    return {t.removeprefix(prefix): d for t, d in board.items() if t.startswith(prefix)}


async def test_a_reconnecting_duty_room_gets_every_open_incident_at_once(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock()
    a, b = site.unit("shop-a", epoch=5), site.unit("shop-b", epoch=5)
    ia, ib = f"{GATEWAY_ID}-shop-a-5-0", f"{GATEWAY_ID}-shop-b-5-0"
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        a.send(Alarm(AlarmKind.PANIC, 1, 100))
        alarm_a = a.send(Alarm(AlarmKind.PANIC, 2, 100))
        await site.port.wait_ack(alarm_a)
        alarm_b = b.send(Alarm(AlarmKind.PANIC, 1, 100))
        await site.port.wait_ack(alarm_b)
        await site.port.wait_ack(b.send(Cancel(alarm_b.epoch, alarm_b.seq)), AckState.CANCELLED)
        await police.wait_for(lambda: any(m["update"] == "cancelled" for m in police.alarms()))
        clock.advance(1)  # the coalesced press update of shop-a falls due
        await police.wait_for(lambda: any(m["update"] == "presses" for m in police.alarms()))
        await until(lambda: gw.store.pending_count() == 0)

        board = open_of(await retained(broker, site))
        assert set(board) == {ia, ib}
        latest_a = max(police.alarms(incident=ia), key=lambda m: m["update_no"])
        assert board[ia] == latest_a.payload  # the full payload, the latest update_no
        assert board[ia]["presses"] == 2 and board[ia]["state"] == "open"
        assert board[ib]["state"] == "cancelled"

        # the ack of each: the retained copy follows
        await police.ack(ia, by="Officer Liu")
        await police.ack(ib, by="Officer Liu", disposition="false_alarm")
        await site.port.wait_ack(alarm_a, AckState.POLICE_ACK, timeout=3)
        await police.wait_for(lambda: len(police.alarms()) >= 5)
        await until(lambda: gw.store.pending_count() == 0)
        board = open_of(await retained(broker, site))
        assert board[ia]["state"] == "police_ack" and board[ia]["police_ack_by"] == "Officer Liu"
        # a cancelled incident stays cancelled when acknowledged, and on the board
        assert board[ib]["state"] == "cancelled" and board[ib]["disposition"] == "false_alarm"

        # quiet for the incident window: both close (the cancelled one too) and leave
        clock.advance(121)
        await police.wait_for(
            lambda: {m["incident"] for m in police.alarms() if m["update"] == "closed"} == {ia, ib}
        )
        await until(lambda: gw.store.pending_count() == 0)
        assert open_of(await retained(broker, site)) == {}
        rows = dict(gw.store.conn.execute("SELECT id, state FROM incidents").fetchall())
        assert rows == {ia: "closed", ib: "closed"}


async def test_an_unacknowledged_cancelled_incident_stays_on_the_board_across_restarts(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock()
    b = site.unit("shop-b", epoch=6)
    ib = f"{GATEWAY_ID}-shop-b-6-0"
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        alarm = b.send(Alarm(AlarmKind.PANIC, 1, 100))
        await site.port.wait_ack(b.send(Cancel(alarm.epoch, alarm.seq)), AckState.CANCELLED)
        clock.advance(3600)
        await police.wait_for(lambda: any(m["update"] == "cancelled" for m in police.alarms()))
        await until(lambda: gw.store.pending_count() == 0)
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        await police.ack(ib, by="Officer Liu")
        await police.wait_for(lambda: any(m["update"] == "police_ack" for m in police.alarms()))
        clock.advance(1)  # acknowledged, and quiet for far longer than its window: closes
        await police.wait_for(lambda: any(m["update"] == "closed" for m in police.alarms()))
        await until(lambda: gw.store.pending_count() == 0)
        assert open_of(await retained(broker, site)) == {}


async def test_unit_and_post_states_are_retained(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock()
    a = site.unit("shop-a", epoch=2)
    async with running_gateway(site, broker, clock=clock) as gw:
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, clock))
        await gw.relay.connected.wait()
        hb = a.send(Heartbeat(3650, 10, 0x0102, HeartbeatFlags.TAMPER))
        await site.port.wait_ack(hb)
        await police.wait_for(lambda: bool(police.events("tamper")))
        shop_state = f"campusguard/{SITE}/unit/shop-a/state"
        await police.wait_for(
            lambda: any(
                m.topic == shop_state and m.payload["state"] == "online" for m in police.messages
            )
        )
        await until(lambda: gw.store.pending_count() == 0)
        board = await retained(broker, site)
        shop = board[f"campusguard/{SITE}/unit/shop-a/state"]
        assert shop["state"] == "online" and shop["battery_mv"] == 3650
        assert shop["tamper"] is True and shop["last_heard"] is not None
        assert board[f"campusguard/{SITE}/unit/shop-b/state"]["state"] == "not_installed"
        assert board[f"campusguard/{SITE}/unit/guard-n/state"]["state"] == "not_installed"
