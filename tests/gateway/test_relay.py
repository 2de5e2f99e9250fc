"""The relay's order and backlog against a real Mosquitto (issue 19).

What is in the outbox when the relay connects (more than one page of it), what is
committed while it runs, and what waits while the broker is away all reach the duty room
in outbox order, each row once PUBACKed marked sent; inbound messages reach the pipeline.

The relay runs as the gateway does: on the locked broker with the gateway's account, on
topics its ACL grants, every message signed with the gateway's key; the duty room keeps
only what verifies (:class:`tests.gateway.conftest.Police`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.broker import BrokerSettings
from gateway.core.clock import ManualClock
from gateway.core.errors import UsageError
from gateway.journal.store import Store
from gateway.relay import relay as relay_module
from gateway.relay.relay import BACKLOG_PAGE, Relay
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import gateway_kid
from gateway.service.assembly import status_topic
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled, until

from .conftest import (
    DUTYROOM_USER,
    GATEWAY_ID,
    GATEWAY_USER,
    SITE,
    Police,
    Site,
    client_for,
    locked_broker,
)
from .helpers import T0

STATUS = status_topic("campusguard", GATEWAY_ID)
ACKS = f"campusguard/{SITE}/ack/+"
DESK2 = "dutyroom-desk2"  # a second duty-room account: the broker binds client ids to users


def enqueue(store: Store, n: int) -> None:
    body = json.dumps({"gateway": GATEWAY_ID, "n": n})  # sealed by the store (see ``store``)
    store.enqueue(at=T0, topic=f"campusguard/{SITE}/event/n{n}", payload=body)


def states(police: Police) -> list[str]:
    return [d["state"] for t, d in police.messages if t == STATUS and isinstance(d, dict)]


def numbers(police: Police) -> list[int]:
    return [d["n"] for t, d in police.messages if "/event/n" in t and isinstance(d, dict)]


class Inbound:
    """What the relay hands to the pipeline; ``b"boom"`` makes the handler fail."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("the pipeline failed on this one")
        self.messages.append((topic, payload))
        self.arrived.set()


def gateway_signer(site: Site) -> Signer:
    """The gateway's signing key (the site's duty room trusts its public half)."""
    return Signer.load(site.keydir, gateway_kid(GATEWAY_ID))


@contextlib.asynccontextmanager
async def relaying(
    store: Store,
    broker: Mosquitto,
    site: Site,
    inbound: Inbound | None = None,
    *,
    clock: ManualClock | None = None,
) -> AsyncIterator[Relay]:
    """The relay as the gateway runs it: its broker account, its key, its topics."""
    on_message = inbound if inbound is not None else Inbound()

    relay = Relay(
        store,
        broker.settings(GATEWAY_USER),
        clock or ManualClock(T0),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=on_message,
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
    )
    store.on_commit = relay.submit
    task = asyncio.create_task(relay.run(), name="relay")
    try:
        yield relay
    finally:
        relay.stop()
        async with asyncio.timeout(scaled(15)):
            await task
        store.on_commit = None


@pytest.fixture
def store(tmp_path: Path, site: Site) -> Iterator[Store]:
    """A journal whose outbox rows are signed by the gateway, as the service sets it up."""
    s = Store(tmp_path / "gw.db")
    s.seal = gateway_signer(site).seal
    yield s
    s.close()


