"""The MQTT side under attack, on a real Mosquitto: forged and replayed acks, floods of
oversized and nested payloads, replays on another line, a second gateway with our id.

Every attack here was acted on before acks were signed (issue 12): each test fails
without the check it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Unit
from gateway.core.errors import DuplicateGatewayError
from gateway.core.timefmt import iso
from gateway.relay.relay import STATUS_PERIOD_S
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import gateway_kid, write_pair
from gateway.service.assembly import status_topic
from protocol import AckState, Alarm, AlarmKind, Frame
from tests.gateway.conftest import (
    GATEWAY_ID,
    GATEWAY_USER,
    SITE,
    Police,
    Site,
    client_for,
    locked_broker,
    make_site,
    police_for,
    running_gateway,
)
from tests.support.fakeunit import FakePort, FakeUnit
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled, until

ACK = f"campusguard/{SITE}/ack/"
STATUS = status_topic("campusguard", GATEWAY_ID)


def forgeries(police: Police) -> list[dict[str, Any]]:
    return [e for e in police.events("forgery") if e["detail"].get("channel") == "mqtt"]


async def test_forged_police_acks_change_nothing_and_raise_one_forgery_event(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a", epoch=40)
    clock = ManualClock()
    iid = f"{GATEWAY_ID}-shop-a-40-0"
    stranger = Signer.load(
        write_pair(site.dir / "stranger", "dutyroom-police").parent, "dutyroom-police"
    )  # same name, another key
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 100))
        await site.port.wait_ack(frame)
        await police.wait_for(lambda: bool(police.alarms(incident=iid)))
        genuine = json.loads(await police.ack("other-incident", by="Officer Liu"))
        attacks: list[bytes] = [
            b"",  # was: an empty payload acked
            b'{"by": "Mallory", "disposition": "false_alarm"}',  # was: acted on in full
            stranger.seal_obj(
                ACK + iid,
                {
                    "kind": "police_ack",
                    "site": SITE,
                    "incident": iid,
                    "disposition": "test",
                    "by": "Mallory",
                    "nonce": "ab" * 16,
                    "at": iso(time.time()),
                },
            ).encode(),
            json.dumps(genuine).encode(),  # a genuine ack of another incident, moved here
            b"[" * 5000,  # deep nesting: was an uncaught RecursionError
            b"\xff\xfe",
        ]
        for payload in attacks:
            await police.publish(ACK + iid, payload)
        await police.wait_for(lambda: bool(forgeries(police)))
        event = forgeries(police)[0]
        await until(lambda: gw.pipeline.mqtt_rejects.total() >= len(attacks))
        clock.advance(600)  # past the incident window: a police_ack incident would close now
        await asyncio.sleep(0.3)  # a tick or two (nothing to wait on: nothing must happen)
        row = gw.store.conn.execute(
            "SELECT state, police_ack_by FROM incidents WHERE id = ?", (iid,)
        ).fetchone()
        assert row == ("open", None)
        assert not site.port.acks_for(frame, AckState.POLICE_ACK)
        assert not [m for m in police.alarms(incident=iid) if m["update"] != "new"]
        # one event at once, the rest counted into the next one (the window passed)
        await police.wait_for(lambda: len(forgeries(police)) == 2)
        counts: dict[str, int] = {}
        for e in forgeries(police):
            for k, v in e["detail"].items():
                if isinstance(v, int) and k != "window_s":
                    counts[k] = counts.get(k, 0) + v
        # the stranger's key and the moved ack do not verify; the rest does not parse
        assert counts == {"malformed": 4, "bad_signature": 2}
        assert event["detail"]["malformed"] == 1
        # the real duty room still can
        await police.ack(iid, by="Officer Liu")
        await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=3)


async def test_replayed_and_predated_acks_are_refused(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    a, b = site.unit("shop-a", epoch=41), site.unit("shop-b", epoch=41)
    ia, ib = f"{GATEWAY_ID}-shop-a-41-0", f"{GATEWAY_ID}-shop-b-41-0"
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        fa, fb = a.send(Alarm(AlarmKind.PANIC, 1, 1)), b.send(Alarm(AlarmKind.PANIC, 1, 1))
        await police.wait_for(
            lambda: bool(police.alarms(incident=ia)) and bool(police.alarms(incident=ib))
        )
        # dated before the incident was first published: not an answer to it
        await police.ack(ib, at=time.time() - 3600)
        await police.wait_for(lambda: bool(forgeries(police)))
        assert forgeries(police)[0]["detail"]["predated"] == 1
        payload = await police.ack(ia, by="Officer Liu")
        await site.port.wait_ack(fa, AckState.POLICE_ACK, timeout=3)
        n_acks = gw.store.conn.execute("SELECT count(*) FROM ack_nonces").fetchone()[0]
        await police.publish(ACK + ia, payload.encode())  # the same ack again
        await until(lambda: gw.pipeline.mqtt_rejects["replayed"] == 1)
        assert gw.store.conn.execute("SELECT count(*) FROM ack_nonces").fetchone()[0] == n_acks
        state = gw.store.conn.execute("SELECT state FROM incidents WHERE id = ?", (ib,))
        assert state.fetchone() == ("open",)
        assert not site.port.acks_for(fb, AckState.POLICE_ACK)


async def test_ack_sent_while_the_gateway_was_away_counts(
    site: Site, persistent_broker: Mosquitto
) -> None:
    """No wall-clock window: the persistent session delivers it, signed and fresh."""
    police = police_for(persistent_broker, site)
    await police.start()
    unit = site.unit("shop-a", epoch=42)
    iid = f"{GATEWAY_ID}-shop-a-42-0"
    try:
        async with running_gateway(site, persistent_broker) as gw:
            await gw.relay.connected.wait()
            frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
            await police.wait_for(lambda: bool(police.alarms(incident=iid)))
        await police.ack(iid, by="Officer Liu")  # the gateway is down
        async with running_gateway(site, persistent_broker) as gw:
            await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=5)
            row = gw.store.conn.execute("SELECT police_ack_by FROM incidents").fetchone()
            assert row == ("Officer Liu",)
    finally:
        await police.stop()


class CommandLog:
    """A watcher that records what reaches on_command (the duty watch's entry point)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        pass

    def on_link(self, link: str, up: bool, at: float) -> None:
        pass

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        self.commands.append((topic, json.loads(payload)))

    def tick(self, now: float) -> None:
        pass


async def test_forged_duty_ack_never_reaches_the_duty_watch(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    log = CommandLog()
    topic = f"campusguard/{SITE}/duty/gate/ack"
    async with running_gateway(site, broker) as gw:
        gw.attach([log])
        await gw.relay.connected.wait()
        await police.publish(topic, b'{"by": "Mallory"}')
        await police.publish(topic, b"")
        await police.wait_for(lambda: bool(forgeries(police)))
        genuine = await police.ack_duty("gate", by="Lead Li")
        await until(lambda: len(log.commands) == 1)
        await police.publish(topic, genuine.encode())  # replayed: once per missed check-in
        await until(lambda: gw.pipeline.mqtt_rejects["replayed"] == 1)
        assert [(t, c["by"]) for t, c in log.commands] == [(topic, "Lead Li")]


async def dropped_by_the_broker(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """Publish as another duty room; the broker must close that connection (no PUBACK).

    Waits on the disconnection itself: aiomqtt's publish would only give up after its own
    10 s timeout, as a PUBACK that never comes looks the same as a slow one.
    """
    async with client_for(broker.settings("dutyroom-desk2")) as sender:
        publishing = asyncio.create_task(sender.publish(topic, payload, qos=1))
        try:
            with pytest.raises(aiomqtt.MqttError, match="Disconnected"):
                async with asyncio.timeout(scaled(10)):
                    async for _ in sender.messages:
                        pass
            assert not publishing.done() or publishing.exception() is not None  # no PUBACK
        finally:
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await publishing


async def test_oversized_payload_is_dropped_unparsed_and_the_alarm_path_holds(
    site: Site, broker: Mosquitto, police: Police, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    unit = site.unit("shop-b", epoch=43)
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        for _ in range(3):  # under the broker's packet limit, over the gateway's
            await police.publish(ACK + "x", b"{" + b" " * 12_000 + b"}")
        await until(lambda: gw.relay.oversized == 3)
        await dropped_by_the_broker(broker, ACK + "y", b"x" * 20_000_000)
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
        await site.port.wait_ack(frame)
        await police.wait_for(lambda: bool(police.alarms()))
    assert sum("unparsed" in r.getMessage() for r in caplog.records) == 1  # once per window


async def test_replay_on_another_line_does_not_move_the_downlink_and_is_not_acked_each_time(
    tmp_path: Path, broker: Mosquitto
) -> None:
    site = make_site(tmp_path)
    other = FakePort(tmp_path / "ttyBUS1")
    text = site.config_path.read_text().replace(
        "links:\n", f"links:\n  - {{id: bus-b, port: {other.path}, baud: 115200}}\n"
    )
    site.config_path.write_text(text)
    site = Site(
        site.dir,
        site.config_path,
        site.keydir,
        site.db,
        site.port,
        site.keys,
        site.addrs,
        site.dutyroom_dir,
    )
    unit = site.unit("shop-a", epoch=44)
    attacker = FakeUnit(other, site.addrs["shop-a"], b"\0" * 32)  # wire bytes only
    try:
        async with running_gateway(site, broker) as gw:
            frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
            await site.port.wait_ack(frame)
            recorded = unit.wire(frame)
            for _ in range(200):
                other.write(recorded)  # a recorded frame played back on line B
            await until(lambda: gw.pipeline.reacks_suppressed >= 190)
            later = unit.send(Alarm(AlarmKind.PANIC, 2, 1))
            await site.port.wait_ack(later)  # on line A, where the unit is
            assert not other.acks_for(later)
            assert len(other.acks_for(frame)) <= 2  # not 200
            assert attacker.port is other
    finally:
        site.port.close()
        other.close()


async def publish_as_the_gateway(police: Police, payload: bytes) -> None:
    """Publish a status with the gateway's broker account while the gateway runs.

    The client id is the user name, so this connection takes the gateway's over; the
    gateway reconnects at once (its first pause is drawn from 0-100 ms) and may take the id
    back before the PUBACK came (a loaded machine slows this side's TLS connect more than
    the gateway's pause). Then publish again: a second copy changes nothing a test here
    checks.
    """
    for _ in range(20):
        try:
            await police.publish(STATUS, payload, retain=True, user=GATEWAY_USER)
            return
        except aiomqtt.MqttError:
            continue
    raise AssertionError("the gateway's account never stayed connected long enough to publish")


async def test_previous_runs_retained_online_does_not_block_a_restart(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
    before = {
        "gateway": GATEWAY_ID,
        "state": "online",
        "instance": "0" * 16,
        "at": iso(time.time() - 30),
        "started_at": iso(time.time() - 3600),
    }
    await police.publish(
        STATUS, signer.seal_obj(STATUS, before).encode(), retain=True, user=GATEWAY_USER
    )
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        mine = gw.relay.instance
        await police.wait_for(
            lambda: any(
                m.topic == STATUS and m.payload.get("instance") == mine for m in police.messages
            )
        )
        ok = [
            m.payload
            for m in police.messages
            if m.topic == STATUS and m.payload["instance"] == mine
        ]
        assert ok[0]["state"] == "online" and ok[0]["gateway"] == GATEWAY_ID
        assert gw.healthy


async def test_a_second_instance_with_our_id_stops_the_gateway_loudly(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
    with pytest.raises(ExceptionGroup) as info:
        async with running_gateway(site, broker) as gw:
            await gw.relay.connected.wait()
            rival = {
                "gateway": GATEWAY_ID,
                "state": "online",
                "instance": "f" * 16,
                "at": iso(time.time() + 1),
                "started_at": iso(time.time()),
            }
            await publish_as_the_gateway(police, signer.seal_obj(STATUS, rival).encode())
            # the gateway must stop first: running_gateway ends the wait when it fails
            await asyncio.wait_for(asyncio.Event().wait(), scaled(10))
    assert info.group_contains(DuplicateGatewayError)
    db = sqlite3.connect(site.db)  # journalled: published at the next start
    kinds = [json.loads(d).get("reason") for (d,) in db.execute("SELECT detail FROM events")]
    db.close()
    assert "duplicate_gateway" in kinds


async def test_forged_status_on_our_topic_is_reported_and_corrected(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        forged = json.dumps({"state": "online", "at": iso(time.time())}).encode()
        # someone with the gateway's broker password, not its signing key
        await publish_as_the_gateway(police, forged)
        await police.wait_for(
            lambda: any(e["detail"].get("forged_status") for e in forgeries(police))
        )
        # the gateway published its signed status again: a late subscriber sees the truth
        await until(lambda: sum(1 for m in police.messages if m.topic == STATUS) >= 2, timeout=5)
        assert ("campusguard/gateway/gw-test/status", "malformed") in police.dropped


async def test_broker_failures_are_logged_once_per_window(
    site: Site, tmp_path: Path, ca_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    dead = locked_broker(tmp_path / "dead", ca_dir)  # configured, never started
    async with running_gateway(site, dead) as gw:
        await until(lambda: gw.relay.failures >= 4, timeout=10)
    lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 1  # was: one in 20 failures, whatever the time


async def test_event_ids_carry_the_gateway_id(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        await police.publish(ACK + "x", b"{}")
        await police.wait_for(lambda: bool(forgeries(police)))
    event = forgeries(police)[0]
    assert str(event["event"]).startswith(f"{GATEWAY_ID}-")


async def test_what_the_gateway_publishes_is_signed_for_its_topic(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
    body = {"gateway": GATEWAY_ID, "incident": "i", "update": "new"}
    payload = signer.seal_obj("p/s/alarm/u", body).encode()
    assert open_gateway("p/s/alarm/u", payload, site.trusted) == body
    with pytest.raises(ValueError, match="bad_signature"):
        open_gateway("p/other-site/alarm/u", payload, site.trusted)  # moved to another topic
    other = {**body, "gateway": "gw-other"}  # our key, speaking for another gateway
    with pytest.raises(ValueError, match="wrong_signer"):
        open_gateway("p/s/alarm/u", signer.seal_obj("p/s/alarm/u", other).encode(), site.trusted)
    site.port.close()


async def test_messages_waiting_from_before_signing_or_a_key_rotation_are_signed_again(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    from gateway.journal.store import Store

    old = Signer.load(write_pair(site.dir / "old", gateway_kid(GATEWAY_ID)).parent,
                      gateway_kid(GATEWAY_ID))  # fmt: skip
    store = Store(site.db)
    topic = f"campusguard/{SITE}/event/{GATEWAY_ID}"
    body = {"event": "x", "gateway": GATEWAY_ID, "kind": "test_plain"}
    with store.transaction():
        store.enqueue(at=0.0, topic=topic, payload=json.dumps(body))  # an older version's
        store.enqueue(at=0.0, topic=topic, payload=old.seal_obj(topic, {**body, "kind": "k2"}))
    store.close()
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        await police.wait_for(lambda: len(police.events()) >= 2)
    assert [e["kind"] for e in police.events()][:2] == ["test_plain", "k2"]
    assert not police.dropped


async def test_two_gateway_processes_with_one_id_one_stops_with_one_line(
    site: Site, broker: Mosquitto, tmp_path: Path
) -> None:
    """Was: 116 status messages in 12 s and a retained offline while one ran."""
    s = broker.settings(GATEWAY_USER)
    procs = []
    for name in ("a", "b"):
        procs.append(
            await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("campusguard")),
                "gateway",
                "--config",
                str(site.config_path),
                "--keydir",
                str(site.keydir),
                "--db",
                str(tmp_path / f"{name}.db"),
                *s.cli_args(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **s.environ()},
            )
        )
    try:
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in procs],
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert done, "neither gateway noticed the other"
        stopped = next(p for p in procs if p.returncode is not None)
        assert stopped.returncode == 1
        assert stopped.stderr is not None
        text = (await stopped.stderr.read()).decode()
        last = text.strip().splitlines()[-1]
        assert last.startswith("campusguard gateway: another gateway runs as 'gw-test'"), text
        assert "Traceback" not in text
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
                await p.wait()


async def test_status_is_signed_again_every_period(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    clock = ManualClock()
    async with running_gateway(site, broker, clock=clock) as gw:
        await gw.relay.connected.wait()

        def statuses() -> list[dict[str, Any]]:
            return [m.payload for m in police.messages if m.topic == STATUS]

        await police.wait_for(lambda: len(statuses()) == 1)

        def a_second_later() -> bool:  # the gateway's clock moves on until the next status
            clock.advance(1.0)
            return len(statuses()) >= 2

        await until(a_second_later, timeout=10)
        assert clock.now() - 1_767_225_600.0 >= STATUS_PERIOD_S
        first, again = statuses()
        assert again["state"] == "online" and again["instance"] == first["instance"]
        assert again["at"] > first["at"] and again["period_s"] == STATUS_PERIOD_S
