"""Our MQTT clients on aiomqtt 2.5 (pinned): one broker or a cluster's nodes, nothing lost.

:class:`NodeLoop` is the loop every subscriber runs (the console, the web duty room, the
police emulator, the benches' simulated gateways): connect to a node, subscribe (SUBACK
checked), receive, and on any broker failure move to the next node after a (jittered)
pause, keeping the persistent session. It PUBACKs a QoS 1 message only once the
client's handler has taken it. paho PUBACKs on receipt by default, before the
application has read the message from aiomqtt's queue: a connection that failed
(a SUBSCRIBE that timed out on a node whose cluster was still electing leaders) took
the messages already in that queue with it, PUBACKed, so the broker never sent them
again. A duty-room console lost an alarm so (issue 14). Now what was received is
handled even when the connection fails meanwhile, and what was not handled is not
PUBACKed: the broker delivers it again, on this node or the next.

The rest mends aiomqtt where it fails us:

- :func:`retrieve_disconnect`: the exception aiomqtt leaves unread when a connection ends.
- :func:`subscribe`: a refused subscription raises instead of looking like a quiet site.
- :func:`send_subscriptions`: the SUBSCRIBEs on the wire at once, their SUBACKs awaited
  later (the gateway's relay publishes its outbox meanwhile).
- :func:`session_flag`: the CONNACK's session-present flag, which aiomqtt does not keep.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.core.broker import CLUSTER_TIMEOUT_S, BrokerSettings, keepalive_for
from gateway.core.cancelling import raise_if_cancelling
from gateway.core.errors import SubscriptionRefused
from gateway.relay.socketloop import connect_sent, loop_watched

# NATS answers a SUBSCRIBE only after loading the retained messages it matches, and waits
# up to 5 s for that when the retained stream has lost its leader (a node killed): a
# client that gave up at 5 s left a node just as its SUBACK came, for the next node, which
# was no readier. A node that is frozen is left by the keepalive long before this.
SUBSCRIBE_TIMEOUT_S = 8.0
# filters per SUBSCRIBE packet: one packet (one retained lookup on NATS) for a client's
# usual topics, and short packets for a station of many sites. NATS answers nothing on a
# connection while it handles a SUBSCRIBE (not even PINGREQ), and makes a replicated
# consumer per filter (two for a filter ending in #), ~0.1-0.25 s each on a loaded
# cluster: 16 filters of a station took 4 s, two keepalive periods, so the client left
# the node before the SUBACK, again on every node, and never finished subscribing.
FILTERS_PER_SUBSCRIBE = 4
BACKOFF_MIN_S = 0.1  # as the gateway's relay (gateway/relay/relay.py)
BACKOFF_MAX_S = 5.0

TRAIL = 64  # moments kept in NodeLoop.trail

Pause = Callable[[int], float]
"""The pause before the next attempt, given the failures in a row so far (1, 2, ...)."""


def jittered_backoff(
    rng: random.Random | None = None, low_s: float = BACKOFF_MIN_S, high_s: float = BACKOFF_MAX_S
) -> Pause:
    """Uniform in [0, d], d doubling per failure in a row from ``low_s`` up to ``high_s``.

    The relay's policy ("full jitter", :func:`gateway.relay.relay.reconnect_pause`): the
    first retry after a node's death within ``low_s``, and clients that lost a node
    together (every console of a city on it) spread out instead of retrying in step.
    """
    draw = rng or random.Random()

    def pause(failures: int) -> float:
        return draw.uniform(0.0, min(high_s, low_s * 2 ** max(0, failures - 1)))

    return pause


def fixed_pause(seconds: float) -> Pause:
    """The same pause after every failure."""
    return lambda _failures: seconds


class NodeLoop:
    """One MQTT client of a broker, or of the nodes of one cluster, kept connected.

    ``nodes``: one broker, or a cluster's nodes in order (every one a node of the same
    cluster: the persistent session lives in its replicated streams). ``identifier``: a
    persistent session (``clean_session=False``) under that client id; None: a clean
    session. ``will()``: the last will of each connection (dated when it connects).
    With several nodes the keepalive is at most
    :data:`~gateway.core.broker.CLUSTER_KEEPALIVE_S` (a frozen node is left within ~2
    periods) and CONNECT waits :data:`~gateway.core.broker.CLUSTER_TIMEOUT_S`;
    ``keepalive_s``/``timeout_s`` say otherwise. ``log_failure(node, exc)`` hears every
    failed connection (default: nothing).

    :attr:`client` is the connected client (None between connections), :attr:`node` the
    node in use, :attr:`up` is set while subscribed. :attr:`trail` keeps the last
    :data:`TRAIL` moments of the connection's life, ``(clock(), what, "host:port")`` with
    ``what`` one of "connected" (CONNACK), "subscribed" (up: every SUBACK, or a session
    resumed), "failed", "down":
    where a failover's seconds went (bench/city.py). :attr:`session_present` is what the
    last CONNACK said: True when the broker kept this client's persistent session (what
    was published meanwhile is queued for it), False when the session is new.
    """

    def __init__(
        self,
        nodes: Sequence[BrokerSettings],
        *,
        identifier: str | None = None,
        will: Callable[[], aiomqtt.Will] | None = None,
        pause: Pause | None = None,
        keepalive_s: int | None = None,
        timeout_s: float | None = None,
        log_failure: Callable[[BrokerSettings, aiomqtt.MqttError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        resume: bool = False,
    ) -> None:
        """Nothing connects before :meth:`run` (which needs at least one node).

        ``resume``: when the broker says the session is present (CONNACK) and holds the
        topics this loop subscribed before, do not subscribe again (see :meth:`run`).
        """
        self.nodes = list(nodes)
        self.node: BrokerSettings | None = self.nodes[0] if self.nodes else None
        self.identifier = identifier
        self.will = will
        self.pause = pause or jittered_backoff()
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._log_failure = log_failure or (lambda node, exc: None)
        self.client: aiomqtt.Client | None = None
        self.up = asyncio.Event()
        self.connects = 0
        self.failures = 0  # connections that failed, in all
        self.node_changes = 0  # connections made to another node than the last one
        self.clock = clock
        self.resume = resume
        self._session_present = False  # the last CONNACK's flag
        self._connack: Callable[[], bool] = lambda: False
        self.resumed = False  # this connection kept the session subscribed before: no SUBSCRIBE
        self._subscribed: list[str] | None = None  # what this loop's session holds
        self.subscriptions = 0  # connections on which the topics were subscribed (SUBACKed)
        self.trail: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=TRAIL)

    @property
    def session_present(self) -> bool:
        """The last CONNACK said the broker kept this client's session."""
        return self._session_present

    def _mark(self, what: str) -> None:
        s = self.node
        self.trail.append((self.clock(), what, f"{s.host}:{s.port}" if s else "?"))

    def _make_client(self, s: BrokerSettings) -> aiomqtt.Client:
        cluster = len(self.nodes) > 1
        keepalive = self._keepalive_s or keepalive_for(s, len(self.nodes))
        client = loop_watched(
            aiomqtt.Client(
                s.host,
                s.port,
                username=s.username,
                password=s.password,
                tls_context=s.tls_context(),
                identifier=self.identifier,
                clean_session=self.identifier is None,
                keepalive=keepalive,
                timeout=self._timeout_s or (CLUSTER_TIMEOUT_S if cluster else 10.0),
                will=self.will() if self.will is not None else None,
            )
        )
        inner: paho.Client = client._client  # pinned aiomqtt 2.5
        inner.manual_ack_set(True)  # PUBACK once handled: see the module's docstring
        self._connack = session_flag(client)
        return client

    async def run(
        self,
        topics: Callable[[], Iterable[str]],
        on_message: Callable[[str, bytes], None],
        *,
        on_connect: Callable[[aiomqtt.Client], None] | None = None,
        on_up: Callable[[aiomqtt.Client], Awaitable[None]] | None = None,
        serve: Callable[[aiomqtt.Client], Awaitable[None]] | None = None,
        on_down: Callable[[], None] | None = None,
    ) -> None:
        """Stay connected and subscribed to ``topics()`` (asked at every connection).

        ``on_message(topic, payload)`` gets every message, from the moment the connection
        is made (a persistent session's queued messages come before any SUBACK), and also
        those received on a connection that then failed (they were not PUBACKed: the
        broker sends them again, so a receiver folds duplicates, as on ``incident`` and
        ``update_no``). ``on_connect(client)``: connected, before anything is received;
        ``on_up(client)``: subscribed; ``serve(client)``: runs beside the receiving once
        subscribed, and its return ends :meth:`run` (without it, only a cancellation
        does); ``on_down()``: a connection that was made has ended.

        With :attr:`resume`, a connection whose CONNACK says the session is present, for
        the topics subscribed before (and no attempt since sent its CONNECT and got no
        CONNACK: the broker may have made a new, empty session then), is up at once: no
        SUBSCRIBE, so no retained messages again either (:attr:`resumed`, set before
        ``on_connect``: what was published meanwhile comes from the kept session instead).
        :attr:`session_present` is the last CONNACK's flag.

        A broker failure (``aiomqtt.MqttError``, a refused subscription among them), in
        any of these or in receiving, ends the connection: the next node is tried after
        :attr:`pause`. A cancellation is never taken for one (``raise_if_cancelling``).
        """
        if not self.nodes:
            raise ValueError("no broker to connect to")
        index = 0
        last: BrokerSettings | None = None
        in_row = 0  # failures since the client was last subscribed
        while True:
            s = self.node = self.nodes[index]
            client = self._make_client(s)
            queue: asyncio.Queue[aiomqtt.Message] = client._queue  # pinned aiomqtt 2.5
            entered = False
            try:
                async with client:
                    entered = True
                    self._mark("connected")
                    self.connects += 1
                    if last is not None and last != s:
                        self.node_changes += 1
                    last = s
                    self.client = client
                    self._session_present = self._connack()
                    wanted = list(dict.fromkeys(topics()))
                    self.resumed = (
                        self.resume and self._session_present and wanted == self._subscribed
                    )
                    try:
                        if on_connect is not None:
                            on_connect(client)
                        await self._connected(client, wanted, on_message, on_up, serve)
                        return  # serve returned
                    finally:
                        self._mark("down")
                        if self.up.is_set():
                            in_row = 0
                        self.client = None
                        self.up.clear()
                        if on_down is not None:
                            on_down()
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                if not entered and connect_sent(client):
                    # the broker may have taken this CONNECT, its CONNACK lost: had the
                    # session been wiped before (a clean session took the id over), it made
                    # a new, empty one, which the next CONNACK calls present (a refused
                    # connection, a dead node's, sent nothing: the session stands)
                    self._subscribed = None
                    self._mark("no connack")
                else:
                    self._mark("failed")
                self._log_failure(s, exc)
                self.failures += 1
                in_row += 1
                # received, not handled, not PUBACKed: shown now, and sent again anyway
                while not queue.empty():
                    _handle(queue.get_nowait(), on_message)
            finally:
                retrieve_disconnect(client)
            index = (index + 1) % len(self.nodes)
            await asyncio.sleep(self.pause(in_row))

    async def _connected(
        self,
        client: aiomqtt.Client,
        wanted: list[str],
        on_message: Callable[[str, bytes], None],
        on_up: Callable[[aiomqtt.Client], Awaitable[None]] | None,
        serve: Callable[[aiomqtt.Client], Awaitable[None]] | None,
    ) -> None:
        """One connection, until ``serve`` returns; raises its broker failure."""

        async def work() -> None:
            if not self.resumed:
                # a new session (or other topics): subscribe, and wait for every SUBACK
                self._subscribed = None
                await subscribe_all(client, wanted)
                self._subscribed = wanted
                self.subscriptions += 1
            # else the broker kept this session's subscriptions (CONNACK's session present,
            # MQTT 3.1.1 3.2.2.2), which this loop made and saw granted: subscribing again
            # would cost NATS a consumer update and a retained-message lookup per filter
            # before it delivers anything (a station of 150 sites: 1.2 s of its failover).
            # The retained messages are then not sent again: a client that rebuilds its
            # state from them keeps that state when :attr:`resumed` (the console's board):
            # what it missed is queued in the kept session
            self._mark("subscribed")
            self.up.set()
            if on_up is not None:
                await on_up(client)
                raise_if_cancelling()
            if serve is not None:
                await serve(client)
                raise_if_cancelling()
            else:
                await asyncio.Future()  # until the connection fails or we are cancelled

        # the receiver runs from the start: it notices a lost connection at once (a
        # subscribe or publish waits for its timeout), and takes what comes meanwhile
        receiver = asyncio.create_task(_receive(client, on_message), name="mqtt-receive")
        worker = asyncio.create_task(work(), name="mqtt-work")
        try:
            done, _ = await asyncio.wait({receiver, worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # also when this task is cancelled: neither may outlive the connection
            for t in (receiver, worker):
                t.cancel()
            await asyncio.gather(receiver, worker, return_exceptions=True)
        for t in (worker, receiver):  # the worker's failure first: it says why
            if t in done and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if worker not in done:
            raise aiomqtt.MqttError("the broker's message stream ended")


async def _receive(client: aiomqtt.Client, on_message: Callable[[str, bytes], None]) -> None:
    inner: paho.Client = client._client  # pinned aiomqtt 2.5
    async for m in client.messages:
        _handle(m, on_message)
        if m.qos > 0:
            inner.ack(m.mid, m.qos)  # in the order received, as MQTT asks


def _handle(m: aiomqtt.Message, on_message: Callable[[str, bytes], None]) -> None:
    raw = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
    on_message(str(m.topic), raw)


def session_flag(client: aiomqtt.Client) -> Callable[[], bool]:
    """Keep the session-present flag of ``client``'s CONNACKs (hook it before it connects).

    Returns the reader: True when the last CONNACK said the broker kept this client's
    persistent session, with its subscriptions (MQTT 3.1.1 3.2.2.2). Without aiomqtt 2.5's
    (pinned) connect callback it stays False: the caller subscribes every time.
    """
    inner: paho.Client = client._client  # pinned aiomqtt 2.5
    connack = inner.on_connect  # aiomqtt's
    present = [False]
    if connack is None:
        return lambda: False

    def on_connect(c: paho.Client, userdata: Any, flags: Any, *rest: Any) -> None:
        # paho's thread or the loop: a plain value, read once CONNACK is awaited
        present[0] = bool(getattr(flags, "session_present", False))
        connack(c, userdata, flags, *rest)

    inner.on_connect = on_connect
    return lambda: present[0]


def retrieve_disconnect(client: aiomqtt.Client) -> None:
    """Read the exception aiomqtt 2.5 (pinned) leaves in its ``_disconnected`` future.

    Call it when a connection has ended (``finally``). Nothing awaits that future when the
    connection drops while no one reads the messages: the broker drops a leaving client
    (a second gateway took the client id over), or the keepalive expires while the client
    waits for a SUBACK or a PUBACK (a frozen node). asyncio then logs "Future exception
    was never retrieved" with a traceback when the client is freed, after the client's own
    one line about the disconnect.
    """
    fut = getattr(client, "_disconnected", None)
    if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
        fut.exception()


async def subscribe(client: aiomqtt.Client, topic: str, qos: int = 1) -> None:
    """Subscribe to ``topic`` and check the SUBACK; raise :class:`SubscriptionRefused` if refused.

    aiomqtt returns the broker's answer without judging it: a refused subscription (an ACL,
    or NATS's per-session limit of un-PUBACKed messages) would otherwise look like a quiet
    site. Raised as an MqttError, it ends the connection like any broker failure: the
    client's retry loop logs it and tries again.
    """
    await subscribe_all(client, [topic], qos)


async def subscribe_all(client: aiomqtt.Client, topics: Iterable[str], qos: int = 1) -> None:
    """:func:`subscribe` to every topic, :data:`FILTERS_PER_SUBSCRIBE` to a SUBSCRIBE packet."""
    wanted = list(dict.fromkeys(topics))
    for i in range(0, len(wanted), FILTERS_PER_SUBSCRIBE):
        batch = wanted[i : i + FILTERS_PER_SUBSCRIBE]
        granted = await client.subscribe(
            [(t, qos) for t in batch], timeout=max(SUBSCRIBE_TIMEOUT_S, client.timeout)
        )
        raise_if_cancelling()  # Python 3.11's wait_for inside may have lost one
        _check_granted(batch, granted)


async def send_subscriptions(
    client: aiomqtt.Client, topics: Iterable[str], qos: int = 1
) -> Coroutine[Any, Any, None]:
    """Queue the SUBSCRIBE packets for ``topics`` now; return the wait for their SUBACKs.

    :data:`FILTERS_PER_SUBSCRIBE` filters to a packet, every packet queued before this
    returns, without suspending (pinned aiomqtt 2.5's paho client and its table of
    pending SUBACKs), so what the caller publishes afterwards goes on the wire behind
    them. The returned coroutine (await it) raises :class:`SubscriptionRefused` for a
    refused filter and an MqttError when the SUBACKs take longer than
    :data:`SUBSCRIBE_TIMEOUT_S` (or the client's timeout). A client without those
    internals is subscribed here by :func:`subscribe_all`, every SUBACK awaited before
    this returns: the same order on the wire, only slower.
    """
    inner = getattr(client, "_client", None)  # pinned aiomqtt 2.5
    pending = getattr(client, "_pending_subscribes", None)
    if not isinstance(inner, paho.Client) or not isinstance(pending, dict):
        await subscribe_all(client, topics, qos)
        return _nothing()
    loop = asyncio.get_running_loop()
    wanted = list(dict.fromkeys(topics))
    sent: list[tuple[list[str], asyncio.Future[Any]]] = []
    for i in range(0, len(wanted), FILTERS_PER_SUBSCRIBE):
        batch = wanted[i : i + FILTERS_PER_SUBSCRIBE]
        rc, mid = inner.subscribe([(t, qos) for t in batch])
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise aiomqtt.MqttCodeError(rc, "Could not subscribe to topic")
        pending[mid] = fut = loop.create_future()  # aiomqtt's SUBACK callback resolves it
        sent.append((batch, fut))
    return _subacks(sent, max(SUBSCRIBE_TIMEOUT_S, client.timeout))


async def _nothing() -> None:
    return None


async def _subacks(sent: list[tuple[list[str], asyncio.Future[Any]]], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            for batch, fut in sent:
                _check_granted(batch, await fut)
    except TimeoutError:
        raise aiomqtt.MqttError(f"no SUBACK within {timeout_s:.0f} s") from None


def _check_granted(batch: Sequence[str], granted: Iterable[Any]) -> None:
    codes = [code if isinstance(code, int) else code.value for code in granted]
    for topic, value in zip(batch, codes, strict=False):
        if value >= 0x80:
            raise SubscriptionRefused(
                f"the broker refused the subscription to {topic} (SUBACK 0x{value:02x})"
            )
