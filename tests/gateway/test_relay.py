"""The relay's order and backlog against a real Mosquitto (issue 19).

What is in the outbox when the relay connects (more than one page of it), what is
committed while it runs, and what waits while the broker is away all reach the duty room
in outbox order, each row once PUBACKed marked sent; inbound messages reach the pipeline.

The relay runs as the gateway does: on the locked broker with the gateway's account, on
topics its ACL grants, every message signed with the gateway's key; the duty room keeps
only what verifies (:class:`gateway.sim.police.Police`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import random
import socket
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest

from gateway.core.broker import CLUSTER_KEEPALIVE_S, BrokerSettings
from gateway.core.clock import ManualClock
from gateway.core.errors import UsageError
from gateway.journal.store import Store
from gateway.relay import relay as relay_module
from gateway.relay.mqttsocket import retrieve_disconnect
from gateway.relay.relay import BACKLOG_PAGE, Relay
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import gateway_kid
from gateway.service.assembly import status_topic
from tests.support.mosquitto import Mosquitto, open_broker
from tests.support.tcprelay import FreezableNode, TcpRelay, mqtt_packet
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
    police_for,
)
from .helpers import T0

STATUS = status_topic("campusguard", GATEWAY_ID)
ACKS = f"campusguard/{SITE}/ack/+"
DESK2 = "dutyroom-desk2"  # a second duty-room account: the broker binds client ids to users


def enqueue(store: Store, n: int) -> None:
    body = json.dumps({"gateway": GATEWAY_ID, "n": n})  # sealed by the store (see ``store``)
    store.enqueue(at=T0, topic=f"campusguard/{SITE}/event/n{n}", payload=body)


def states(police: Police) -> list[str]:
    return [
        m.payload["state"]
        for m in police.messages
        if m.topic == STATUS and isinstance(m.payload, dict)
    ]


def numbers(police: Police) -> list[int]:
    return [
        m.payload["n"]
        for m in police.messages
        if "/event/n" in m.topic and isinstance(m.payload, dict)
    ]


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
async def running(relay: Relay) -> AsyncIterator[None]:
    """``relay.run()`` for the body, stopped after it. A relay that ends by itself (it
    raised, or returned before :meth:`Relay.stop`) fails the body at once with its reason,
    instead of leaving it to wait out a timeout for something that cannot come."""
    body = asyncio.current_task()
    assert body is not None
    leaving = False

    def ended(_: asyncio.Task[None]) -> None:
        if not leaving:
            body.cancel()

    task = asyncio.create_task(relay.run(), name="relay")
    task.add_done_callback(ended)
    try:
        yield
    except asyncio.CancelledError:
        if not task.done() or leaving:
            raise
        body.uncancel()
        reason = None if task.cancelled() else task.exception()
        raise AssertionError(f"the relay ended by itself ({reason!r})") from reason
    finally:
        leaving = True
        relay.stop()
        if not task.done():
            async with asyncio.timeout(scaled(15)):
                await task


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
    try:
        async with running(relay):
            yield relay
    finally:
        store.on_commit = None


@pytest.fixture
def store(tmp_path: Path, site: Site) -> Iterator[Store]:
    """A journal whose outbox rows are signed by the gateway, as the service sets it up."""
    s = Store(tmp_path / "gw.db")
    s.seal = gateway_signer(site).seal
    yield s
    s.close()


# what gateway/README.md and the cluster's clients promise about the relay's pace
PROMISED = {
    "WINDOW": 64,  # "up to 64 in flight" (= aiomqtt's max_inflight_messages)
    "BACKLOG_PAGE": 256,  # outbox rows read per page after a (re)connect
    "MARK_DELAY_S": 0.02,  # PUBACKs "written in batches every ~20 ms"
    "PUBLISH_TIMEOUT_S": 10.0,  # one broker: a PUBACK missing this long drops the connection
    "FAILOVER_PUBACK_S": 2.0,  # "when a PUBACK is missing for 2 s" (several nodes)
    "BACKOFF_MIN_S": 0.1,  # "a bound that doubles from 0.1 s ...
    "BACKOFF_MAX_S": 5.0,  # ... to 5 s"
    "STATUS_PERIOD_S": 60.0,  # "re-signed and re-published every 60 s" (stale after 3)
    "FAILURE_LOG_WINDOW_S": 60.0,  # one warning per minute of a broker outage
    "OVERSIZE_LOG_WINDOW_S": 60.0,  # one warning per minute of oversized payloads
    "FORGED_STATUS_LOG_WINDOW_S": 60.0,  # one error per minute of forged statuses
}


def test_the_relays_pace_is_what_the_readme_promises() -> None:
    """Pinned in one table (first in this file: a changed value fails at once under -x)."""
    assert {name: getattr(relay_module, name) for name in PROMISED} == PROMISED
    assert relay_module._OnSet.__slots__ == ("_fn",)  # one small object per message in flight


async def test_the_relay_connects_at_its_first_attempt_and_publishes(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """Fails at the first failed attempt, not after a timeout: the mutation run's quick
    check that the relay connects, subscribes and publishes at all (first in this file:
    pytest -x stops a relay that cannot connect here, not in a slower test's timeout)."""
    async with relaying(store, broker, site) as relay:
        await until(lambda: relay.connected.is_set() or relay.failures > 0, timeout=10)
        assert (relay.failures, relay.connects) == (0, 1)
        enqueue(store, 0)
        await until(lambda: store.pending_count() == 0 or relay.failures > 0, timeout=10)
        assert relay.failures == 0 and relay.published == 1


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


async def test_an_inbound_message_is_pubacked_only_once_handled(
    store: Store, site: Site, broker: Mosquitto, police: Police, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A police ack still in aiomqtt's queue when the connection ends must come again, so
    the relay PUBACKs it after the pipeline took it (or failed on it), never on arrival."""
    order: list[tuple[str, object]] = []
    real_send = paho.Client._send_puback
    relay_id = f"campusguard-{GATEWAY_ID}".encode()

    def send_puback(self: paho.Client, mid: int) -> Any:  # the PUBACK onto the wire
        if self._client_id == relay_id:
            order.append(("puback", mid))
        return real_send(self, mid)

    monkeypatch.setattr(paho.Client, "_send_puback", send_puback)

    class Recording(Inbound):
        def __call__(self, topic: str, payload: bytes) -> None:
            order.append(("handled", payload))
            super().__call__(topic, payload)

    async with relaying(store, broker, site, Recording()) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.publish(f"campusguard/{SITE}/ack/inc-1", b"boom")  # the handler fails
        ack_body = await police.ack("inc-2")
        await until(lambda: sum(k == "handled" for k, _ in order) == 2, 10, what="both handled")
        await until(lambda: order[-1][0] == "puback", 10, what="the last one PUBACKed")
    handled = [i for i, (k, _) in enumerate(order) if k == "handled"]
    assert [order[i][1] for i in handled] == [b"boom", ack_body.encode()]
    # each PUBACKed right after its handler returned (or raised), not before it ran
    assert all(order[i + 1][0] == "puback" for i in handled), order


async def test_status_is_online_while_connected_and_offline_after(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.wait_for(lambda: any(m.topic == STATUS for m in police.messages))
        await relay.say_offline()
        await police.wait_for(
            lambda: (
                [m.payload["state"] for m in police.messages if m.topic == STATUS][-1:]
                == ["offline"]
            )
        )
    assert states(police) == ["online", "offline"]
    # a duty room (a second desk) that connects later sees the retained state
    late = police_for(broker, site, user=DESK2)
    await late.start()
    try:
        await late.wait_for(lambda: states(late) == ["offline"])
    finally:
        await late.stop()
    first = next(m.payload for m in police.messages if m.topic == STATUS)
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
        late = police_for(broker, site, user=DESK2)  # retained: a desk connecting now sees it
        await late.start()
        try:
            await late.wait_for(lambda: states(late) == ["online"])
        finally:
            await late.stop()
    offline = [m.payload for m in police.messages if m.topic == STATUS][1]
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

    async def publish(
        self, topic: str, payload: str, *, qos: int, retain: bool, timeout: float | None = None
    ) -> None:
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


# -- who else publishes this gateway's status (its own status read back) -------------------


def status_of(site: Site, *, at: float, state: str = "online") -> bytes:
    """The status another run of this gateway (same id, same key) publishes."""
    other = offline_relay_at(site, at)
    return other._status_payload(state).encode()


def offline_relay_at(site: Site, at: float) -> Relay:
    return Relay(
        Store(site.dir / f"other-{at}.db"),
        BrokerSettings("127.0.0.1", 1),
        ManualClock(at),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=Inbound(),
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
    )


async def test_own_status_read_back_is_no_alarm(store: Store, site: Site) -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)
    relay._own_status(relay._status_payload("online").encode(), retained=True)
    relay._own_status(relay._status_payload("offline").encode(), retained=False)
    assert alerts == []


async def test_a_second_gateway_with_this_id_and_key_stops_this_one(
    store: Store, site: Site
) -> None:
    from gateway.core.errors import DuplicateGatewayError

    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)  # started at T0
    # an earlier run's statuses (its retained online after a power cut): no reason to stop
    relay._own_status(status_of(site, at=T0 - 0.001), retained=True)
    relay._own_status(status_of(site, at=T0 + 5, state="offline"), retained=False)
    assert alerts == []
    # another run online since this one started: two gateways answer as one
    twin = status_of(site, at=T0)
    with pytest.raises(DuplicateGatewayError, match=GATEWAY_ID):
        relay._own_status(twin, retained=False)
    ((kind, detail),) = alerts
    assert kind == "duplicate_gateway"
    assert detail["ours"] == relay.instance and detail["instance"] != relay.instance
    assert detail["at"] == "2026-01-01T00:00:00.000Z"


async def test_a_status_this_gateway_did_not_sign_is_a_forgery(
    store: Store, site: Site, tmp_path: Path
) -> None:
    from gateway.security.signkeys import write_pair

    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)
    write_pair(tmp_path / "mallory", gateway_kid(GATEWAY_ID))
    mallory = Signer.load(tmp_path / "mallory", gateway_kid(GATEWAY_ID))
    body = {"gateway": GATEWAY_ID, "state": "online", "at": "2026-01-01T00:00:00.000Z"}
    relay._own_status(mallory.seal_obj(STATUS, body).encode(), retained=True)
    relay._forged_logged = relay._republished = -1e18
    relay._own_status(b"", retained=True)  # the retained status cleared
    assert [k for k, _ in alerts] == ["forged_status", "forged_status"]
    assert alerts[1][1] == {"topic": STATUS, "problem": "cleared"}
    assert alerts[0][1]["problem"] != "cleared"


async def test_own_will_read_back_while_connected_puts_online_back(
    store: Store, site: Site
) -> None:
    alerts: list[tuple[str, dict[str, object]]] = []
    relay = offline_relay(store, site, alerts)
    client = _Client()
    relay._client = client  # type: ignore[assignment]
    will = relay._status_payload("offline").encode()
    relay._own_status(will, retained=True)  # not connected: nothing to put back
    relay.connected.set()
    async with asyncio.TaskGroup() as tg:
        relay._tg = tg
        relay._own_status(will, retained=True)  # a late will of this run: online again
    ((topic, payload, qos, retain),) = client.published
    assert (topic, qos, retain) == (STATUS, 1, True)
    signer = gateway_signer(site)
    opened = open_gateway(STATUS, payload.encode(), {signer.kid: signer.public_key()})
    assert (opened["state"], opened["instance"]) == ("online", relay.instance)
    await relay.say_offline()  # stopping: its own offline is no reason to come back
    async with asyncio.TaskGroup() as tg:
        relay._tg = tg
        relay._own_status(will, retained=True)
    states = [
        open_gateway(STATUS, p.encode(), {signer.kid: signer.public_key()})["state"]
        for _, p, _, _ in client.published
    ]
    assert states == ["online", "offline"]
    assert alerts == []


# -- the publisher's working set, without a broker -----------------------------------------


class _SlowClient:
    """aiomqtt's publish through tasks: each waits for its PUBACK until ``release``."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._pubacks: dict[int, asyncio.Future[None]] = {}

    async def publish(self, topic: str, payload: str, *, qos: int, retain: bool) -> None:
        n = int(topic.rsplit("n", 1)[-1])
        self.sent.append(n)
        self._pubacks[n] = asyncio.get_running_loop().create_future()
        await self._pubacks[n]

    def release(self, n: int) -> None:
        self._pubacks.pop(n).set_result(None)


def row(n: int) -> Any:
    from gateway.journal.store import OutboxRow

    return OutboxRow(n, f"campusguard/{SITE}/event/n{n}", "{}", 1, False, None)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_submitted_rows_go_out_in_memory_only_right_after_the_cursor(
    store: Store, site: Site
) -> None:
    relay = offline_relay(store, site, [])
    client = _SlowClient()
    relay.submit([row(1)])  # not connected yet: the outbox is read on connecting
    assert relay._backlog and not relay._queue
    async with asyncio.TaskGroup() as tg:
        relay._tg, relay._pub_client = tg, client  # type: ignore[assignment]
        relay._live, relay._backlog, relay._cursor = True, False, 5
        relay.submit([])
        relay.submit([row(6), row(7)])
        await settle()
        assert client.sent == [6, 7] and relay._cursor == 7 and not relay._backlog
        relay.submit([row(9)])  # 8 went elsewhere (another process): read the outbox
        await settle()
        assert client.sent == [6, 7] and relay._backlog and relay._cursor == 7
        client.release(7)  # PUBACKs in any order; each recorded once
        client.release(6)
        await settle()
    assert [r.id for r, _ in relay._acked] == [7, 6] and relay.published == 2
    assert not relay._inflight and not relay._sent_at


async def test_at_most_a_window_of_messages_is_in_flight(store: Store, site: Site) -> None:
    relay = offline_relay(store, site, [])
    client = _SlowClient()
    window = relay_module.WINDOW
    assert window == 64
    async with asyncio.TaskGroup() as tg:
        relay._tg, relay._pub_client = tg, client  # type: ignore[assignment]
        relay._live, relay._backlog, relay._cursor = True, False, 0
        relay.submit([row(n) for n in range(1, window + 4)])
        await settle()
        assert client.sent == list(range(1, window + 1)) and len(relay._inflight) == window
        client.release(2)  # room for one more, the next in order
        await settle()
        assert client.sent[window:] == [window + 1]
        for n in [1, *range(3, window + 4)]:
            await settle()
            client.release(n)
        await settle()
    assert client.sent == list(range(1, window + 4)) and relay.published == window + 3


async def test_a_late_puback_of_a_message_published_again_counts_once(
    store: Store, site: Site
) -> None:
    relay = offline_relay(store, site, [])
    relay._on_puback(row(1))
    relay._on_puback(row(1))  # its first copy's PUBACK, after the reconnect
    assert relay.published == 1 and [r.id for r, _ in relay._acked] == [1]
    assert relay._flush_marks()
    assert not relay._acked and not relay._acked_ids
    relay._on_puback(row(1))  # recorded by now: the journal takes the second mark too
    assert relay.published == 2


async def test_the_backlog_is_read_a_page_at_a_time_after_the_cursor(
    store: Store, site: Site
) -> None:
    for n in range(BACKLOG_PAGE + 3):
        enqueue(store, n)
    relay = offline_relay(store, site, [])
    relay._acked_ids.add(2)  # PUBACKed, not yet recorded: not published again
    assert relay._read_backlog() and relay._backlog  # a full page: more may follow
    assert relay._cursor == BACKLOG_PAGE and len(relay._queue) == BACKLOG_PAGE - 1
    assert [r.id for r in list(relay._queue)[:3]] == [1, 3, 4]
    assert relay._read_backlog() and not relay._backlog  # the rest: from now on, submit()
    assert [r.id for r in relay._queue][-3:] == [BACKLOG_PAGE + n for n in (1, 2, 3)]
    store.conn.execute("DROP TABLE outbox")
    relay._backlog = True
    assert relay._read_backlog() is False and relay._backlog  # tried again later


async def test_a_disconnect_forgets_the_working_set_but_not_what_was_acked(
    store: Store, site: Site
) -> None:
    relay = offline_relay(store, site, [])
    relay._live, relay._backlog, relay._cursor = True, False, 9
    relay._queue.append(row(10))
    relay._inflight[9] = row(9)
    relay._sent_at[9] = 1.0
    relay._on_puback(row(8))
    relay.connected.set()
    relay._disconnected()
    assert (relay._live, relay._backlog, relay._cursor) == (False, True, 0)
    assert not relay._queue and not relay._inflight and not relay._sent_at
    assert not relay.connected.is_set()
    assert [r.id for r, _ in relay._acked] == [8]


async def test_a_missing_puback_drops_the_connection_sooner_with_more_nodes(
    store: Store, site: Site
) -> None:
    import time

    one = offline_relay(store, site, [])
    one._sent_at[1] = time.monotonic() - 5.0  # 5 s without a PUBACK
    one._check_overdue()
    assert one._broken is None  # one broker: wait for PUBLISH_TIMEOUT_S (10 s)
    one._sent_at[1] = time.monotonic() - 10.5
    one._check_overdue()
    assert one._broken == "no PUBACK within 10 s" and one._wake.is_set()
    nodes = Relay(
        store,
        BrokerSettings("127.0.0.1", 1),
        ManualClock(T0),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=Inbound(),
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
        brokers=[BrokerSettings("127.0.0.1", 2)],
    )
    nodes._sent_at[1] = time.monotonic() - 2.5  # a cluster: the next node after 2 s
    nodes._check_overdue()
    assert nodes._broken == "no PUBACK within 2 s"
    client = _SlowClient()
    async with asyncio.TaskGroup() as tg:  # a broken connection takes no more rows
        nodes._tg, nodes._pub_client = tg, client  # type: ignore[assignment]
        nodes._live, nodes._backlog, nodes._cursor = True, False, 0
        nodes.submit([row(1)])
        await settle()
    assert client.sent == [] and [r.id for r in nodes._queue] == [1]


def test_the_reason_a_connection_ended_is_the_first_leaf() -> None:
    inner = ValueError("publisher")
    group = BaseExceptionGroup("serve", [BaseExceptionGroup("pub", [inner]), KeyError("x")])
    assert relay_module._leaf(group) is inner
    assert relay_module._leaf(ExceptionGroup("one", [inner])) is inner


async def test_a_disconnect_exception_nobody_awaited_is_retrieved() -> None:
    import aiomqtt

    class Client:
        _disconnected: asyncio.Future[None]

    client = Client()
    client._disconnected = asyncio.get_running_loop().create_future()
    client._disconnected.set_exception(aiomqtt.MqttError("taken over"))
    retrieve_disconnect(client)  # type: ignore[arg-type]
    assert client._disconnected._log_traceback is False  # no "never retrieved" later


async def test_the_status_says_who_when_which_run_and_how_often(store: Store, site: Site) -> None:
    relay = offline_relay(store, site, [])
    signer = gateway_signer(site)
    for state in ("online", "offline"):
        body = open_gateway(
            STATUS, relay._status_payload(state).encode(), {signer.kid: signer.public_key()}
        )
        assert body == {
            "gateway": GATEWAY_ID,
            "state": state,
            "at": "2026-01-01T00:00:00.000Z",
            "instance": relay.instance,
            "started_at": "2026-01-01T00:00:00.000Z",
            "period_s": 60.0,
        }
    assert len(relay.instance) == 16 and relay.instance != offline_relay(store, site, []).instance


class _Message:
    def __init__(self, topic: str, payload: object, retain: bool = False) -> None:
        self.topic, self.payload, self.retain = topic, payload, retain
        self.mid, self.qos = next(_mids), 1


_mids = iter(range(1, 1 << 16))


class _Paho:
    """paho's manual PUBACK, recorded."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


class _Feed:
    """A client whose inbound messages are the given ones."""

    def __init__(self, messages: list[_Message]) -> None:
        self._messages = messages
        self._client = _Paho()

    @property
    def messages(self) -> Any:
        async def gen() -> Any:
            for m in self._messages:
                yield m

        return gen()


async def test_inbound_payloads_of_every_type_reach_the_pipeline_oversized_ones_do_not(
    store: Store, site: Site
) -> None:
    from gateway.core.errors import DuplicateGatewayError
    from gateway.security.envelope import MAX_PAYLOAD_BYTES

    inbound = Inbound()
    alerts: list[tuple[str, dict[str, object]]] = []
    relay = Relay(
        store,
        BrokerSettings("127.0.0.1", 1),
        ManualClock(T0),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=inbound,
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
        alert=lambda kind, detail: alerts.append((kind, dict(detail))),
    )
    ack = f"campusguard/{SITE}/ack/inc-1"
    feed = [
        _Message(ack, b"x" * (MAX_PAYLOAD_BYTES + 1)),  # dropped unparsed
        _Message(ack, b"x" * MAX_PAYLOAD_BYTES),  # the largest taken
        _Message(ack, "as text"),
        _Message(ack, None),
        _Message(ack, b"boom"),  # the handler fails: the next one still arrives
        _Message(ack, b"after"),
        _Message(STATUS, relay._status_payload("online").encode(), retain=True),  # its own
        _Message(STATUS, status_of(site, at=T0 + 1)),  # a twin: this gateway stops
        _Message(ack, b"never"),
    ]
    client = _Feed(feed)
    with pytest.raises(DuplicateGatewayError):
        await relay._inbound(client)  # type: ignore[arg-type]
    # every one taken, dropped or failed is PUBACKed (none to come again), up to the twin
    assert client._client.acked == [m.mid for m in feed[:-1]]
    assert inbound.messages == [
        (ack, b"x" * MAX_PAYLOAD_BYTES),
        (ack, b"as text"),
        (ack, b""),
        (ack, b"after"),
    ]
    assert relay.oversized == 1
    assert [k for k, _ in alerts] == ["oversized_payload", "duplicate_gateway"]
    assert alerts[0][1] == {"topic": ack, "bytes": MAX_PAYLOAD_BYTES + 1}


async def test_an_unreachable_first_node_is_left_for_the_next(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = replace(broker.settings(GATEWAY_USER), port=s.getsockname()[1])
    live = broker.settings(GATEWAY_USER)
    relay = Relay(
        store,
        dead,
        ManualClock(T0),
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=[ACKS],
        status_topic=STATUS,
        on_message=Inbound(),
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
        brokers=[live],
    )
    store.on_commit = relay.submit
    enqueue(store, 0)
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(scaled(15)):
            await relay.connected.wait()
        assert (relay.node, relay.failures, relay.connects) == (live, 1, 1)
        await police.wait_for(lambda: numbers(police) == [0], timeout=10)
    finally:
        relay.stop()
        async with asyncio.timeout(scaled(15)):
            await task
        store.on_commit = None


async def test_status_goes_offline_at_a_stop_after_messages_took_the_fast_path(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """The fast path lends paho's write hook out and back: aiomqtt's own publishes (the
    status) still reach the socket afterwards."""
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        for n in range(3):
            enqueue(store, n)
        await police.wait_for(lambda: numbers(police) == [0, 1, 2])
        await relay.say_offline()
        await police.wait_for(lambda: states(police)[-1:] == ["offline"])


async def test_reread_takes_rows_another_process_queued(store: Store, site: Site) -> None:
    relay = offline_relay(store, site, [])
    relay._backlog = False
    relay.reread()
    assert relay._backlog and relay._wake.is_set()


async def test_putting_the_status_back_while_the_connection_closes_is_no_error(
    store: Store, site: Site
) -> None:
    relay = offline_relay(store, site, [])
    relay._client = _Client()  # type: ignore[assignment]
    relay.connected.set()
    async with asyncio.TaskGroup() as tg:
        pass
    relay._tg = tg  # its group has ended: no new task
    gc.collect()  # what earlier tests left (3.13 warns of unclosed databases) goes first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        relay._republish_status()  # nothing to do, nothing raised, no coroutine left unawaited
        gc.collect()
    # "coroutine ... was never awaited" is a RuntimeWarning
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert relay._client.published == []  # type: ignore[attr-defined]


async def test_a_full_socket_is_written_when_writable_without_a_reconnect(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """A burst larger than the socket takes: what paho could not write at once goes out
    as soon as the socket drains (the fast path hands aiomqtt the writer watch), not
    after a missing PUBACK has dropped the connection."""
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        client = relay._client
        assert client is not None
        sock = client._client.socket()
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
        window = relay_module.WINDOW  # exactly: no row queued behind it to push the rest
        with store.transaction():  # one commit: a window of messages in one callback
            for n in range(window):
                body = json.dumps({"gateway": GATEWAY_ID, "n": n, "pad": "x" * 6000})
                store.enqueue(at=T0, topic=f"campusguard/{SITE}/event/n{n}", payload=body)
        await police.wait_for(lambda: len(numbers(police)) == window, timeout=30)
    assert numbers(police) == list(range(window))
    assert (relay.connects, relay.failures) == (1, 0)


async def test_each_puback_keeps_its_publish_to_puback_time(store: Store, site: Site) -> None:
    import time

    relay = offline_relay(store, site, [])
    start = time.monotonic()
    relay._sent_at[1] = start
    relay._on_puback(row(1))
    relay._on_puback(row(2))  # sent before a reconnect: no time to take
    (took,) = relay.puback_s
    assert 0 <= took <= time.monotonic() - start


def test_a_message_the_client_refuses_is_not_taken_as_in_flight() -> None:
    import types

    import paho.mqtt.client as paho

    unconnected = types.SimpleNamespace(
        _client=paho.Client(paho.CallbackAPIVersion.VERSION2), _pending_publishes={}
    )
    direct = relay_module._Direct(unconnected)  # type: ignore[arg-type]
    assert direct.publish(row(1), lambda: None) is False
    assert unconnected._pending_publishes == {}


async def test_a_row_published_from_the_puback_callback_goes_out_on_the_loops_next_turn(
    broker: Mosquitto,
) -> None:
    """The direct publisher writes a packet in the call itself, except from inside paho's
    PUBACK callback: paho holds its callback lock there, and a write that failed there
    closed the socket under that lock and hung the event loop (main 5fc0718). There the
    row is only queued and the writer watch sends it on the loop's next turn."""
    async with client_for(broker.settings(GATEWAY_USER)) as client:
        direct = relay_module._Direct(client)
        paho_client = direct._paho
        queued_in_callback: list[bool] = []
        second = asyncio.Event()

        def first_acked() -> None:
            assert direct.publish(row(2), second.set)
            queued_in_callback.append(paho_client.want_write())

        assert direct.publish(row(1), first_acked)
        assert not paho_client.want_write()  # written in the call
        async with asyncio.timeout(scaled(10)):
            await second.wait()
        assert queued_in_callback == [True]  # not written inside the callback...
        third = asyncio.Event()
        assert direct.publish(row(3), third.set)
        assert not paho_client.want_write()  # ...and outside it, written at once again
        async with asyncio.timeout(scaled(10)):
            await third.wait()


async def test_marks_the_journal_refuses_stay_for_the_next_try(
    store: Store, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    relay = offline_relay(store, site, [])
    assert relay._flush_marks() is True  # nothing to write: nothing to retry
    relay._on_puback(row(1))

    def refuse(batch: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "mark_acked", refuse)
    assert relay._flush_marks() is False  # the marker tries again in a second
    assert [r.id for r, _ in relay._acked] == [1] and relay._acked_ids == {1}
    monkeypatch.undo()
    assert relay._flush_marks() is True
    assert relay._acked == [] and not relay._acked_ids


def test_a_client_without_the_disconnect_future_is_left_alone() -> None:
    retrieve_disconnect(object())  # type: ignore[arg-type]


def test_reconnect_pauses_spread_a_herd_below_the_doubling_bound() -> None:
    pauses = [relay_module.reconnect_pause(2.0, random.Random(seed)) for seed in range(50)]
    assert all(0.0 <= p <= 2.0 for p in pauses)
    assert max(pauses) - min(pauses) > 1.0  # not one instant for every gateway


# -- a cluster node that freezes ----------------------------------------------------------


@contextlib.asynccontextmanager
async def relaying_on(
    store: Store,
    site: Site,
    first: BrokerSettings,
    *more: BrokerSettings,
    inbound: Inbound | None = None,
    subscriptions: tuple[str, ...] = (ACKS,),
    at: float = T0,
) -> AsyncIterator[Relay]:
    """The relay given the nodes ``first``, ``*more`` of one cluster, started at ``at``."""
    relay = Relay(
        store,
        first,
        ManualClock(at),  # the status period never comes: the relay publishes nothing idle
        client_id=f"campusguard-{GATEWAY_ID}",
        subscriptions=subscriptions,
        status_topic=STATUS,
        on_message=inbound if inbound is not None else Inbound(),
        signer=gateway_signer(site),
        gateway_id=GATEWAY_ID,
        brokers=more,
    )
    store.on_commit = relay.submit
    try:
        async with running(relay):
            yield relay
    finally:
        store.on_commit = None


def _aiomqtt_default(name: str) -> float:
    """What aiomqtt uses when the relay does not pass ``name`` (keepalive 60 s, timeout 10 s)."""
    if name == "timeout":  # None in the signature, made 10 s in the constructor
        return float(aiomqtt.Client("127.0.0.1").timeout)
    return float(inspect.signature(aiomqtt.Client).parameters[name].default)


async def test_an_idle_relay_leaves_a_frozen_node_by_its_keepalive_and_delivers_on_the_next(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """A node that freezes while the relay has nothing to publish (no PUBACK to miss) is
    noticed only by the keepalive: paho pings after one period of silence and gives up
    after a second, checked once a second. So the relay is on the next node within a few
    periods (1 s here), and the next alarm goes out there; with aiomqtt's default keepalive
    (60 s) it would sit on the frozen node, deaf to police acks, for two minutes.

    The window is half of that default, not scaled: the relay's clocks and the window
    both run on this event loop, so a slow machine stretches them alike, and a scaled one
    could outlast what it must tell apart."""
    keepalive = 1
    window = _aiomqtt_default("keepalive") / 2
    assert window > 10 * keepalive  # room for a busy machine, and still telling
    node = FreezableNode(broker.port)
    async with node as port:
        live = replace(broker.settings(GATEWAY_USER), keepalive_s=keepalive)
        frozen = replace(live, port=port)
        async with relaying_on(store, site, frozen, live) as relay:
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            assert (relay.node, relay.connects) == (frozen, 1)
            enqueue(store, 0)
            await police.wait_for(lambda: numbers(police) == [0], timeout=10)
            await until(lambda: relay.published == 1 and not relay._sent_at)
            node.freeze()
            try:
                async with asyncio.timeout(window):
                    await node.left.wait()  # the relay gave the frozen node up...
                    await until(lambda: relay.connects == 2 and relay.connected.is_set())
            except TimeoutError:
                raise AssertionError(
                    f"still on the frozen node after {window:.0f} s (keepalive {keepalive} s)"
                ) from None
            assert (relay.node, relay.failures) == (live, 1)  # ...for the next one
            enqueue(store, 1)
            await police.wait_for(lambda: numbers(police) == [0, 1], timeout=10)


async def test_a_node_that_never_answers_connect_is_left_after_the_cluster_timeout(
    store: Store, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen between accepting the TCP connection and answering CONNECT: with several
    nodes the relay waits :data:`~gateway.core.broker.CLUSTER_TIMEOUT_S` for the CONNACK
    and takes the next node; the alarm waiting in the outbox goes out there. The timeout
    is shortened to 1 s for the test; aiomqtt's default, or the relay's one-broker wait
    (10 s), would keep it on the frozen node twice as long as the window (half of that).
    Not scaled, as in the keepalive test above: one loop's timers on both sides. Plain
    MQTT: over TLS the node would freeze in the handshake, which paho's own connect
    timeout ends, before the CONNECT that this is about."""
    wait = 1.0
    monkeypatch.setattr(relay_module, "CLUSTER_TIMEOUT_S", wait)
    window = min(_aiomqtt_default("timeout"), relay_module.PUBLISH_TIMEOUT_S) / 2
    assert window > 4 * wait
    enqueue(store, 0)
    with open_broker(tmp_path / "open") as broker:
        node = FreezableNode(broker.port, frozen=True)
        async with node as port:
            live = broker.settings()
            frozen = replace(live, port=port)
            async with relaying_on(store, site, frozen, live) as relay:
                try:
                    async with asyncio.timeout(window):
                        await relay.connected.wait()
                except TimeoutError:
                    raise AssertionError(f"no node connected within {window:.0f} s") from None
                assert (relay.node, relay.failures, relay.connects) == (live, 1, 1)
                assert node.accepted == 1  # one attempt there, then the next node
                await until(lambda: store.pending_count() == 0)  # PUBACKed there


async def test_one_slow_broker_is_waited_for_not_left(
    store: Store, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one broker there is no next node: a CONNACK that comes late (a broker busy
    after a restart) is waited for up to PUBLISH_TIMEOUT_S, not given up after the
    cluster's short wait only to start the same connection again. The broker here answers
    3 s late, three times the cluster wait (shortened to 1 s) and a third of the other.
    Plain MQTT, as in the test above."""
    wait = 1.0
    monkeypatch.setattr(relay_module, "CLUSTER_TIMEOUT_S", wait)
    late_by = 3.0
    assert wait < late_by < relay_module.PUBLISH_TIMEOUT_S / 2
    enqueue(store, 0)
    with open_broker(tmp_path / "open") as broker:
        node = FreezableNode(broker.port, frozen=True)
        async with node as port:
            slow = replace(broker.settings(), port=port)
            async with relaying_on(store, site, slow) as relay:
                await until(lambda: node.accepted == 1)
                await asyncio.sleep(late_by)  # the broker's delay (not a synchronisation)
                node.thaw()
                async with asyncio.timeout(scaled(10)):
                    await relay.connected.wait()
                assert (relay.node, relay.failures, relay.connects) == (slow, 0, 1)
                assert node.accepted == 1 and not node.left.is_set()
                await until(lambda: store.pending_count() == 0)  # PUBACKed there


async def test_a_gateway_that_vanished_is_offline_for_a_desk_that_connects_later(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """The gateway's connection ends without a DISCONNECT and it cannot come back (power
    cut, cable): the broker publishes its will, ``offline``, retained at QoS 1, so a duty
    desk that connects afterwards sees the gateway gone, not its last ``online``."""
    node = FreezableNode(broker.port)
    async with node as port:
        via = replace(broker.settings(GATEWAY_USER), port=port)
        async with relaying_on(store, site, via) as relay:
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            await police.wait_for(lambda: states(police) == ["online"])
            node.cut()
            await police.wait_for(lambda: states(police) == ["online", "offline"], timeout=10)
            late = police_for(broker, site, user=DESK2)
            await late.start()
            try:
                await late.wait_for(lambda: states(late) == ["offline"], timeout=10)
            finally:
                await late.stop()
            assert relay.connects == 1 and not relay.connected.is_set()


async def test_the_nodes_are_tried_in_the_order_given(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """After an unreachable first node comes the second, not the last (the order is the
    operator's: nearest first)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = replace(broker.settings(GATEWAY_USER), port=s.getsockname()[1])
    second = broker.settings(GATEWAY_USER)
    third = replace(second, keepalive_s=second.keepalive_s + 1)  # the same broker, told apart
    async with relaying_on(store, site, dead, second, third) as relay:
        async with asyncio.timeout(scaled(15)):
            await relay.connected.wait()
        assert (relay.node, relay.failures, relay.connects) == (second, 1, 1)


async def test_the_status_is_signed_again_and_published_every_period(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """A dead gateway must look stale even when someone replays its retained ``online``:
    every STATUS_PERIOD_S the relay signs a fresh one (a newer ``at``), retained."""
    clock = ManualClock(T0)
    async with relaying(store, broker, site, clock=clock) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        await police.wait_for(lambda: states(police) == ["online"])
        for n in (2, 3):
            await until(lambda: bool(clock._sleepers), what="the status loop waiting")
            clock.advance(relay_module.STATUS_PERIOD_S)
            await police.wait_for(lambda n=n: len(states(police)) == n, timeout=10)
        assert states(police) == ["online"] * 3
        late = police_for(broker, site, user=DESK2)  # retained: the latest, for a new desk
        await late.start()
        try:
            await late.wait_for(lambda: states(late) == ["online"], timeout=10)
        finally:
            await late.stop()
    ats = [m.payload["at"] for m in police.messages if m.topic == STATUS]
    assert ats == [
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:01:00.000Z",
        "2026-01-01T00:02:00.000Z",
    ]
    assert [m.payload["at"] for m in late.messages if m.topic == STATUS] == [ats[-1]]


async def test_publish_to_puback_times_keep_only_the_recent(store: Store, site: Site) -> None:
    """One float per message for as long as the gateway runs would grow without end."""
    import time

    relay = offline_relay(store, site, [])
    for n in range(1, 1101):
        relay._sent_at[n] = time.monotonic()
        relay._on_puback(row(n))
    assert len(relay.puback_s) == 1024 and relay.published == 1100


async def test_an_outbox_that_cannot_be_read_is_read_again_a_second_later(
    store: Store, site: Site, broker: Mosquitto, police: Police, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal that refuses a read (locked, an I/O error) costs a second, not the
    connection nor the relay: the alarm goes out on the next try."""
    import sqlite3

    enqueue(store, 0)
    real = store.pending
    calls: list[float] = []

    def pending(*args: Any, **kw: Any) -> Any:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, **kw)

    monkeypatch.setattr(store, "pending", pending)
    async with relaying(store, broker, site) as relay:
        await police.wait_for(lambda: numbers(police) == [0], timeout=10)
    assert len(calls) >= 2 and (relay.connects, relay.failures) == (1, 0)
    # a pause before the next try (not at once: a journal that keeps refusing would spin
    # the event loop); a read that worked is followed by publishing, not by that pause
    assert calls[1] - calls[0] >= 0.9


async def test_a_node_that_freezes_with_an_alarm_in_flight_is_left_for_the_next(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """The alarm's PUBACK does not come: after FAILOVER_PUBACK_S (2 s) the relay leaves
    the node and publishes the alarm again on the next one. The keepalive is 60 s here,
    so only the publisher's own check (it looks once a second, woken or not) can leave
    within the window, half of that; unscaled, as in the keepalive test."""
    keepalive = 60
    window = keepalive / 2
    assert window > 10 * relay_module.FAILOVER_PUBACK_S
    node = FreezableNode(broker.port)
    async with node as port:
        live = replace(broker.settings(GATEWAY_USER), keepalive_s=keepalive)
        frozen = replace(live, port=port)
        async with relaying_on(store, site, frozen, live) as relay:
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            node.freeze()
            enqueue(store, 0)
            try:
                async with asyncio.timeout(window):
                    while not (relay.connects == 2 and relay.connected.is_set()):
                        await asyncio.sleep(0.05)
            except TimeoutError:
                raise AssertionError(f"still on the frozen node after {window:.0f} s") from None
            assert relay.node == live
            await police.wait_for(lambda: numbers(police) == [0], timeout=10)


# -- what the last mutation run left (issue 19) --------------------------------------------


async def test_the_status_goes_out_at_qos_1_at_connect_and_every_period(
    store: Store, site: Site, broker: Mosquitto
) -> None:
    """QoS 1 like every message of the gateway: at QoS 0 an ``online`` lost with a dropped
    connection is not sent again, and QoS 2 is not what the cluster's nodes take. A desk
    that subscribes at QoS 2 gets each status at the QoS it was published with."""
    clock = ManualClock(T0)
    got: list[tuple[str, int]] = []
    async with client_for(broker.settings(DUTYROOM_USER)) as desk:
        await desk.subscribe(STATUS, qos=2)
        messages = aiter(desk.messages)
        async with relaying(store, broker, site, clock=clock):
            async with asyncio.timeout(scaled(10)):
                m = await anext(messages)  # published on connecting
            got.append((str(m.topic), m.qos))
            await until(lambda: bool(clock._sleepers), what="the status loop waiting")
            clock.advance(relay_module.STATUS_PERIOD_S)
            async with asyncio.timeout(scaled(10)):
                m = await anext(messages)  # re-signed a period later
            got.append((str(m.topic), m.qos))
    assert got == [(STATUS, 1), (STATUS, 1)]


class _Connection:
    """Just enough of an aiomqtt client for :meth:`Relay._publisher` on its own: every
    subscription granted, the status PUBACKed at once; an outbox row is PUBACKed at once,
    or never with ``hold``. Without paho inside, the publisher takes the task path."""

    timeout = 10.0

    def __init__(self, *, hold: bool = False) -> None:
        self.sent: list[int] = []  # the ``n`` of each outbox row published, in order
        self._hold = hold

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float) -> list[int]:
        return [qos for _, qos in topics]

    async def publish(self, topic: str, payload: str, *, qos: int = 0, retain: bool) -> None:
        if "/event/n" not in topic:
            return  # the status
        self.sent.append(int(topic.rsplit("n", 1)[-1]))
        if self._hold:
            await asyncio.get_running_loop().create_future()  # no PUBACK comes


async def test_the_backlog_in_memory_stays_within_two_pages_while_pubacks_are_slow(
    store: Store, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large outbox behind a broker that is slow to PUBACK: the publisher reads the next
    page only when less than a page is queued, not one more page at each turn of its
    loop (the whole outbox in memory)."""
    for n in range(4 * BACKLOG_PAGE):
        enqueue(store, n)
    relay = offline_relay(store, site, [])
    reads: list[int] = []
    real = store.pending

    def pending(*args: Any, **kw: Any) -> Any:
        reads.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(store, "pending", pending)
    turns = [0]  # the publisher's loop calls this once at the end of each turn

    def count_turn() -> None:
        turns[0] += 1

    relay._check_overdue = count_turn  # type: ignore[method-assign]
    client = _Connection(hold=True)
    task = asyncio.create_task(relay._publisher(client))  # type: ignore[arg-type]
    try:
        await until(lambda: len(client.sent) == relay_module.WINDOW or task.done())
        for _ in range(4):  # the loop goes round once per wake-up
            seen = turns[0]
            relay.wake()
            await until(lambda s=seen: turns[0] > s or task.done(), what="a turn of the loop")
        assert not task.done()
        assert client.sent == list(range(relay_module.WINDOW))  # a window waits for PUBACKs
        assert len(reads) == 2 and relay._cursor == 2 * BACKLOG_PAGE
        assert len(relay._queue) == 2 * BACKLOG_PAGE - relay_module.WINDOW
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_page_already_pubacked_is_skipped_and_the_next_page_published(
    store: Store, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reconnect whose marks the journal refused, a whole page of the outbox can be
    PUBACKed already (kept in memory, not yet recorded): the publisher skips it and
    publishes the next page, instead of stopping. When its connection ends, a row
    committed after that waits for the next connection's read of the outbox."""
    import sqlite3

    for n in range(BACKLOG_PAGE + 3):
        enqueue(store, n)
    relay = offline_relay(store, site, [])
    for r in store.pending(BACKLOG_PAGE):  # PUBACKed on the connection before
        relay._on_puback(r)

    def refuse(batch: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "mark_acked", refuse)
    client = _Connection()
    task = asyncio.create_task(relay._publisher(client))  # type: ignore[arg-type]
    try:
        await until(lambda: len(client.sent) == 3 or task.done(), what="the second page")
        assert not task.done(), "the publisher stopped"
    finally:
        task.cancel()  # the connection ends
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert client.sent == [BACKLOG_PAGE, BACKLOG_PAGE + 1, BACKLOG_PAGE + 2]
    last = relay._cursor
    assert last == BACKLOG_PAGE + 3 and not relay._backlog
    relay.submit([row(last + 1)])  # committed after the connection ended
    assert not relay._queue and relay._backlog  # read from the outbox on the next one


async def test_a_mark_the_journal_refused_is_written_again_without_another_puback(
    store: Store, site: Site, broker: Mosquitto, police: Police, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker tries a refused write again by itself (a second later): an idle gateway
    whose last alarm's mark failed does not leave it unrecorded until the next PUBACK."""
    import sqlite3

    real = store.mark_acked
    tries: list[int] = []

    def mark_acked(batch: Any) -> None:
        tries.append(len(batch))
        if len(tries) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real(batch)

    monkeypatch.setattr(store, "mark_acked", mark_acked)
    async with relaying(store, broker, site) as relay:
        async with asyncio.timeout(scaled(10)):
            await relay.connected.wait()
        enqueue(store, 0)
        await police.wait_for(lambda: numbers(police) == [0], timeout=10)
        await until(lambda: store.pending_count() == 0, timeout=10, what="the mark retried")
        assert tries == [1, 1] and relay.published == 1


# -- the cluster's keepalive, and the session the broker kept (issue 14) ------------------


async def test_an_idle_relay_given_several_nodes_hears_an_ack_soon_after_its_node_froze(
    store: Store, site: Site, broker: Mosquitto, police: Police
) -> None:
    """The nodes as ``--broker`` gives them (keepalive 15 s each): with several, the relay
    uses the cluster's keepalive (2 s), so an idle gateway whose node froze is on the next
    one within a few seconds and hears the police ack published meanwhile. With each
    node's own 15 s it would ping only after 15 s of silence and give up 15 s later: deaf
    for at least 30 s. The window is that first 15 s, not scaled (one loop's clocks)."""
    node = FreezableNode(broker.port)
    inbound = Inbound()
    async with node as port:
        live = broker.settings(GATEWAY_USER)
        window = live.keepalive_s
        assert window >= 5 * CLUSTER_KEEPALIVE_S
        frozen = replace(live, port=port)
        async with relaying_on(store, site, frozen, live, inbound=inbound) as relay:
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            assert relay.node == frozen
            node.freeze()
            ack = await police.ack("inc-9")
            try:
                async with asyncio.timeout(window):
                    await inbound.arrived.wait()
            except TimeoutError:
                raise AssertionError(f"no ack within {window} s of the node's freeze") from None
            assert relay.node == live
            assert inbound.messages == [(f"campusguard/{SITE}/ack/inc-9", ack.encode())]


def test_one_broker_keeps_its_own_keepalive_several_take_the_clusters() -> None:
    from gateway.core.broker import keepalive_for

    s = BrokerSettings("127.0.0.1", 1883)
    assert keepalive_for(s, 1) == s.keepalive_s == 15
    assert keepalive_for(s, 2) == CLUSTER_KEEPALIVE_S
    assert keepalive_for(replace(s, keepalive_s=1), 3) == 1  # shorter still: kept


class PacketTap(TcpRelay):
    """A TCP relay to the broker that reads the MQTT packets passing through: it counts
    what clients send, by packet type; with ``swallow_subscribes`` a SUBSCRIBE does not
    reach the broker (a node that died before it handled one); with ``hold_subacks`` a
    SUBACK and all the broker sends after it wait for :meth:`release` (a broker slow to
    answer SUBSCRIBE, as NATS is while it loads retained messages); with ``drop_pubacks_of``
    the PUBACKs of those topics do not reach the client, though PINGRESPs do (a node
    whose stream stalled); with ``drop_connacks`` a CONNACK does not reach the client (the
    broker took its CONNECT, the client never hears so); :meth:`drop` ends every connection
    at once."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.sent: dict[int, int] = {}  # MQTT packet type -> how many clients sent
        self.filters: list[list[str]] = []  # each SUBSCRIBE's topic filters
        self.hold_subacks = False
        self.held = 0  # SUBACKs held
        self.swallow_subscribes = False  # SUBSCRIBEs counted but not passed on
        self.drop_pubacks_of: str | None = None  # PUBACKs of topics with this in them: lost
        self.drop_connacks = False
        self.connacks_dropped = 0
        self._ids: set[bytes] = set()  # their packet ids
        self._released = asyncio.Event()

    @property
    def subscribes(self) -> int:
        return self.sent.get(8, 0)

    def release(self) -> None:
        self._released.set()

    def drop(self) -> None:
        for w in self._held:
            w.transport.abort()
        self._held = []

    def close(self) -> None:
        self._released.set()
        self.drop()
        super().close()

    async def relay(
        self,
        cr: asyncio.StreamReader,
        cw: asyncio.StreamWriter,
        br: asyncio.StreamReader,
        bw: asyncio.StreamWriter,
    ) -> None:
        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            buf = b""
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    buf += data
                    while (packet := mqtt_packet(buf)) is not None:
                        buf = buf[len(packet) :]
                        kind = packet[0] >> 4
                        if up:
                            self.sent[kind] = self.sent.get(kind, 0) + 1
                            if kind == 3 and self.drop_pubacks_of is not None:
                                topic, packet_id = _publish_of(packet)
                                if self.drop_pubacks_of in topic:
                                    self._ids.add(packet_id)
                            if kind == 8:
                                self.filters.append(_filters_of(packet))
                            if kind == 8 and self.swallow_subscribes:
                                continue
                        elif kind == 9 and self.hold_subacks:
                            self.held += 1
                            await self._released.wait()
                        elif kind == 4 and packet[-2:] in self._ids:
                            continue
                        elif kind == 2 and self.drop_connacks:
                            self.connacks_dropped += 1
                            continue
                        w.write(packet)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(cr, bw, True), pipe(br, cw, False), return_exceptions=True)


async def _desk_acks(port: int, incident: str, inbound: Inbound) -> None:
    """A duty desk on the broker at ``port`` acks ``incident``; wait until the relay hears it."""
    async with aiomqtt.Client("127.0.0.1", port) as desk:
        await desk.publish(f"campusguard/{SITE}/ack/{incident}", b"ack", qos=1)
    async with asyncio.timeout(scaled(10)):
        await inbound.arrived.wait()


def _filters_of(packet: bytes) -> list[str]:
    """The topic filters of a SUBSCRIBE packet."""
    at = 1
    while packet[at] & 0x80:
        at += 1
    at += 3  # the last length byte, the packet id
    filters = []
    while at < len(packet):
        size = int.from_bytes(packet[at : at + 2], "big")
        filters.append(packet[at + 2 : at + 2 + size].decode())
        at += 3 + size  # and the requested QoS
    return filters


def _publish_of(packet: bytes) -> tuple[str, bytes]:
    """The topic and packet id of a QoS 1 PUBLISH packet."""
    at = 1
    while packet[at] & 0x80:  # the remaining length's bytes
        at += 1
    size = int.from_bytes(packet[at + 1 : at + 3], "big")
    topic = packet[at + 3 : at + 3 + size]
    return topic.decode(), packet[at + 3 + size : at + 5 + size]


async def test_a_session_the_broker_kept_is_not_subscribed_again(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """After a reconnect whose CONNACK says the broker kept the session this run subscribed,
    the relay subscribes only its own status again (NATS spends ~0.1-0.25 s per filter,
    delivering nothing meanwhile): the kept subscriptions still bring the police ack, and
    the outbox goes out."""
    inbound = Inbound()
    with open_broker(tmp_path / "open") as broker:
        tap = PacketTap(broker.port)
        async with tap as port:
            async with relaying_on(
                store, site, replace(broker.settings(), port=port), inbound=inbound
            ) as relay:
                async with asyncio.timeout(scaled(10)):
                    await relay.connected.wait()
                first = tap.subscribes
                assert first >= 1 and ACKS in tap.filters[0]
                tap.drop()
                await until(lambda: relay.connects == 2 and relay.connected.is_set())
                # on the kept session only its own status again (for its retained copy)
                assert tap.filters[first:] == [[STATUS]]
                await _desk_acks(broker.port, "inc-3", inbound)
                assert inbound.messages == [(f"campusguard/{SITE}/ack/inc-3", b"ack")]
                enqueue(store, 0)
                await until(lambda: store.pending_count() == 0)
            assert tap.filters[first:] == [[STATUS]]


async def test_a_kept_session_is_not_subscribed_again_after_a_dead_nodes_refusal(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """The node the relay used died, and the next one refused the connection (it was down
    too): that attempt sent no CONNECT, so no broker made a new session meanwhile, and the
    session present at the next CONNACK is the kept one: its own status only, as after any
    kept session (subscribing everything again costs NATS ~1.2 s in a station's failover)."""
    inbound = Inbound()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with open_broker(tmp_path / "open") as broker:
        tap = PacketTap(broker.port)
        async with tap as port:
            via = replace(broker.settings(), port=port)
            dead = replace(broker.settings(), port=dead_port)
            async with relaying_on(store, site, via, dead, inbound=inbound) as relay:
                async with asyncio.timeout(scaled(10)):
                    await relay.connected.wait()
                first = tap.subscribes
                tap.drop()
                await until(lambda: relay.connects == 2 and relay.connected.is_set(), 20)
                assert relay.failures >= 1  # the dead node was tried between
                assert tap.filters[first:] == [[STATUS]]
                await _desk_acks(broker.port, "inc-4", inbound)
                assert inbound.messages == [(f"campusguard/{SITE}/ack/inc-4", b"ack")]


async def test_a_subscribe_that_got_no_suback_is_sent_again_on_the_kept_session(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """The node died with the relay's SUBSCRIBE unanswered: the session it made at CONNECT
    is kept, but without those subscriptions. The next connection's CONNACK says "session
    present", and the relay subscribes all the same: only a SUBACK tells it the broker
    has them. Then the police ack reaches it."""
    inbound = Inbound()
    with open_broker(tmp_path / "open") as broker:
        tap = PacketTap(broker.port)
        tap.swallow_subscribes = True
        async with tap as port:
            via = replace(broker.settings(), port=port)
            async with relaying_on(store, site, via, inbound=inbound) as relay:
                await until(lambda: tap.subscribes == 1, what="the SUBSCRIBE sent")
                tap.swallow_subscribes = False
                tap.drop()
                async with asyncio.timeout(scaled(15)):
                    await relay.connected.wait()
                assert relay.connects == 2 and relay._session_present()
                assert tap.subscribes == 2
                await _desk_acks(broker.port, "inc-5", inbound)


async def test_a_session_made_by_a_connect_whose_connack_was_lost_is_subscribed_again(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """A client with a clean session took the relay's client id over: the session this run
    subscribed is gone. The broker took the relay's next CONNECT and made a new, empty
    session, but its CONNACK never came (the attempt timed out). The connection after
    says "session present", of that empty session: the relay subscribes everything again
    and hears the police ack. (Seen in test_security: a stale writer watch kept aiomqtt
    from reading a CONNACK, and the relay, subscribing only its status on the "kept"
    session, heard no ack again.)"""
    inbound = Inbound()
    with open_broker(tmp_path / "open") as broker:
        tap = PacketTap(broker.port)
        async with tap as port:
            via = replace(broker.settings(), port=port)
            # the same node twice: a CONNECT unanswered is left after the cluster's timeout
            async with relaying_on(store, site, via, via, inbound=inbound) as relay:
                async with asyncio.timeout(scaled(10)):
                    await relay.connected.wait()
                tap.drop_connacks = True
                with contextlib.suppress(aiomqtt.MqttError):  # the relay may take it back
                    async with aiomqtt.Client(
                        "127.0.0.1", broker.port, identifier=f"campusguard-{GATEWAY_ID}"
                    ):
                        pass
                await until(lambda: tap.connacks_dropped == 1, what="a CONNACK lost")
                tap.drop_connacks = False
                await until(lambda: relay.connected.is_set(), timeout=20, what="connected")
                assert relay.failures >= 2 and relay._session_present()
                assert ACKS in tap.filters[-1]  # not the status alone
                await _desk_acks(broker.port, "inc-7", inbound)


async def test_a_new_run_subscribes_though_the_broker_kept_the_last_runs_session(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """The gateway restarted with other sites in boards.yaml: the broker kept the last
    run's session and says so, but with that run's subscriptions. The new run subscribes
    its own (it trusts only what it subscribed itself), and hears the acks of its site."""
    inbound = Inbound()
    with open_broker(tmp_path / "open") as broker:
        s = broker.settings()
        async with relaying_on(store, site, s, subscriptions=("campusguard/other/ack/+",)) as r:
            async with asyncio.timeout(scaled(10)):
                await r.connected.wait()
        async with relaying_on(store, site, s, inbound=inbound, at=T0 + 60) as relay:
            async with asyncio.timeout(scaled(10)):
                await relay.connected.wait()
            assert relay._session_present()  # the last run's session
            await _desk_acks(broker.port, "inc-6", inbound)


async def test_a_node_that_answers_pings_but_no_puback_is_left_for_the_next(
    store: Store, site: Site, tmp_path: Path
) -> None:
    """The keepalive cannot tell a node whose stream stalled (it answers PINGREQ, it does
    not PUBACK): the missing PUBACK does, after FAILOVER_PUBACK_S, and the alarm goes
    out again on the next node."""
    with open_broker(tmp_path / "open") as broker:
        tap = PacketTap(broker.port)
        tap.drop_pubacks_of = "/event/"
        async with tap as port:
            live = broker.settings()
            stalled = replace(live, port=port)
            async with relaying_on(store, site, stalled, live) as relay:
                async with asyncio.timeout(scaled(10)):
                    await relay.connected.wait()
                assert relay.node == stalled
                enqueue(store, 0)
                await until(lambda: len(tap._ids) == 1, what="the alarm sent")
                await until(lambda: relay.node == live and store.pending_count() == 0, 30)
                assert relay.failures == 1
