"""What the issue demands beyond the happy path: status topic, rejects, attacks, restarts."""

from __future__ import annotations

import asyncio
import logging
import selectors
from typing import Any

import aiomqtt
import pytest

from gateway.core.clock import ManualClock
from gateway.link import receiver
from gateway.pipeline.pipeline import SECURITY_EVENT_INTERVAL_S
from gateway.relay import relay
from gateway.service.assembly import Gateway, Settings
from protocol import AckState, Alarm, AlarmKind, Cancel, Heartbeat, HeartbeatFlags
from tests.gateway.conftest import (
    GATEWAY_ID,
    GATEWAY_USER,
    SITE,
    Police,
    Site,
    police_for,
    running_gateway,
)
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

STATUS = f"campusguard/gateway/{GATEWAY_ID}/status"


async def test_status_topic_is_retained_online_then_offline(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        await police.wait_for(lambda: any(m.topic == STATUS for m in police.messages))
        assert [m.payload["state"] for m in police.messages if m.topic == STATUS] == ["online"]
    await police.wait_for(
        lambda: (
            [m.payload["state"] for m in police.messages if m.topic == STATUS][-1:] == ["offline"]
        )
    )
    # retained: a late subscriber learns the state at once
    late = police_for(broker, site)
    await late.start()
    try:
        await late.wait_for(lambda: any(m.topic == STATUS for m in late.messages))
        assert [m.payload["state"] for m in late.messages if m.topic == STATUS] == ["offline"]
        assert not any("/gateway/" in m.topic and m.topic != STATUS for m in late.messages)
    finally:
        await late.stop()


async def test_garbage_flood_does_not_starve_alarms_and_logs_are_rate_limited(
    site: Site, broker: Mosquitto, police: Police, caplog: pytest.LogCaptureFixture
) -> None:
    units = [site.unit("shop-a", epoch=2), site.unit("shop-b", epoch=2)]
    caplog.set_level(logging.INFO, logger=receiver.__name__)
    garbage = (bytes(range(1, 256)) * 8 + b"\x00") + (b"\x05\x01\x02\x03\x00" * 200)
    async with running_gateway(site, broker) as gw:
        frames = []
        for i in range(20):
            site.port.write(garbage)  # ~3 KB of oversize and corrupt pieces
            u = units[i % 2]
            frames.append(u.send(Alarm(AlarmKind.PANIC, 1 + i // 2, 100)))
        site.port.write(garbage)
        await site.port.wait_for(lambda: all(site.port.acks_for(f) for f in frames), timeout=10)
        await police.wait_for(lambda: any(m["presses"] == 10 for m in police.alarms()), 5)
        await police.wait_for(
            lambda: (
                {(m["unit"], m["presses"]) for m in police.alarms()}
                >= {("shop-a", 10), ("shop-b", 10)}
            ),
            timeout=5,
        )
        rejects = gw.receiver.rejects()
        assert rejects["oversize"] == 21
        assert rejects["corrupt"] + rejects["truncated"] >= 21 * 200
        assert len({m["incident"] for m in police.alarms()}) == 2
    lines = [r for r in caplog.records if r.name == receiver.__name__]
    # thousands of rejects, one line per reason (the interval is 10 s)
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]


async def test_forged_and_replayed_frames_make_one_rate_limited_forgery_event(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    real = site.unit("shop-a", epoch=20)
    forger = site.unit("shop-a", epoch=20)
    forger.key = bytes(32)  # claims shop-a's address without its key
    clock = ManualClock()
    async with running_gateway(site, broker, clock=clock) as gw:
        good = real.send(Alarm(AlarmKind.PANIC, 1, 10))
        await site.port.wait_ack(good)
        for i in range(30):
            site.port.write(forger.wire(forger.make(Alarm(AlarmKind.PANIC, 1, i))))
        stale = real.make(Alarm(AlarmKind.PANIC, 1, 10))
        stale_old = type(stale)(stale.unit, 5, 0, stale.body)  # an epoch long gone
        site.port.write(real.wire(stale_old))
        hb = real.send(Heartbeat(3700, 5, 0x0100, HeartbeatFlags(0)))
        await site.port.wait_ack(hb)
        await until(lambda: gw.receiver.rejects()["forged"] == 30)
        await police.wait_for(lambda: bool(police.events("forgery")), timeout=5)
        ev = police.events("forgery")
        assert len(ev) == 1, ev  # the first reject raises it; the rest wait for the interval
        assert ev[0]["unit"] == "shop-a" and ev[0]["detail"]["forged"] == 1
        assert ev[0]["detail"]["links"] == ["bus-a"]
        # the counts since are carried by the next event (rate-limited, not lost)
        clock.advance(SECURITY_EVENT_INTERVAL_S)  # the next tick reports what was held back
        await police.wait_for(lambda: len(police.events("forgery")) == 2, timeout=5)
        nxt = police.events("forgery")[1]["detail"]
        assert nxt["forged"] == 29 and nxt["replayed"] == 1
        assert {m["incident"] for m in police.alarms()} == {f"{GATEWAY_ID}-shop-a-20-0"}


async def test_restart_keeps_replay_window_and_open_incident(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=6)
    iid = f"{GATEWAY_ID}-shop-a-6-0"
    async with running_gateway(site, broker) as gw:
        first = unit.send(Alarm(AlarmKind.PANIC, 1, 300))
        await site.port.wait_ack(first)
        await until(lambda: gw.store.pending_count() == 0)
    async with running_gateway(site, broker) as gw:
        unit.resend(first)  # the unit missed the ACK: a retransmission after the restart
        await site.port.wait_for(lambda: len(site.port.acks_for(first)) >= 2, timeout=3)
        second = unit.send(Alarm(AlarmKind.PANIC, 2, 300))
        await site.port.wait_ack(second)
        await police.wait_for(lambda: any(m["presses"] == 2 for m in police.alarms()), 5)
        assert {m["incident"] for m in police.alarms()} == {iid}
        assert [m["update"] for m in police.alarms()].count("new") == 1
        n = gw.store.conn.execute("SELECT count(*) FROM frames WHERE type = 'ALARM'").fetchone()
        assert n == (2,)


async def test_press_after_police_ack_is_acked_police_acknowledged(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-b", epoch=3)
    iid = f"{GATEWAY_ID}-shop-b-3-0"
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        first = unit.send(Alarm(AlarmKind.PANIC, 1, 50))
        await police.wait_for(lambda: bool(police.alarms(incident=iid)))
        await police.ack(iid, by="Sgt Ma")
        await site.port.wait_ack(first, AckState.POLICE_ACK)
        again = unit.send(Alarm(AlarmKind.PANIC, 2, 50))
        await site.port.wait_ack(again, AckState.POLICE_ACK)  # the unit keeps showing it
        assert not site.port.acks_for(again, AckState.RECEIVED)
        unit.resend(again)  # and so does a retransmission
        await site.port.wait_for(
            lambda: len(site.port.acks_for(again, AckState.POLICE_ACK)) >= 2, timeout=3
        )


async def test_cancel_that_overtakes_its_alarm(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=9)
    alarm = unit.make(Alarm(AlarmKind.PANIC, 1, 70))
    cancel = unit.make(Cancel(alarm.epoch, alarm.seq))
    iid = f"{GATEWAY_ID}-shop-a-9-0"
    async with running_gateway(site, broker):
        site.port.write(unit.wire(cancel))
        await site.port.wait_ack(cancel, AckState.RECEIVED)
    async with running_gateway(site, broker):  # kept across a restart, too
        site.port.write(unit.wire(alarm))
        await site.port.wait_ack(alarm)
        await police.wait_for(lambda: len(police.alarms(incident=iid)) == 2)
        assert [m["update"] for m in police.alarms(incident=iid)] == ["new", "cancelled"]
        assert police.alarms(incident=iid)[-1]["state"] == "cancelled"
    assert SITE in police.alarms(incident=iid)[0]["site"]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "fallback"])
async def test_relay_paths_deliver_in_order_across_a_broker_restart(
    site: Site,
    persistent_broker: Mosquitto,
    duty_room: Police,
    monkeypatch: pytest.MonkeyPatch,
    direct: bool,
) -> None:
    """The direct publisher (aiomqtt internals) and the public-API fallback do the same."""
    broker, police = persistent_broker, duty_room
    if not direct:

        def no_internals(self: relay.Relay, client: object) -> None:
            raise AttributeError("as if aiomqtt had changed")

        monkeypatch.setattr(relay._Direct, "__init__", no_internals)
    units = [site.unit(u, epoch=4) for u in ("shop-a", "shop-b", "guard-n")]
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        assert (gw.relay._direct is not None) == direct
        first = [u.send(Alarm(AlarmKind.PANIC, 1, 10)) for u in units]
        for f in first:
            await site.port.wait_ack(f)
        await police.wait_for(lambda: len(police.alarms()) >= 3)
        broker.stop()
        await until(lambda: not gw.relay.connected.is_set())
        more = [u.send(Alarm(AlarmKind.PANIC, 2, 10)) for u in units]
        for f in more:
            await site.port.wait_ack(f)
        broker.start()
        await police.wait_for(
            lambda: (
                {(m["unit"], m["presses"]) for m in police.alarms()}
                >= {(u, 2) for u in ("shop-a", "shop-b", "guard-n")}
            ),
            timeout=10,
        )
        await until(lambda: gw.store.pending_count() == 0)
        for uid in ("shop-a", "shop-b", "guard-n"):
            nos = [m["update_no"] for m in police.alarms() if m["unit"] == uid]
            assert nos == sorted(nos), nos  # in order, per incident
        assert gw.relay.published >= 6
        client = gw.relay._pub_client
        assert client is not None
        sock = client._client.socket()  # no write watch left behind (it would spin the loop)
        assert sock is not None
        key = asyncio.get_running_loop()._selector.get_key(sock.fileno())  # type: ignore[attr-defined]
        assert not key.events & selectors.EVENT_WRITE
        stats = gw.stats()
        assert stats["publish_to_puback"] is not None and stats["commit"] is not None


async def test_gateway_stops_although_python_311_lost_the_publishers_cancel(
    site: Site, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a stop right after connecting hung the gateway (1 run in ~10).

    On Python 3.11 ``asyncio.wait_for`` inside aiomqtt's publish returns normally when the
    cancellation races with the PUBACK, and the cancel is lost. Here the publish of the
    ``online`` status does just that, deterministically.
    """
    original = aiomqtt.Client.publish
    gateways: list[Gateway] = []
    raced = asyncio.Event()

    async def racing_publish(self: aiomqtt.Client, topic: str, *args: Any, **kw: Any) -> None:
        if topic.endswith("/status") and not raced.is_set():
            raced.set()
            gateways[0].stop()  # the relay's TaskGroup will cancel the publisher
            try:
                await asyncio.Event().wait()  # the PUBACK, while the stop cancels us
            except asyncio.CancelledError:
                pass  # what 3.11's wait_for does when the result is there already
        await original(self, topic, *args, **kw)

    monkeypatch.setattr(aiomqtt.Client, "publish", racing_publish)
    settings = Settings(db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER))
    gw = Gateway(site.config, settings)
    gateways.append(gw)
    run = asyncio.create_task(gw.run())
    done, _ = await asyncio.wait({run}, timeout=8)
    if not done:  # the bug: free the publisher's loop so that the test fails, not hangs
        gw.relay._broken = "test gave up"
        await asyncio.wait({run}, timeout=8)
    assert done, "the gateway did not stop"
    assert raced.is_set()
    run.result()
