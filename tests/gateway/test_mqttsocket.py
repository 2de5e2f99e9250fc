"""NodeLoop's rule for a kept session: "session present" after an attempt that failed
before its CONNACK is not trusted (the session may be a new, empty one)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt

from gateway.core.broker import BrokerSettings
from gateway.relay.mqttsocket import NodeLoop, fixed_pause
from tests.support.mosquitto import open_broker
from tests.support.tcprelay import LoseConnacks
from tests.support.timing import scaled, until


async def test_a_kept_session_made_by_a_connect_whose_connack_was_lost_is_subscribed_again(
    tmp_path: Path,
) -> None:
    """With ``resume``: a client with a clean session took the id over (the session this
    loop subscribed is gone); the broker took the next CONNECT and made a new, empty
    session, but its CONNACK never came. The connection after says "session present", of
    that empty session: the loop subscribes again, and hears what is published."""
    got = asyncio.Event()
    with open_broker(tmp_path / "broker") as broker:
        tap = LoseConnacks(broker.port)
        async with tap as port:
            node = BrokerSettings("127.0.0.1", port)
            link = NodeLoop(
                [node, node], identifier="desk-9", resume=True, pause=fixed_pause(0.05),
                timeout_s=1.0,
            )  # fmt: skip
            task = asyncio.create_task(link.run(lambda: ["t/#"], lambda t, p: got.set()))
            try:
                async with asyncio.timeout(scaled(10)):
                    await link.up.wait()
                tap.losing = True
                with contextlib.suppress(aiomqtt.MqttError):  # the loop may take it back
                    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="desk-9"):
                        pass
                await until(lambda: tap.lost == 1, what="a CONNACK lost")
                tap.losing = False
                await until(lambda: link.up.is_set(), 10, what="subscribed again")
                assert link.session_present and not link.resumed
                async with aiomqtt.Client("127.0.0.1", broker.port) as other:
                    await other.publish("t/x", b"hi", qos=1)
                async with asyncio.timeout(scaled(10)):
                    await got.wait()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
