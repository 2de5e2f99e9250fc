"""SMS through the running gateway (issue 17 item 7): a unit's tamper reaches the site's
ladder through a modem on a real pty, and a message that reaches nobody is an event for
the duty room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import yaml

from gateway.core.config import parse_config
from gateway.service.assembly import Gateway, Settings
from gateway.service.sms import attach_sms
from gateway.service.watchers import build_watchers
from protocol import Fault, FaultCode
from tests.support.gsmmodem import FakeModem
from tests.support.mosquitto import Mosquitto

from .conftest import GATEWAY_USER, Police, Site, until

LEAD, DEPUTY = "+8613800000100", "+8613800000101"


@contextlib.asynccontextmanager
async def gateway_with_sms(
    site: Site, broker: Mosquitto, *, plugged_in: bool = True
) -> AsyncIterator[tuple[Gateway, FakeModem | None]]:
    """The gateway with boards.yaml's modem at ttyGSM0 (absent unless ``plugged_in``)."""
    path = site.dir / "ttyGSM0"
    path.unlink(missing_ok=True)
    modem = FakeModem(path) if plugged_in else None
    data = yaml.safe_load(site.config_path.read_text())
    data["sites"][0]["security_lead"] = {"name": "Zhang Wei", "phone": LEAD}
    data["sites"][0]["deputies"] = [{"name": "Li Na", "phone": DEPUTY}]
    data["sms"] = {"port": str(path), "retries": 0, "retry_s": 1}
    site.config = parse_config(data, str(site.config_path))
    settings = Settings(db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER))
    gw = Gateway(site.config, settings)
    gw.attach(build_watchers(site.config, gw.outlet, gw.store, gw.clock))
    assert attach_sms(gw) is not None
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        async with asyncio.timeout(5):
            await gw.ready.wait()
        yield gw, modem
    finally:
        gw.stop()
        async with asyncio.timeout(5):
            await task
        if modem is not None:
            modem.close()


def sms_state(gw: Gateway, reason: str) -> str | None:
    row = gw.store.conn.execute(
        "SELECT state FROM sms_queue WHERE reason = ? ORDER BY id DESC", (reason,)
    ).fetchone()
    return None if row is None else str(row[0])


async def test_tamper_reaches_the_deputy_when_the_lead_cannot_be_texted(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    async with gateway_with_sms(site, broker) as (gw, modem):
        assert modem is not None
        modem.plan = {LEAD: "cms"}
        site.unit("shop-a").send(Fault(FaultCode.TAMPER, 1, 0))
        await police.wait_for(lambda: bool(police.events("tamper")))
        await modem.wait_for(lambda: any(n == DEPUTY for n, _, _ in modem.sent))
        await until(lambda: sms_state(gw, "tamper") == "sent")
        text = modem.texts(DEPUTY)  # two SMS parts: 70 UCS2 characters each at most
        assert "防拆" in text and "Place of shop-a" in text and text.endswith("tamper.")
        assert modem.cmgs_tries[LEAD] == 1
        modem.deliver(DEPUTY)
        await until(lambda: sms_state(gw, "tamper") == "delivered")


async def test_an_sms_that_reaches_nobody_is_an_event(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    async with gateway_with_sms(site, broker) as (gw, modem):
        assert modem is not None
        modem.plan = {LEAD: "cms", DEPUTY: "cms"}
        site.unit("shop-a").send(Fault(FaultCode.LOW_BATTERY, 1, 0))
        await police.wait_for(lambda: bool(police.events("sms_failed")), timeout=10)
        failed = police.events("sms_failed")[0]
        assert failed["detail"]["reason"] == "low_battery"
        assert failed["detail"]["people"] == ["Zhang Wei", "Li Na"]
        assert sms_state(gw, "low_battery") == "failed"


async def test_an_sms_queued_while_the_modem_is_unplugged_survives_a_restart(
    site: Site, broker: Mosquitto, police: Police
) -> None:
    unit = site.unit("shop-a")
    async with gateway_with_sms(site, broker, plugged_in=False) as (gw, _):
        unit.send(Fault(FaultCode.TAMPER, 1, 0))
        await police.wait_for(lambda: bool(police.events("tamper")))
        assert sms_state(gw, "tamper") == "queued"  # no port: no attempt spent
        attempts = gw.store.conn.execute("SELECT attempts FROM sms_queue").fetchone()[0]
        assert attempts == 0
    # the gateway stops; the modem is plugged in; the gateway starts again
    async with gateway_with_sms(site, broker) as (gw, modem):
        assert modem is not None
        await modem.wait_for(lambda: bool(modem.sent))
        assert "防拆" in modem.texts(LEAD)
        await until(lambda: sms_state(gw, "tamper") == "sent")
        modem.deliver(LEAD)
        await until(lambda: sms_state(gw, "tamper") == "delivered")
        assert gw.store.conn.execute("SELECT count(*) FROM sms_queue").fetchone()[0] == 1
