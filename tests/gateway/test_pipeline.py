"""The core path on real parts: pty -> decode -> journal -> ACK -> Mosquitto PUBACK."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from gateway.core.clock import ManualClock
from gateway.pipeline.pipeline import REACK_MIN_INTERVAL_S
from protocol import (
    AckState,
    Alarm,
    AlarmKind,
    Cancel,
    Checkin,
    Heartbeat,
    HeartbeatFlags,
)
from tests.gateway.conftest import GATEWAY_ID, SITE, Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_press_is_acked_journalled_and_relayed(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=7)
    async with running_gateway(site, broker) as gw:
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 123_456))
        await site.port.wait_ack(frame, AckState.RECEIVED, timeout=2)
        await police.wait_for(lambda: bool(police.alarms()), timeout=2)
        msg = police.alarms()[0]
        iid = f"{GATEWAY_ID}-shop-a-7-0"
        assert msg["incident"] == iid
        assert msg["update"] == "new"
        assert msg["unit"] == "shop-a"
        assert msg["site"] == SITE
        assert msg["place"] == "Place of shop-a"
        assert msg["owner"] == "Owner of shop-a"
        assert msg["kind"] == "panic" and msg["contact_id"] == 120
        assert msg["presses"] == 1 and msg["state"] == "open"
        assert msg["gateway"] == GATEWAY_ID
        assert msg["received_at"].endswith("Z") and len(msg["received_at"]) == 24
        assert msg["first_press_at"] == msg["received_at"]  # no heartbeat: no uptime known
        assert msg["first_press_source"] == "received"
        topics = [m.topic for m in police.messages if "/alarm/" in m.topic]
        assert topics == [f"campusguard/{SITE}/alarm/shop-a"]
        await until(
            lambda: (
                gw.store.conn.execute("SELECT relayed_at FROM incidents").fetchone()[0] is not None
            )
        )
        row = gw.store.conn.execute(
            "SELECT id, unit, kind, presses, state, last_epoch, last_seq FROM incidents"
        ).fetchall()
        assert row == [(iid, "shop-a", "panic", 1, "open", 7, 0)]
        # every PUBACK recorded (the gateway's own start event may still be on its way)
        await until(lambda: gw.store.pending_count() == 0)


async def test_first_press_at_from_heartbeat_uptime(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=3)
    async with running_gateway(site, broker):
        sent = time.monotonic()
        hb = unit.send(Heartbeat(3700, 100, 0x0100, HeartbeatFlags(0)))
        await site.port.wait_ack(hb)
        # pressed at uptime 95.5 s: 4.5 s before the heartbeat said 100 s
        alarm = unit.send(Alarm(AlarmKind.PANIC, 1, 95_500))
        await site.port.wait_ack(alarm)
        between = time.monotonic() - sent  # the heartbeat's and the alarm's arrivals: within
        await police.wait_for(lambda: bool(police.alarms()))
        msg = police.alarms()[0]
        assert msg["first_press_source"] == "unit_uptime"
        lead = ts(msg["received_at"]) - ts(msg["first_press_at"])
        # 4.5 s, less up to 0.5 s and plus up to 1 s for the whole-second uptime, plus
        # however long this machine took between the two arrivals (measured)
        assert 4.0 <= lead <= 5.5 + between, (lead, between)


async def test_retransmission_is_reacked_never_relayed_twice(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-b", epoch=2)
    clock = ManualClock()
    async with running_gateway(site, broker, clock=clock) as gw:
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 5000))
        await site.port.wait_ack(frame)
        for n in range(2, 5):  # a unit's retransmissions, its retry timer apart
            clock.advance(REACK_MIN_INTERVAL_S)
            unit.resend(frame)
            await site.port.wait_for(lambda n=n: len(site.port.acks_for(frame)) >= n, timeout=3)
        # and the same bytes twice in one write
        clock.advance(REACK_MIN_INTERVAL_S)
        unit.port.write(unit.wire(frame) * 2)
        await site.port.wait_for(lambda: len(site.port.acks_for(frame)) >= 5, timeout=3)
        hb = unit.send(Heartbeat(3700, 10, 0x0100, HeartbeatFlags(0)))
        await site.port.wait_ack(hb)
        assert len(site.port.acks_for(frame)) == 5  # one re-ACK for the pair in one write
        await until(lambda: gw.store.pending_count() == 0)
        await police.wait_for(lambda: bool(police.alarms()))
        assert len(police.alarms()) == 1
        n = gw.store.conn.execute("SELECT count(*) FROM frames WHERE type = 'ALARM'").fetchone()
        assert n == (1,)


async def test_presses_fold_into_one_incident_and_coalesce(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=4)
    async with running_gateway(site, broker) as gw:
        first = unit.send(Alarm(AlarmKind.PANIC, 1, 1000))
        await site.port.wait_ack(first)
        frames = [unit.send(Alarm(AlarmKind.PANIC, n, 1000)) for n in range(2, 6)]
        for f in frames:
            await site.port.wait_ack(f)
        iid = f"{GATEWAY_ID}-shop-a-4-0"
        await police.wait_for(lambda: any(m["presses"] == 5 for m in police.alarms()), timeout=3)
        msgs = police.alarms()
        assert {m["incident"] for m in msgs} == {iid}
        assert msgs[0]["update"] == "new"
        # coalesced: far fewer publications than presses
        assert len(msgs) <= 3, [m["presses"] for m in msgs]
        row = gw.store.conn.execute(
            "SELECT count(*), max(presses), max(last_seq) FROM incidents"
        ).fetchone()
        assert row == (1, 5, 4)


async def test_chattering_button_is_reported_once(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=9)
    async with running_gateway(site, broker) as gw:
        frames = [unit.send(Alarm(AlarmKind.PANIC, n, 777)) for n in range(1, 41)]
        await site.port.wait_for(lambda: all(site.port.acks_for(f) for f in frames), timeout=5)
        await police.wait_for(lambda: bool(police.events("button_chatter")), timeout=3)
        await police.wait_for(lambda: any(m["presses"] == 40 for m in police.alarms()), timeout=3)
        chatter = police.events("button_chatter")
        assert len(chatter) == 1
        assert chatter[0]["code"] == 380 and chatter[0]["unit"] == "shop-a"
        assert len(police.alarms()) < 10  # 40 presses, a handful of publications
        rows = gw.store.conn.execute(
            "SELECT kind, code, qualifier FROM events WHERE kind = 'button_chatter'"
        ).fetchall()
        assert rows == [("button_chatter", 380, 1)]


async def test_cancel_is_recorded_published_and_acked_state_3(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-b", epoch=11)
    async with running_gateway(site, broker) as gw:
        alarm = unit.send(Alarm(AlarmKind.PANIC, 1, 2000))
        await site.port.wait_ack(alarm)
        cancel = unit.send(Cancel(alarm.epoch, alarm.seq))
        await site.port.wait_ack(cancel, AckState.CANCELLED)
        iid = f"{GATEWAY_ID}-shop-b-11-0"
        await police.wait_for(lambda: any(m["update"] == "cancelled" for m in police.alarms()))
        await police.wait_for(lambda: bool(police.events("cancel")))
        assert [m["update"] for m in police.alarms(incident=iid)] == ["new", "cancelled"]
        assert police.events("cancel")[0]["detail"]["incident"] == iid
        state = gw.store.conn.execute("SELECT state, cancelled_at FROM incidents").fetchone()
        assert state[0] == "cancelled" and state[1] is not None
        # a press after the cancel opens a new incident
        again = unit.send(Alarm(AlarmKind.PANIC, 1, 9000))
        await site.port.wait_ack(again)
        await police.wait_for(lambda: len({m["incident"] for m in police.alarms()}) == 2)


async def test_police_ack_goes_back_to_the_unit(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=21)
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        first = unit.send(Alarm(AlarmKind.PANIC, 1, 100))
        second = unit.send(Alarm(AlarmKind.PANIC, 2, 100))
        await site.port.wait_ack(second)
        iid = f"{GATEWAY_ID}-shop-a-21-0"
        await police.wait_for(lambda: bool(police.alarms(incident=iid)))
        await police.ack(iid, by="Officer Liu", disposition="genuine")
        # the unit reads ACK state 2 for the incident's latest ALARM off the pty
        await site.port.wait_ack(second, AckState.POLICE_ACK, timeout=3)
        assert not site.port.acks_for(first, AckState.POLICE_ACK)
        await police.wait_for(lambda: any(m["update"] == "police_ack" for m in police.alarms()))
        msg = next(m for m in police.alarms() if m["update"] == "police_ack")
        assert msg["state"] == "police_ack" and msg["police_ack_by"] == "Officer Liu"
        assert msg["disposition"] == "genuine"
        row = gw.store.conn.execute(
            "SELECT state, police_ack_by, disposition FROM incidents WHERE id = ?", (iid,)
        ).fetchone()
        assert row == ("police_ack", "Officer Liu", "genuine")
        # repeated on the line, since a downlink frame can be lost
        await site.port.wait_for(
            lambda: len(site.port.acks_for(second, AckState.POLICE_ACK)) >= 2, timeout=3
        )
        # a second signed ack (a second officer) is not news: nothing new published,
        # the unit is told again
        await police.ack(iid, by="Officer Ma")
        await site.port.wait_for(
            lambda: len(site.port.acks_for(second, AckState.POLICE_ACK)) >= 4, timeout=5
        )
        assert sum(m["update"] == "police_ack" for m in police.alarms()) == 1


async def test_duress_checkin_opens_silent_incident_and_upgrades_panic(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    guard = site.unit("guard-n", epoch=5)
    shop = site.unit("shop-a", epoch=6)
    async with running_gateway(site, broker):
        c = guard.send(Checkin(flags=1, press_ms=5000))
        await site.port.wait_ack(c)
        await police.wait_for(lambda: bool(police.alarms()))
        msg = police.alarms()[0]
        assert msg["kind"] == "duress" and msg["contact_id"] == 121
        assert msg["unit"] == "guard-n"
        # panic on the leading edge, duress when the hold reaches the long press
        p = shop.send(Alarm(AlarmKind.PANIC, 1, 800))
        await site.port.wait_ack(p)
        d = shop.send(Alarm(AlarmKind.DURESS, 1, 800))
        await site.port.wait_ack(d)
        iid = f"{GATEWAY_ID}-shop-a-6-0"
        await police.wait_for(
            lambda: any(m["update"] == "kind" for m in police.alarms(incident=iid))
        )
        last = police.alarms(incident=iid)[-1]
        assert last["kind"] == "duress" and last["contact_id"] == 121
        assert len({m["incident"] for m in police.alarms()}) == 2


async def test_garbage_between_frames_is_counted_not_fatal(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=1)
    stranger = site.unit("shop-b", epoch=1)
    stranger.key = bytes(32)  # a forger without the key
    async with running_gateway(site, broker) as gw:
        site.port.write(b"\x00\xff\xfe garbage \x01\x02\x00" + bytes(range(1, 200)) + b"\x00")
        forged = stranger.make(Alarm(AlarmKind.PANIC, 1, 1))
        site.port.write(stranger.wire(forged))
        good = unit.make(Alarm(AlarmKind.PANIC, 1, 1))
        wire = unit.wire(good)
        broken = bytearray(wire)
        broken[5] ^= 0x40
        site.port.write(bytes(broken) + wire)
        await site.port.wait_ack(good)
        rejects = gw.receiver.rejects()
        assert rejects["oversize"] == 1
        assert rejects["corrupt"] >= 2
        assert rejects["forged"] == 1
        assert not site.port.acks_for(forged)
        await police.wait_for(lambda: bool(police.alarms()))
        assert [m["unit"] for m in police.alarms()] == ["shop-a"]


async def test_one_byte_at_a_time(site: Site, broker: Mosquitto, police: Police) -> None:
    unit = site.unit("shop-a", epoch=1)
    async with running_gateway(site, broker):
        frame = unit.make(Alarm(AlarmKind.FIRE, 1, 1))
        for b in unit.wire(frame):
            site.port.write(bytes([b]))
            await asyncio.sleep(0)
        await site.port.wait_ack(frame)
        await police.wait_for(lambda: bool(police.alarms()))
        assert police.alarms()[0]["kind"] == "fire"


async def test_acknowledged_incident_closes_when_quiet_unacknowledged_stays_open(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    """The duty room's list does not grow for ever; an unanswered alarm never leaves it."""
    acked_unit, left_unit = site.unit("shop-a", epoch=30), site.unit("shop-b", epoch=30)
    clock = ManualClock()
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        a = acked_unit.send(Alarm(AlarmKind.PANIC, 1, 100))
        b = left_unit.send(Alarm(AlarmKind.PANIC, 1, 100))
        await site.port.wait_ack(a)
        await site.port.wait_ack(b)
        acked, left = f"{GATEWAY_ID}-shop-a-30-0", f"{GATEWAY_ID}-shop-b-30-0"
        await police.wait_for(
            lambda: bool(police.alarms(incident=acked)) and bool(police.alarms(incident=left))
        )
        await police.ack(acked, disposition="false_alarm", at=clock.now())
        await site.port.wait_ack(a, AckState.POLICE_ACK, timeout=3)
        clock.advance(60)  # inside the 120 s window: still open, a press would fold in
        again = acked_unit.send(Alarm(AlarmKind.PANIC, 2, 100))
        await site.port.wait_ack(again, AckState.POLICE_ACK, timeout=3)
        clock.advance(121)  # quiet for the window since the last press
        await police.wait_for(lambda: any(m["update"] == "closed" for m in police.alarms()))
        closed = [m for m in police.alarms() if m["update"] == "closed"]
        assert [m["incident"] for m in closed] == [acked]
        assert closed[0]["state"] == "closed" and closed[0]["presses"] == 2
        assert closed[0]["closed_at"] is not None
        rows = dict(gw.store.conn.execute("SELECT id, state FROM incidents").fetchall())
        assert rows == {acked: "closed", left: "open"}
        # a press now opens a new incident
        later = acked_unit.send(Alarm(AlarmKind.PANIC, 1, 900))
        await site.port.wait_ack(later)
        await police.wait_for(lambda: bool(police.alarms(incident=f"{GATEWAY_ID}-shop-a-30-2")))
    # after a restart the open incident is open again (a press folds into it), the
    # closed one stays closed
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        more = acked_unit.send(Alarm(AlarmKind.PANIC, 2, 900))
        await site.port.wait_ack(more)
        await police.wait_for(
            lambda: any(
                m["presses"] == 2 for m in police.alarms(incident=f"{GATEWAY_ID}-shop-a-30-2")
            )
        )
        rows = dict(gw.store.conn.execute("SELECT id, state FROM incidents").fetchall())
        assert rows == {acked: "closed", left: "open", f"{GATEWAY_ID}-shop-a-30-2": "open"}
