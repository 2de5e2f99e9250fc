"""Fixtures for gateway tests: a real Mosquitto, a register with keys, fake units on ptys,
an MQTT listener (the police's view) and the gateway run in-process."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.broker import BrokerSettings
from gateway.core.cancelling import cancel_and_wait, raise_if_cancelling
from gateway.core.config import Config, load_config
from gateway.core.errors import EnvelopeError
from gateway.relay.acks import make_ack
from gateway.security.brokerconfig import Accounts
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import (
    dutyroom_kid,
    gateway_keys,
    gateway_kid,
    public_path,
    write_pair,
)
from gateway.service.assembly import Gateway, Settings
from tests.support import register
from tests.support.fakeunit import FakePort, FakeUnit
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled
from tests.support.timing import until as until  # for tests written before it moved

GATEWAY_ID = "gw-test"
SITE = "test-school"


def register_yaml(port_path: Path, units: list[tuple[str, int]], *, window_s: int = 120) -> str:
    """A small boards.yaml: one link at ``port_path``, one unit per (id, addr)."""
    doc = register.small(
        gateway_id=GATEWAY_ID,
        site={
            "id": SITE,
            "name": "Test School",
            "address": "1 Test Road",
            "security_lead": {"name": "Lead", "phone": "1"},
        },
        defaults={"incident_window_s": window_s},
        links=[{"id": "bus-a", "port": str(port_path), "baud": 115200}],
        units=[register.unit(uid, addr, site=SITE, link="bus-a") for uid, addr in units],
    )
    return register.to_yaml(doc)


DUTYROOM = "police"


@dataclass
class Site:
    """A register, its keys and the pty the units talk on.

    ``keydir`` is the gateway's (unit keys, its signing key, the duty room's public key);
    ``dutyroom_dir`` the duty room's (its signing key, the gateway's public key).
    """

    dir: Path
    config_path: Path
    keydir: Path
    db: Path
    port: FakePort
    keys: dict[str, bytes]
    addrs: dict[str, int]
    dutyroom_dir: Path
    config: Config = field(init=False)

    def __post_init__(self) -> None:
        self.config = load_config(self.config_path)

    @property
    def signer(self) -> Signer:
        """The duty room's signing key."""
        return Signer.load(self.dutyroom_dir, dutyroom_kid(DUTYROOM))

    @property
    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """The gateways' public keys, as the duty room holds them."""
        return gateway_keys(self.dutyroom_dir)

    def unit(self, uid: str, epoch: int = 1) -> FakeUnit:
        return FakeUnit(self.port, self.addrs[uid], self.keys[uid], epoch=epoch)


DEFAULT_UNITS = [("shop-a", 257), ("shop-b", 258), ("guard-n", 300)]


def make_site(
    tmp: Path, units: list[tuple[str, int]] | None = None, *, window_s: int = 120
) -> Site:
    units = units or DEFAULT_UNITS
    port = FakePort(tmp / "ttyBUS0")
    cfg = tmp / "boards.yaml"
    cfg.write_text(register_yaml(port.path, units, window_s=window_s))
    keydir = tmp / "keys"
    keydir.mkdir()
    keys = {}
    for uid, _ in units:
        keys[uid] = secrets.token_bytes(32)
        (keydir / f"{uid}.key").write_text(keys[uid].hex() + "\n")
    dutyroom_dir = tmp / "dutyroom"
    install_signing_keys(keydir, dutyroom_dir, GATEWAY_ID)
    return Site(tmp, cfg, keydir, tmp / "var" / "gateway.db", port, keys, dict(units), dutyroom_dir)


def install_signing_keys(keydir: Path, dutyroom_dir: Path, gateway_id: str) -> None:
    """The gateway's key pair and the duty room's, each public half where the other reads it."""
    gw = gateway_kid(gateway_id)
    write_pair(keydir, gw)
    write_pair(dutyroom_dir, dutyroom_kid(DUTYROOM))
    shutil.copy(public_path(keydir, gw), public_path(dutyroom_dir, gw))
    shutil.copy(
        public_path(dutyroom_dir, dutyroom_kid(DUTYROOM)),
        public_path(keydir, dutyroom_kid(DUTYROOM)),
    )


