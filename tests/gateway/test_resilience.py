"""Nothing is lost: broker down, broker never there, port gone, gateway SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core.clock import SystemClock
from gateway.journal.store import Store
from gateway.relay.relay import Relay
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid
from gateway.service.assembly import status_topic
from protocol import Alarm, AlarmKind, Heartbeat, HeartbeatFlags
from tests.gateway.conftest import (
    GATEWAY_ID,
    GATEWAY_USER,
    SITE,
    Police,
    Site,
    locked_broker,
    police_for,
    running_gateway,
)
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled, until

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


async def test_broker_down_then_up_nothing_lost(
    site: Site, persistent_broker: Mosquitto, duty_room: Police
) -> None:
    # the duty room's session survives the outage, so it cannot miss what the gateway
    # publishes before the duty room has reconnected
    broker, police = persistent_broker, duty_room
    units = [site.unit(u, epoch=3) for u in ("shop-a", "shop-b")]
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        broker.stop()
        await until(lambda: not gw.relay.connected.is_set())
        frames = [u.send(Alarm(AlarmKind.PANIC, 1, 10)) for u in units]
        for f in frames:  # journalled and ACKed although the police cannot be told yet
            await site.port.wait_ack(f)
        # each alarm, and its retained open/<incident> (beside the gateway's broker_lost
        # and whatever of the register published at start was not PUBACKed yet)
        waiting = [
            r.topic
            for r in gw.store.pending(100)
            if "/event/" not in r.topic and "/register/" not in r.topic
        ]
        assert len(waiting) == 4, waiting
        broker.start()
        await police.wait_for(lambda: len(police.alarms()) == 2, timeout=10)
        await until(lambda: gw.store.pending_count() == 0)
        assert {m["unit"] for m in police.alarms()} == {"shop-a", "shop-b"}


async def test_relay_reconnects_after_a_dropped_connection_on_python_3_11_2(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Regression: on Debian 12's /usr/bin/python3 (3.11.2, the Pi's interpreter) the relay
    never reconnected after a broker restart; alarms would have waited in the outbox for ever.

    The dropped connection failed the message iterator after the body of the connection's
    TaskGroup had ended, so the group cancelled the relay's task to leave, and before Python
    3.13 it never took that cancellation back. On 3.11.2 asyncio.timeout, the reconnect
    backoff, then ended the relay instead of expiring. Without the fix this test fails on
    3.11.2 ("the relay ended") and on 3.11.3 to 3.12 too, where the stray cancellation stayed
    pending but harmless ("a cancellation nobody asked for"); 3.13 does not leave it.
    """
    signer = Signer(gateway_kid(GATEWAY_ID), Ed25519PrivateKey.generate())
    store = Store(tmp_path / "journal.db")
    store.seal = signer.seal
    relay = Relay(
        store,
        broker.settings(GATEWAY_USER),
        SystemClock(),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[f"campusguard/{SITE}/ack/+"],
        status_topic=status_topic("campusguard", GATEWAY_ID),
        on_message=lambda topic, payload: None,
        signer=signer,
        gateway_id=GATEWAY_ID,
    )
    store.on_commit = relay.submit
    task = asyncio.create_task(relay.run(), name="relay")
    try:
        for outage in (1, 2):
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            failures = relay.failures
            broker.stop()
            await until(lambda: relay.failures > failures)  # noqa: B023
            body = f'{{"gateway": "{GATEWAY_ID}", "outage": {outage}}}'
            store.enqueue(at=0.0, topic=f"campusguard/{SITE}/alarm/regression", payload=body)
            broker.start()
            await until(
                lambda: task.done() or (relay.connects > outage and not store.pending_count()),  # noqa: B023
                timeout=10,
            )
            assert not task.done(), "the relay ended after a dropped connection"
            assert task.cancelling() == 0, "a cancellation nobody asked for is pending"
    finally:
        relay.stop()
        await asyncio.wait({task}, timeout=10)
        store.close()
    task.result()  # stopped, and without an error


async def test_unreachable_broker_is_retried_while_alarms_wait(
    tmp_path: Path, site: Site, ca_dir: Path
) -> None:
    # the duty room's subscription exists (persistent session) before the broker goes away
    broker = locked_broker(tmp_path / "late-broker", ca_dir, persistent=True)
    broker.start()
    police = police_for(broker, site, identifier="duty-room")
    await police.start()
    await police.stop()
    broker.stop()
    unit = site.unit("shop-a", epoch=2)
    try:
        async with running_gateway(site, broker) as gw:
            frame = unit.send(Alarm(AlarmKind.MEDICAL, 1, 10))
            await site.port.wait_ack(frame)  # READY and ACKing without any broker
            await until(lambda: gw.relay.failures >= 2, timeout=5)
            # the alarm and its retained open copy (beside the gateway's own life events and
            # the register it publishes at start)
            waiting = [
                r.topic
                for r in gw.store.pending(100)
                if "/event/" not in r.topic and "/register/" not in r.topic
            ]
            assert len(waiting) == 2, waiting
            broker.start()
            await until(lambda: gw.store.pending_count() == 0, timeout=10)
            await police.start()
            await police.wait_for(lambda: bool(police.alarms()), timeout=5)
            assert police.alarms()[0]["kind"] == "medical"
            await police.stop()
    finally:
        broker.stop()


