"""The broker as broker-config writes it, on a real Mosquitto, against the open one."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from gateway.core.broker import BrokerSettings
from gateway.security.brokerconfig import password_hash
from protocol import AckState, Alarm, AlarmKind
from tests.gateway.conftest import (
    DUTYROOM_USER,
    GATEWAY_ID,
    GATEWAY_USER,
    SITE,
    Police,
    Site,
    client_for,
    police_for,
    running_gateway,
)
from tests.support.mosquitto import Mosquitto, open_broker
from tests.support.timing import scaled

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
ALARMS = f"campusguard/{SITE}/alarm/+"


# For each reader, someone who may write a topic it may read: after the probe, their
# message is the sign that everything published before it has reached the reader.
SENTINELS = {
    DUTYROOM_USER: (GATEWAY_USER, f"campusguard/{SITE}/alarm/sentinel"),
    "viewer-press": (GATEWAY_USER, f"campusguard/{SITE}/alarm/sentinel"),
    GATEWAY_USER: (DUTYROOM_USER, f"campusguard/{SITE}/ack/sentinel"),
}


async def delivered(broker: Mosquitto, writer: str, topic: str, reader: str, sub: str) -> bool:
    """Does a message ``writer`` publishes on ``topic`` reach ``reader`` subscribed to ``sub``?

    An absence is not waited out: once the probe's PUBACK is in (the broker has decided
    on it), a message the reader may read is published after it; Mosquitto (one thread)
    queues a subscriber's messages in the order it took them, so the probe, if it was
    delivered, comes first.
    """
    sentinel_writer, sentinel = SENTINELS[reader]
    async with client_for(broker.settings(reader)) as r:
        await r.subscribe(sub, qos=1)
        await r.subscribe(sentinel, qos=1)
        async with client_for(broker.settings(writer)) as w:
            await w.publish(topic, b"probe", qos=1)
        async with client_for(broker.settings(sentinel_writer)) as w:
            await w.publish(sentinel, b"sentinel", qos=1)
        async with asyncio.timeout(scaled(5)):
            async for m in r.messages:
                if m.payload == b"probe":
                    return str(m.topic) == topic
                if m.payload == b"sentinel":
                    return False
    raise AssertionError("unreachable: the messages of a connected client do not end")


async def test_who_may_publish_and_read_what(broker: Mosquitto) -> None:
    ack = f"campusguard/{SITE}/ack/x"
    status = f"campusguard/gateway/{GATEWAY_ID}/status"
    # the gateway writes its alarms and status; a duty room reads them
    assert await delivered(
        broker, GATEWAY_USER, f"campusguard/{SITE}/alarm/u", DUTYROOM_USER, ALARMS
    )
    assert await delivered(broker, GATEWAY_USER, status, DUTYROOM_USER, status)
    # a duty room writes acks, the gateway reads them
    assert await delivered(broker, DUTYROOM_USER, ack, GATEWAY_USER, f"campusguard/{SITE}/ack/+")
    # and nothing else: no fake alarms or status from a duty room, no acks from the
    # gateway, nothing at all from a viewer, no alarms read by the gateway
    assert not await delivered(
        broker, DUTYROOM_USER, f"campusguard/{SITE}/alarm/u", "viewer-press", ALARMS
    )
    assert not await delivered(broker, DUTYROOM_USER, status, "viewer-press", status)
    assert not await delivered(broker, GATEWAY_USER, ack, DUTYROOM_USER, ack)
    assert not await delivered(broker, "viewer-press", ack, GATEWAY_USER, ack)
    assert not await delivered(
        broker, "gateway-intruder", f"campusguard/{SITE}/alarm/u", GATEWAY_USER, ALARMS
    )


async def test_anonymous_and_unknown_clients_are_refused(broker: Mosquitto) -> None:
    s = broker.settings(DUTYROOM_USER)
    for user, password in ((None, None), (DUTYROOM_USER, "wrong"), ("nobody", "x")):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                s.host, s.port, username=user, password=password, tls_context=s.tls_context()
            ):
                pass
    # the password without a client certificate: the TLS layer refuses it before MQTT
    # (through aiomqtt this waited out its 10 s CONNACK timeout: it misses the TLS alert)
    assert await asyncio.to_thread(mqtt_connect, s, certificate=False) == b""  # no CONNACK
    # the same CONNECT with the certificate is accepted (CONNACK, code 0): the probe speaks MQTT
    assert await asyncio.to_thread(mqtt_connect, s, certificate=True) == b"\x20\x02\x00\x00"


def mqtt_connect(s: BrokerSettings, *, certificate: bool) -> bytes:
    """Send an MQTT 3.1.1 CONNECT with ``s``'s user and password over TLS, with or without
    the client certificate; the first 4 bytes back (a CONNACK), b"" if the broker closed
    the connection instead (the TLS alert "certificate required", or an EOF when the alert
    came before the CONNECT was written, or a reset)."""

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    assert s.username and s.password
    body = (
        field(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")  # user, password, clean
        + field(b"probe") + field(s.username.encode()) + field(s.password.encode())
    )  # fmt: skip
    assert len(body) < 128  # one byte of remaining length
    ctx = ssl.create_default_context(cafile=s.ca_file)
    if certificate:
        assert s.client_cert and s.client_key
        ctx.load_cert_chain(s.client_cert, s.client_key)
    try:
        with (
            socket.create_connection((s.host, s.port), timeout=scaled(5)) as raw,
            ctx.wrap_socket(raw, server_hostname=s.host) as tls,
        ):
            tls.sendall(bytes([0x10, len(body)]) + body)
            return tls.recv(4)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""  # the alert, or a reset when the broker closed before reading it all


async def test_the_gateways_client_id_cannot_be_taken_over(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    """Client ids are the user names: claiming the gateway's id takes nothing over.

    Was: connecting as ``campusguard-<gateway id>`` with a persistent session received
    the real police ack instead of the gateway.
    """
    unit = site.unit("shop-a", epoch=51)
    iid = f"{GATEWAY_ID}-shop-a-51-0"
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        async with client_for(
            broker.settings("dutyroom-desk2"), identifier=f"campusguard-{GATEWAY_ID}",
            clean_session=False,
        ) as thief:  # fmt: skip
            await thief.subscribe(f"campusguard/{SITE}/ack/+", qos=1)
            frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
            await police.wait_for(lambda: bool(police.alarms(incident=iid)))
            await police.ack(iid)
            await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=5)
        assert gw.relay.connects == 1  # never kicked off


async def test_an_open_broker_lets_anyone_in_but_acks_still_need_a_key(
    site: Site, tmp_path: Path
) -> None:
    """The one anonymous broker: what it allows (everything), what it cannot (acks)."""
    with open_broker(tmp_path / "open") as open_mqtt:
        anyone = open_mqtt.settings()
        assert anyone.username is None and not anyone.tls
        police = police_for(open_mqtt, site)
        await police.start()
        try:
            async with running_gateway(site, open_mqtt) as gw:
                await gw.relay.connected.wait()
                # an anonymous stranger reads the alarm with the owner's phone number ...
                async with client_for(anyone) as stranger:
                    await stranger.subscribe(ALARMS, qos=1)
                    frame = site.unit("shop-a", epoch=50).send(Alarm(AlarmKind.PANIC, 1, 1))
                    await site.port.wait_ack(frame)
                    async with asyncio.timeout(scaled(5)):
                        async for m in stranger.messages:
                            assert b"Owner of shop-a" in bytes(m.payload)  # type: ignore[arg-type]
                            break
                    # ... and can publish an ack, which the gateway refuses
                    iid = f"{GATEWAY_ID}-shop-a-50-0"
                    await stranger.publish(f"campusguard/{SITE}/ack/{iid}", b'{"by":"x"}', qos=1)
                await police.wait_for(lambda: bool(police.events("forgery")))
                row = gw.store.conn.execute("SELECT state FROM incidents").fetchone()
                assert row == ("open",)
        finally:
            await police.stop()


def test_password_file_hashes_are_mosquittos_format() -> None:
    h = password_hash("secret", salt=bytes(12))
    kind, iterations, salt, digest = h.split("$")[1:]
    assert (kind, iterations, salt) == ("7", "101", "AAAAAAAAAAAAAAAA")
    assert len(digest) == 88  # 64 bytes of PBKDF2-SHA512, base64


def test_broker_config_command_writes_a_broker_mosquitto_accepts(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[2] / "boards.yaml"
    out = tmp_path / "broker"
    cmd = [CAMPUSGUARD, "broker-config", "--config", str(cfg), "--out", str(out)]
    res = subprocess.run([*cmd, "--dutyroom", "police-hexi", "--viewer", "press"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    acl = (out / "acl").read_text()
    assert "user gateway-hx-gw1" in acl and "topic write campusguard/hexi-primary/ack/+" in acl
    conf = (out / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "use_username_as_clientid true", "max_packet_size"):
        assert line in conf
    password = (out / "credentials" / "dutyroom-police-hexi.password").read_text()
    again = subprocess.run([*cmd, "--dutyroom", "police-hexi", "--rotate", "viewer-press",
                            "--viewer", "press"], capture_output=True, check=True)  # fmt: skip
    assert again.returncode == 0
    assert (out / "credentials" / "dutyroom-police-hexi.password").read_text() == password
    bad = subprocess.run([*cmd, "--dutyroom", "x=no-such-site"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert bad.returncode == 2 and "no-such-site" in bad.stderr
