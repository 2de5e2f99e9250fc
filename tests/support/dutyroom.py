"""The web duty room in tests: its options, its clock, an HTTPS client, and what a gateway
publishes to it.

    options = room_options(tmp, [broker.settings()], keydir, realert_s=1e9)
    client = Client(server, trusting(tmp))           # trusts our private CA only
    for topic, payload, retain in published(signer, incident_update(GW, SITE, "u1", 1, "new")):
        await mqtt.publish(topic, payload, qos=1, retain=retain)
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from gateway.core.broker import BrokerSettings
from gateway.dutyroom.web.server import DutyRoomServer, Options, server_certificate
from gateway.security.envelope import Signer

PREFIX = "campusguard"
PASSWORD = "a long test password"


class Clock:
    """Wall time that moves only when the test sets ``t``; called as the room calls ``now``."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class Client:
    """One browser-like HTTPS client with its own cookie jar."""

    def __init__(self, server: DutyRoomServer, ctx: ssl.SSLContext) -> None:
        self.url = server.url.rstrip("/")
        self.ctx = ctx
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.http.get(self.url + path, ssl=self.ctx, **kw) as r:
            return r.status, await r.text()

    async def post(self, path: str, data: dict[str, str], **kw: Any) -> tuple[int, str]:
        async with self.http.post(
            self.url + path, data=data, ssl=self.ctx, allow_redirects=False, **kw
        ) as r:
            return r.status, await r.text()

    async def login(self, name: str, password: str = PASSWORD) -> int:
        _, page = await self.get("/login")
        token = re.search(r"name='csrf' value='([^']+)'", page)
        assert token
        status, _ = await self.post(
            "/login", {"csrf": token.group(1), "name": name, "password": password}
        )
        if status == 303:
            _, page = await self.get("/")
            m = re.search(r"name='csrf' content='([^']+)'", page)
            assert m
            self.csrf = m.group(1)
        return status


def room_options(tmp: Path, brokers: Sequence[BrokerSettings], keydir: Path, **kw: Any) -> Options:
    """A duty room on HTTPS at a free loopback port: its certificate from a private CA in
    ``tmp/ca`` (:func:`trusting` trusts it), its database ``tmp/room.db``, no signing key;
    ``kw`` sets or overrides any other option."""
    cert = server_certificate(tmp / "ca", tmp, ["127.0.0.1"])
    fields: dict[str, Any] = {"db": tmp / "room.db", "signer": None, "port": 0} | kw
    return Options(
        brokers=list(brokers), keydir=keydir, tls_cert=cert.cert, tls_key=cert.key, **fields
    )


def trusting(tmp: Path) -> ssl.SSLContext:
    """A client's TLS context that trusts the private CA of :func:`room_options` only."""
    return ssl.create_default_context(cafile=str(tmp / "ca" / "ca.pem"))


def incident_update(
    gateway: str, site: str, unit: str, no: int, what: str, **kw: Any
) -> dict[str, Any]:
    """Update ``no`` (``what``: new, police_ack, presses...) of ``unit``'s first incident,
    as the gateway publishes it; ``kw`` sets or overrides fields."""
    return {
        "incident": f"{gateway}-{unit}-1-1",
        "update": what,
        "update_no": no,
        "gateway": gateway,
        "site": site,
        "unit": unit,
        "place": f"Gate {unit} 门口",
        "kind": "panic",
        "state": "open",
        "presses": 1,
        "police_ack_at": None,
        "police_ack_by": None,
        **kw,
    }


def published(signer: Signer, body: dict[str, Any]) -> list[tuple[str, str | bytes, bool]]:
    """What the gateway publishes for one update, in order, as (topic, payload, retain):
    the signed ``alarm/<unit>``, then the incident's retained ``open/<id>`` copy (empty,
    clearing it, once the incident is closed)."""
    alarm = f"{PREFIX}/{body['site']}/alarm/{body['unit']}"
    opened = f"{PREFIX}/{body['site']}/open/{body['incident']}"
    closed = body["state"] == "closed"
    return [
        (alarm, signer.seal_obj(alarm, body), False),
        (opened, b"" if closed else signer.seal_obj(opened, body), True),
    ]