# the broker's accounts in every test: this gateway, the duty room, a viewer (any site)
ACCOUNTS = Accounts(
    # "intruder": a broker account that may write this site's topics (a compromised
    # gateway account) but holds no signing key
    gateways={GATEWAY_ID: [SITE, "other-school"], "intruder": [SITE]},
    dutyrooms={DUTYROOM: ["+"], "desk2": ["+"]},
    viewers={"press": ["+"]},
)
GATEWAY_USER = f"gateway-{GATEWAY_ID}"
DUTYROOM_USER = f"dutyroom-{DUTYROOM}"
INTRUDER = "gateway-intruder"


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private CA for the whole session (each broker gets its own certificate)."""
    return tmp_path_factory.mktemp("ca")


def locked_broker(workdir: Path, ca_dir: Path, **kw: Any) -> Mosquitto:
    """Mosquitto as broker-config writes it: TLS, passwords, certificates, the ACL."""
    return Mosquitto(workdir, accounts=ACCOUNTS, ca_dir=ca_dir, **kw)


@pytest.fixture
def broker(tmp_path: Path, ca_dir: Path) -> Iterator[Mosquitto]:
    with locked_broker(tmp_path / "broker", ca_dir) as b:
        yield b


@pytest.fixture
def persistent_broker(tmp_path: Path, ca_dir: Path) -> Iterator[Mosquitto]:
    """A broker that keeps sessions across a (graceful) restart: for outage tests, where a
    subscriber must not miss what is published before it has reconnected."""
    with locked_broker(tmp_path / "pbroker", ca_dir, persistent=True) as b:
        yield b


@pytest.fixture
async def duty_room(persistent_broker: Mosquitto, site: Site) -> AsyncIterator[Police]:
    """The police on a persistent session: messages wait for it while it reconnects."""
    p = Police(persistent_broker, site, identifier="duty-room")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = make_site(tmp_path)
    yield s
    s.port.close()


class Police:
    """An MQTT subscriber on ``campusguard/#``: what the duty room receives.

    Only what the gateway signed is kept (``messages``); everything else is counted in
    ``dropped``. Acks are signed with the site's duty-room key.
    """

    def __init__(
        self,
        broker: Mosquitto,
        site: Site,
        identifier: str | None = None,
        *,
        user: str = DUTYROOM_USER,
    ) -> None:
        """With ``identifier``: a persistent session (messages queued while away).

        ``user``: the broker account; a second duty room needs its own, as the broker takes
        the user name for the client id (a second connection would take the first's over).
        """
        self.broker = broker
        self.settings = broker.settings(user)
        self.identifier = identifier
        self.site = site
        self.trusted = site.trusted
        self.messages: list[tuple[str, Any]] = []
        self.dropped: list[tuple[str, str]] = []  # (topic, reason)
        self.client: aiomqtt.Client | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with client_for(
                    self.settings, identifier=self.identifier, clean_session=self.identifier is None
                ) as client:
                    await client.subscribe("campusguard/#", qos=1)
                    self.client = client
                    self.subscribed.set()
                    async for m in client.messages:
                        raw = m.payload if isinstance(m.payload, bytes) else b""
                        topic = str(m.topic)
                        if "/ack" in topic:
                            continue  # acks are the duty room's own
                        try:
                            data = open_gateway(topic, raw, self.trusted)
                        except EnvelopeError as exc:
                            self.dropped.append((topic, exc.reason))
                        else:
                            self.messages.append((topic, data))
                        self._changed.set()
            except aiomqtt.MqttError as exc:
                self.client = None
                self.subscribed.clear()
                raise_if_cancelling(exc)
                await asyncio.sleep(0.05)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="police")
        async with asyncio.timeout(scaled(5)):
            await self.subscribed.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def alarms(self, incident: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for t, d in self.messages
            if "/alarm/" in t
            and isinstance(d, dict)
            and (incident is None or d["incident"] == incident)
        ]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for t, d in self.messages
            if "/event/" in t and isinstance(d, dict) and (kind is None or d["kind"] == kind)
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds after some message (``timeout`` scaled)."""
        async with asyncio.timeout(scaled(timeout)):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def ack(
        self,
        incident: str,
        *,
        by: str = "Officer Liu",
        disposition: str = "genuine",
        site: str = SITE,
        at: float | None = None,
    ) -> str:
        """Publish a signed police ack; return its payload (to replay it)."""
        topic, payload = make_ack(
            self.site.signer,
            "campusguard",
            site,
            incident=incident,
            by=by,
            disposition=disposition,
            at=at,
        )
        await self.publish(topic, payload.encode())
        return payload

    async def ack_duty(self, post: str, *, by: str = "Officer Liu", site: str = SITE) -> str:
        """Publish a signed duty ack; return its payload."""
        topic, payload = make_ack(self.site.signer, "campusguard", site, post=post, by=by)
        await self.publish(topic, payload.encode())
        return payload

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, user: str = DUTYROOM_USER
    ) -> None:
        """Publish anything (a forgery, a replay), as ``user`` of the broker.

        The broker binds client ids to user names: as this subscriber's own user, publish
        on its connection (a second one would take its session over).
        """
        if user == self.settings.username and self.client is not None:
            await self.client.publish(topic, payload, qos=1, retain=retain)
            return
        async with client_for(self.broker.settings(user)) as client:
            await client.publish(topic, payload, qos=1, retain=retain)


def client_for(s: BrokerSettings, **kw: Any) -> aiomqtt.Client:
    """An aiomqtt client with these settings (TLS, user, password)."""
    return aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        tls_context=s.tls_context(),
        **kw,
    )


@pytest.fixture
async def police(broker: Mosquitto, site: Site) -> AsyncIterator[Police]:
    p = Police(broker, site)
    await p.start()
    yield p
    await p.stop()


@contextlib.asynccontextmanager
async def running_gateway(site: Site, broker: Mosquitto, **kw: Any) -> AsyncIterator[Gateway]:
    """The gateway in-process, ready (links and journal up) when entered."""
    settings = Settings(
        db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER), **kw
    )
    gw = Gateway(site.config, settings)
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        async with asyncio.timeout(scaled(5)):
            await gw.ready.wait()
        yield gw
    finally:
        gw.stop()
        try:
            async with asyncio.timeout(scaled(5)):
                await asyncio.shield(task)
        except TimeoutError:
            for t in asyncio.all_tasks():
                t.print_stack()
            # a task left running would hang the event loop's teardown for ever
            await cancel_and_wait(task)
            raise