async def test_backlog_of_several_pages_then_live_rows_in_order(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    total = 2 * BACKLOG_PAGE + 10
    for n in range(total):
        enqueue(store, n)
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        with store.transaction():  # committed while the backlog may still be draining
            for n in range(total, total + 5):
                enqueue(store, n)
        await police.wait_for(lambda: len(numbers(police)) >= total + 5, timeout=20)
        await until(lambda: store.pending_count() == 0)  # every PUBACK recorded
    assert numbers(police) == list(range(total + 5))
    assert (relay.connects, relay.failures) == (1, 0)
    assert len(relay.puback_s) == total + 5  # one publish -> PUBACK time per message
    assert relay.published == total + 5


async def test_what_waits_while_the_broker_is_away_goes_out_in_order_after(
    store: Store, site: Site, persistent_broker: Mosquitto, duty_room: Police
) -> None:
    async with relaying(store, persistent_broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        for n in range(3):
            enqueue(store, n)
        await duty_room.wait_for(lambda: len(numbers(duty_room)) == 3, timeout=10)
        persistent_broker.stop()
        with store.transaction():
            for n in range(3, 8):
                enqueue(store, n)  # committed while the broker is down
        assert store.pending_count() >= 5
        persistent_broker.start()
        for n in range(8, 10):
            enqueue(store, n)
        await duty_room.wait_for(lambda: 9 in numbers(duty_room), timeout=20)
        assert relay.connects >= 2
        await until(lambda: store.pending_count() == 0)  # every PUBACK recorded
    got = numbers(duty_room)
    # at least once: a message in flight at the outage may come twice, never out of order
    assert sorted(set(got)) == list(range(10))
    assert [n for i, n in enumerate(got) if n not in got[:i]] == list(range(10))


async def test_nothing_is_lost_when_the_broker_is_not_there_at_start(
    store: Store, site: Site, persistent_broker: Mosquitto, duty_room: Police
) -> None:
    # The duty room's persistent session exists before the outage, so whichever of it and
    # the relay reconnects first, nothing published meanwhile passes it by (a subscriber
    # that connected only after the broker came back missed the relay's first publications
    # on a loaded machine: the relay retries 0.1 s after its first failure).
    persistent_broker.stop()
    for n in range(4):
        enqueue(store, n)
    async with relaying(store, persistent_broker, site) as relay:
        await until(lambda: relay.failures >= 1)  # a connect attempt failed
        persistent_broker.start()
        async with asyncio.timeout(scaled(15)):
            await relay.connected.wait()
        await duty_room.wait_for(lambda: len(numbers(duty_room)) == 4, timeout=10)
    assert numbers(duty_room) == [0, 1, 2, 3]


async def test_inbound_messages_reach_the_pipeline_and_a_failure_is_survived(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    inbound = Inbound()
    async with relaying(store, broker, site, inbound) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.publish(f"campusguard/{SITE}/ack/inc-1", b"boom")  # the handler fails
        ack = await police.ack("inc-2")
        enqueue(store, 0)  # still publishing after the failed handler
        await police.wait_for(lambda: numbers(police) == [0], timeout=10)
        async with asyncio.timeout(scaled(10)):
            await inbound.arrived.wait()
    # as received: verifying the ack is the pipeline's work, not the relay's
    assert inbound.messages == [(f"campusguard/{SITE}/ack/inc-2", ack.encode())]


async def test_status_is_online_while_connected_and_offline_after(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.wait_for(lambda: any(t == STATUS for t, _ in police.messages))
        await relay.say_offline()
        await police.wait_for(
            lambda: [d["state"] for t, d in police.messages if t == STATUS][-1:] == ["offline"]
        )
    assert states(police) == ["online", "offline"]
    # a duty room (a second desk) that connects later sees the retained state
    late = Police(broker, site, user=DESK2)
    await late.start()
    try:
        await late.wait_for(lambda: states(late) == ["offline"])
    finally:
        await late.stop()
    first = next(d for t, d in police.messages if t == STATUS)
    assert first["at"] == "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884, False, None, None)),
        ("mqtt://broker", ("broker", 1883, False, None, None)),
        ("mqtts://u%40x:p%3Aw@broker", ("broker", 8883, True, "u@x", "p:w")),
    ],
)
def test_broker_urls(url: str, expect: tuple[object, ...]) -> None:
    s = BrokerSettings.from_url(url)
    assert (s.host, s.port, s.tls, s.username, s.password) == expect
    assert (s.tls_context() is not None) == s.tls


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://broker:99999"])
def test_bad_broker_urls_are_one_clear_error(url: str) -> None:
    from gateway.core.errors import GatewayError

    with pytest.raises(GatewayError, match="--broker"):
        BrokerSettings.from_url(url)


# Further cases the mutation run asked for (issue 19).


async def test_police_acks_sent_while_the_gateway_was_away_arrive_on_return(
    store: Store, site: Site, persistent_broker: Mosquitto, duty_room: Police
) -> None:
    inbound = Inbound()
    async with relaying(store, persistent_broker, site, inbound) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
    # the gateway is away; its session (QoS 1 subscription) stays on the broker
    ack = await duty_room.ack("inc-7")
    # it returns a minute later: its previous run's retained status is older than this run
    async with relaying(store, persistent_broker, site, inbound, clock=ManualClock(T0 + 60)):
        async with asyncio.timeout(scaled(10)):
            await inbound.arrived.wait()
    assert inbound.messages == [(f"campusguard/{SITE}/ack/inc-7", ack.encode())]


async def test_an_abrupt_loss_leaves_the_will_offline_then_online_again(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.wait_for(lambda: states(police) == ["online"])
        client = relay._client
        assert client is not None
        sock = client._client.socket()  # the TCP connection dies without a DISCONNECT
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        await police.wait_for(lambda: states(police)[1:2] == ["offline"], timeout=10)
        await police.wait_for(lambda: states(police)[-1:] == ["online"], timeout=10)
        late = Police(broker, site, user=DESK2)  # retained: a desk connecting now sees it
        await late.start()
        try:
            await late.wait_for(lambda: states(late) == ["online"])
        finally:
            await late.stop()
    offline = [d for t, d in police.messages if t == STATUS][1]
    assert {k: offline[k] for k in ("gateway", "state", "at", "instance")} == {
        "gateway": GATEWAY_ID,
        "state": "offline",
        "at": "2026-01-01T00:00:00.000Z",
        "instance": relay.instance,  # the will of this run, signed when it connected
    }


async def test_retries_go_on_while_the_broker_stays_away(
    store: Store, site: Site, tmp_path: Path, ca_dir: Path
) -> None:
    with locked_broker(tmp_path / "late", ca_dir) as late:
        late.stop()
        enqueue(store, 0)
        async with relaying(store, late, site) as relay:
            await until(lambda: relay.failures >= 3)  # backoff 0.1, 0.2, 0.4 s
            late.start()
            async with asyncio.timeout(scaled(15)):
                await relay.connected.wait()
            await until(lambda: store.pending_count() == 0)


async def test_marks_that_the_journal_refuses_are_kept_and_written_later(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    store.conn.execute(
        "CREATE TEMP TRIGGER nomark BEFORE UPDATE ON outbox BEGIN SELECT RAISE(ABORT, 'io'); END"
    )
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        for n in range(3):
            enqueue(store, n)
        await police.wait_for(lambda: numbers(police) == [0, 1, 2])
        enqueue(store, 3)  # still publishing while the marks cannot be written
        await police.wait_for(lambda: numbers(police) == [0, 1, 2, 3])
        assert store.pending_count() == 4
        store.conn.execute("DROP TRIGGER nomark")
        await until(lambda: store.pending_count() == 0)  # retried: nothing marked twice
    assert relay.published == 4


async def test_without_the_fast_path_the_same_rows_go_out_in_order(
    store: Store,
    site: Site,
    broker: Mosquitto,
    police: Police,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_internals(client: object) -> None:
        raise AttributeError("aiomqtt internals changed")

    monkeypatch.setattr(relay_module, "_Direct", no_internals)
    for n in range(5):
        enqueue(store, n)
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        for n in range(5, 10):
            enqueue(store, n)
        await police.wait_for(lambda: len(numbers(police)) == 10)
        await until(lambda: store.pending_count() == 0)
    assert numbers(police) == list(range(10))
    assert relay.published == 10 and len(relay.puback_s) == 10


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiomqtt-publish"])
async def test_rows_go_out_with_their_qos_and_retain_flag(
    store: Store, site: Site, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    """A unit's state is retained for a duty room that connects later; both go at QoS 1."""
    if not fast_path:

        def no_internals(client: object) -> None:
            raise AttributeError("aiomqtt internals changed")

        monkeypatch.setattr(relay_module, "_Direct", no_internals)
    state_topic = f"campusguard/{SITE}/unit/shop/state"
    with store.transaction():
        body = json.dumps({"gateway": GATEWAY_ID, "state": "online"})
        store.enqueue(at=T0, topic=state_topic, payload=body, retain=True)
        enqueue(store, 1)
    live: list[tuple[str, int, bool]] = []
    async with client_for(broker.settings(DUTYROOM_USER)) as watcher:
        await watcher.subscribe(f"campusguard/{SITE}/#", qos=1)
        async with relaying(store, broker, site):
            await until(lambda: store.pending_count() == 0)
        async with asyncio.timeout(10):
            async for m in watcher.messages:
                live.append((str(m.topic), m.qos, bool(m.retain)))
                if len(live) == 2:
                    break
    assert sorted(live) == [
        (f"campusguard/{SITE}/event/n1", 1, False),
        (state_topic, 1, False),  # retained on the broker, delivered live as it came
    ]
    async with client_for(broker.settings(DUTYROOM_USER)) as later:
        await later.subscribe(f"campusguard/{SITE}/unit/+/state", qos=1)
        async with asyncio.timeout(10):
            m = await anext(aiter(later.messages))
    assert (str(m.topic), m.qos, bool(m.retain)) == (state_topic, 1, True)


def test_tls_files_are_passed_on(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--ca-file"):
        BrokerSettings("b", 8883, tls=True, ca_file=str(tmp_path / "none.pem")).tls_context()
    with pytest.raises(UsageError, match="--client-cert"):
        BrokerSettings("b", 8883, tls=True, client_cert=str(tmp_path / "c.pem")).tls_context()


# -- the relay's own alerts, without a broker ----------------------------------------------


class _Client:
    """What the relay publishes when it puts its real status back."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, int, bool]] = []

    async def publish(self, topic: str, payload: str, *, qos: int, retain: bool) -> None:
        self.published.append((topic, payload, qos, retain))


def offline_relay(store: Store, site: Site, alerts: list[tuple[str, dict[str, object]]]) -> Relay:
    return Relay(
        store,
        BrokerSettings("127.0.0.1", 1),
        ManualClock(T0),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=Inbound(),
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
        alert=lambda kind, detail: alerts.append((kind, dict(detail))),
    )


async def test_oversized_payloads_are_counted_and_alerted_once_a_window(
    store: Store, site: Site
) -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)
    relay._oversize("t/a", 9000)
    relay._oversize("t/b", 9001)
    assert relay.oversized == 2
    assert alerts == [("oversized_payload", {"topic": "t/a", "bytes": 9000})]
    relay._oversize_logged -= relay_module.OVERSIZE_LOG_WINDOW_S  # a window later
    relay._oversize("t/c", 9002)
    assert relay.oversized == 3
    assert alerts[1:] == [("oversized_payload", {"topic": "t/c", "bytes": 9002})]


async def test_a_forged_status_is_alerted_each_time_and_the_real_one_put_back(
    store: Store, site: Site
) -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)
    client = _Client()
    async with asyncio.TaskGroup() as tg:
        relay._tg = tg
        relay._forged_status("cleared")  # no connection: nothing to put back yet
        relay._republished -= 1.0  # a second later
        relay._client = client  # type: ignore[assignment]
        relay._forged_status("cleared")  # connecting, not connected: not yet either
        relay._republished -= 1.0
    assert client.published == []
    relay.connected.set()
    async with asyncio.TaskGroup() as tg:
        relay._tg = tg
        relay._forged_status("bad signature")
        relay._forged_status("bad signature")  # within a second: put back once
    assert (
        alerts
        == [("forged_status", {"topic": STATUS, "problem": "cleared"})] * 2
        + [("forged_status", {"topic": STATUS, "problem": "bad signature"})] * 2
    )
    ((topic, payload, qos, retain),) = client.published
    assert (topic, qos, retain) == (STATUS, 1, True)
    body = open_gateway(STATUS, payload.encode(), {relay_signer_kid(site): relay_key(site)})
    assert (body["state"], body["instance"]) == ("online", relay.instance)
    relay._republished -= 1.0  # a second later
    async with asyncio.TaskGroup() as tg:
        relay._tg = tg
        relay._forged_status("bad signature")
    assert len(client.published) == 2


def relay_signer_kid(site: Site) -> str:
    return gateway_signer(site).kid


def relay_key(site: Site) -> Any:
    return gateway_signer(site).public_key()


def test_reconnect_pauses_spread_a_herd_below_the_doubling_bound() -> None:
    pauses = [relay_module.reconnect_pause(2.0, random.Random(seed)) for seed in range(50)]
    assert all(0.0 <= p <= 2.0 for p in pauses)
    assert max(pauses) - min(pauses) > 1.0  # not one instant for every gateway
