"""A virtual school with the web duty room in front of it, and Debian's chromium to look.

    async with web_school(tmp) as school:           # broker, fleet, gateway, duty room
        async with chromium(school) as browser:      # headless, trusts only our certificate
            page = await login(browser, school, "li")

The broker runs locked down (TLS, accounts, ACL); the fleet is the real firmware on
MicroPython with the gateway in-process on the demo's accelerated clock (so a missed
check-in climbs its ladder in seconds); the duty room is the real HTTPS server on its
own database. Chromium is Debian's (``apt-get install chromium``): no browser download.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from gateway.dutyroom.web.server import DutyRoomServer, Options, server_certificate
from gateway.security.brokerconfig import Accounts
from gateway.security.envelope import Signer
from gateway.security.signkeys import dutyroom_kid
from gateway.sim.demo import demo_firmware, demo_plan
from gateway.sim.fleet import DUTYROOM, Fleet
from gateway.sim.localbroker import LocalBroker

CHROMIUM = "/usr/bin/chromium"
SPEED = 60.0
PASSWORDS = {
    "li": ("Officer Li 李警官", "operator"),
    "wu": ("Officer Wu 吴警官", "operator"),
    "wang": ("Viewer Wang", "viewer"),
    "chen": ("Supervisor Chen", "supervisor"),
}


def password(name: str) -> str:
    """The test password of an account."""
    return f"pw-{name}-0123456789"


def spki_hash(cert: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what chromium is told to trust, and only it."""
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    der = c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class School:
    """What :func:`web_school` runs."""

    dir: Path
    broker: LocalBroker
    fleet: Fleet
    options: Options
    server: DutyRoomServer
    cert: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    async def restart(self) -> None:
        """Stop the duty room and start it again on the same database and port."""
        await self.server.stop()
        self.options.port = self.server.port
        self.server = DutyRoomServer(self.options)
        await self.server.start()


@contextlib.asynccontextmanager
async def web_school(tmp: Path, *, units: int = 4, realert_s: float = 1e9) -> AsyncIterator[School]:
    """Broker, fleet (guard post first), gateway, and the duty room with four accounts."""
    plan = demo_plan(units, 1)
    accounts = Accounts(
        gateways={plan.gateway_id: [plan.site]},
        dutyrooms={DUTYROOM: [plan.site]},
        viewers={"press": [plan.site]},
    )
    with LocalBroker(tmp / "mqtt", accounts=accounts) as broker:
        fleet = Fleet(
            tmp / "fleet",
            plan,
            broker_url=broker.settings(f"gateway-{plan.gateway_id}"),
            firmware=demo_firmware(plan, SPEED),
            clock_speed=SPEED,
            install_test=False,
        )
        async with fleet:
            await fleet.wait_connected()
            issued = server_certificate(tmp / "ca", tmp / "web", ["127.0.0.1", "localhost"])
            options = Options(
                brokers=[broker.settings(f"dutyroom-{DUTYROOM}")],
                db=tmp / "web" / "dutyroom.db",
                keydir=fleet.keydir,
                signer=Signer.load(fleet.keydir, dutyroom_kid(DUTYROOM)),
                tls_cert=issued.cert,
                tls_key=issued.key,
                port=0,
                realert_s=realert_s,
                gateway_clock=fleet.clock.now,  # the board on the gateway's accelerated time
            )
            server = DutyRoomServer(options)
            for name, (display, role) in PASSWORDS.items():
                server.add_account(name, display, role, password(name))
            await server.start()
            school = School(tmp, broker, fleet, options, server, issued.cert)
            try:
                await server.room.connected.wait()
                yield school
            finally:
                await school.server.stop()


@contextlib.asynccontextmanager
async def chromium(school: School) -> AsyncIterator[Browser]:
    """Debian's chromium, headless, trusting exactly the duty room's certificate key."""
    exe = shutil.which("chromium") or CHROMIUM
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=exe,
            args=[
                "--no-sandbox",
                f"--ignore-certificate-errors-spki-list={spki_hash(school.cert)}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def login(browser: Browser, school: School, name: str) -> tuple[BrowserContext, Page]:
    """A fresh browser context logged in as ``name`` (on the alarm queue)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(school.url + "login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password(name))
    await page.click("form.login button")
    await page.wait_for_url(school.url)
    await page.wait_for_selector("#live.ok")  # the live feed is connected
    return context, page