async def test_port_vanishes_and_returns(site: Site, broker: Mosquitto, police: Police) -> None:
    unit = site.unit("shop-a", epoch=4)
    async with running_gateway(site, broker) as gw:
        link = gw.links["bus-a"]
        site.port.vanish()
        await police.wait_for(lambda: bool(police.events("link_down")), timeout=5)
        down = police.events("link_down")[0]
        assert down["code"] == 350 and down["qualifier"] == 1
        assert down["detail"]["link"] == "bus-a"
        site.port.restore()
        await until(lambda: link.up is True, timeout=5)
        await police.wait_for(lambda: bool(police.events("link_up")), timeout=5)
        assert police.events("link_up")[0]["qualifier"] == 3
        frame = unit.make(Alarm(AlarmKind.PANIC, 1, 1))
        await unit.send_until_acked(frame, timeout=5)
        await police.wait_for(lambda: bool(police.alarms()))
        rows = gw.store.conn.execute(
            "SELECT kind, code, qualifier FROM events WHERE kind NOT IN"
            " ('gateway_start', 'gateway_stop', 'broker_lost', 'broker_back') ORDER BY id"
        ).fetchall()
        assert rows == [("link_down", 350, 1), ("link_up", 350, 3)]


async def test_missing_key_rejects_that_unit_only(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    (site.keydir / "shop-b.key").unlink()
    a, b = site.unit("shop-a", epoch=1), site.unit("shop-b", epoch=1)
    async with running_gateway(site, broker) as gw:
        fb = b.send(Alarm(AlarmKind.PANIC, 1, 1))
        fa = a.send(Alarm(AlarmKind.PANIC, 1, 1))
        await site.port.wait_ack(fa)
        assert gw.receiver.rejects()["unknown_unit"] == 1
        assert not site.port.acks_for(fb)


def _gateway_proc(site: Site, broker: Mosquitto, log: Path) -> subprocess.Popen[bytes]:
    s = broker.settings(GATEWAY_USER)
    return subprocess.Popen(
        [
            CAMPUSGUARD,
            "-v",
            "gateway",
            "--config",
            str(site.config_path),
            "--keydir",
            str(site.keydir),
            "--db",
            str(site.db),
            *s.cli_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}, **s.environ()},
    )


async def test_sigkill_mid_burst_then_restart(
    tmp_path: Path, site: Site, broker: Mosquitto, police: Police
) -> None:
    """Units retransmit until ACKed, as the firmware does; the gateway dies mid-burst."""
    units = [site.unit(u, epoch=8) for u in ("shop-a", "shop-b", "guard-n")]
    log = tmp_path / "gateway.log"
    proc = _gateway_proc(site, broker, log)
    try:
        warm = units[0].make(Heartbeat(3700, 5, 0x0100, HeartbeatFlags(0)))
        await units[0].send_until_acked(warm, timeout=10)  # the gateway is up
        by_addr = {u.addr: u for u in units}
        frames = [units[i % 3].make(Alarm(AlarmKind.PANIC, 1 + i // 3, 500)) for i in range(30)]
        for f in frames[:12]:  # the first ones go through, one by one
            by_addr[f.unit].resend(f)
            await site.port.wait_ack(f)
        for f in frames[12:20]:  # then a burst, and the gateway dies in the middle of it
            by_addr[f.unit].resend(f)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for f in frames[20:]:  # nobody listening: these are lost on the line
            by_addr[f.unit].resend(f)
        acked_before = sum(1 for f in frames if site.port.acks_for(f))
        assert 12 <= acked_before < len(frames)
        proc = _gateway_proc(site, broker, log)
        # every unit retransmits what is not ACKed yet, until it is
        await asyncio.gather(*(by_addr[f.unit].send_until_acked(f, timeout=20) for f in frames))
        # one incident per unit, opened by its first ALARM: never a second id
        # shop-a's seq 0 was the warm-up heartbeat
        expected = {
            f"{GATEWAY_ID}-shop-a-8-1",
            f"{GATEWAY_ID}-shop-b-8-0",
            f"{GATEWAY_ID}-guard-n-8-0",
        }
        await police.wait_for(lambda: {m["incident"] for m in police.alarms()} >= expected, 10)
        await police.wait_for(
            lambda: all(
                any(m["presses"] == 10 for m in police.alarms(incident=i)) for i in expected
            ),
            timeout=10,
        )
        assert {m["incident"] for m in police.alarms()} == expected
        news = [m for m in police.alarms() if m["update"] == "new"]
        assert len(news) >= 3
        assert {m["incident"] for m in news} == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
    assert rc == 0, log.read_text()
    db = sqlite3.connect(site.db)
    assert db.execute("SELECT count(*) FROM frames WHERE type = 'ALARM'").fetchone() == (30,)
    assert db.execute("SELECT count(*) FROM incidents").fetchone() == (3,)
    assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (0,)
    assert db.execute("SELECT sum(presses) FROM incidents").fetchone() == (30,)
