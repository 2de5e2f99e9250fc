"""The relay's direct publisher never writes from inside paho's PUBACK callback.

paho holds its callback lock while it calls ``on_publish``; the relay publishes the next
queued row from there. A write that failed there (the broker's node killed mid-burst)
made paho close the socket, which takes the same lock again: the event loop hung for ever
(seen as `tests/cluster/test_failover.py::test_kill_9_of_the_gateways_node_during_a_burst`
hanging CI for an hour).
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from gateway.journal.store import OutboxRow
from gateway.relay.relay import _Direct
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

from .conftest import GATEWAY_USER, SITE, client_for


def row(n: int) -> OutboxRow:
    return OutboxRow(n, f"campusguard/{SITE}/event/n{n}", json.dumps({"n": n}), 1, False, None)


# with the bug the loop is blocked in a lock: the signal of pytest-timeout ends the test
@pytest.mark.timeout(60)
async def test_a_write_that_fails_in_the_puback_callback_leaves_the_loop_running(
    broker: Mosquitto,
) -> None:
    async with client_for(broker.settings(GATEWAY_USER)) as client:
        direct = _Direct(client)
        raw = direct._paho.socket()
        assert isinstance(raw, socket.socket)
        queued: list[bool] = []
        acked: list[int] = []

        def first_acked() -> None:
            acked.append(1)
            raw.shutdown(socket.SHUT_WR)  # the node is gone: every later write fails
            queued.append(direct.publish(row(2), lambda: acked.append(2)))

        assert direct.publish(row(1), first_acked)
        await until(lambda: bool(queued), timeout=10, what="the first PUBACK")
        # the loop turns again and notices the broken connection
        async with asyncio.timeout(10):
            while direct._paho.socket() is not None:
                await asyncio.sleep(0.01)
        assert queued == [True] and acked == [1]  # row 2 waits for the next connection
