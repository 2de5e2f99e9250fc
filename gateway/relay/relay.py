"""Outbox -> MQTT broker (QoS 1, in order), and inbound police/duty commands -> pipeline.

aiomqtt's reconnect loop: ``async with client`` inside a retry loop that catches
``aiomqtt.MqttError``, with capped backoff. The outbox table is the truth; the relay keeps
the part it is working on in memory:

- New messages arrive from the journal's commit (:meth:`Relay.submit`, the store's
  ``on_commit``), so a committed alarm is published at once, without reading it back.
- After a (re)connect, everything still unsent is read from the outbox in id order
  (the backlog) before new messages are taken in memory again: nothing is skipped.
- The publisher is pipelined: up to ``WINDOW`` publishes in flight, each next one sent as
  soon as there is room (not a window at a time). A message is handed to the MQTT client
  and written to the socket in the callback that committed it, and its PUBACK is taken in
  the callback that reads it (:class:`_Direct`), so no task hop and no other callback of
  the loop (another link's commit, say) can come between commit and wire. That uses two
  internals of aiomqtt 2.5 (pinned): its paho client and its table of pending PUBACKs;
  without them the relay falls back to ``await client.publish`` per message.
- Each PUBACK's arrival time is kept, and a separate task records them in the outbox
  (``sent_at``) in batches, off the alarm path and without an fsync of its own. A message
  whose PUBACK was not recorded (crash, power cut) is published again with the same
  incident id and ``update_no`` (at least once; receivers de-duplicate).

The session is persistent (``clean_session=False``, a fixed client id), so police
acknowledgements published while the gateway was away are delivered on return. When the
CONNACK says the broker kept the session this run subscribed, only the gateway's own
status is subscribed again (for its retained copy); the outbox goes out right behind the
SUBSCRIBE, while the SUBACKs and then the status ``online`` are awaited beside it
(:meth:`Relay._publisher`). With several nodes the keepalive
is the cluster's (:func:`~gateway.core.broker.keepalive_for`): an idle gateway on a frozen
node hears no acks until it leaves it. An inbound
message is PUBACKed once handled, not when paho reads it: one still in aiomqtt's queue when
the connection ends is sent again by the broker, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.core.broker import CLUSTER_TIMEOUT_S, BrokerSettings, keepalive_for
from gateway.core.cancelling import raise_if_cancelling
from gateway.core.clock import Clock
from gateway.core.errors import DuplicateGatewayError, EnvelopeError
from gateway.core.timefmt import iso, parse_iso
from gateway.journal.store import OutboxRow, Store
from gateway.relay.mqttsocket import (
    retrieve_disconnect,
    send_subscriptions,
    session_flag,
)
from gateway.relay.socketloop import connect_sent, loop_watched
from gateway.security.envelope import MAX_PAYLOAD_BYTES, Signer, open_gateway

log = logging.getLogger(__name__)

WINDOW = 64  # messages in flight at once
BACKLOG_PAGE = 256  # outbox rows read at a time after a (re)connect
MARK_DELAY_S = 0.02  # PUBACKs gathered this long before they are recorded
PUBLISH_TIMEOUT_S = 10.0
# With several nodes of one cluster, a node that has stopped answering (killed, frozen,
# cut off) is left for the next one after this long without a PUBACK, or without an
# answer to CONNECT or SUBSCRIBE: the outbox is published again there, in order, and the
# persistent session (in the cluster's replicated streams) is the same on every node.
FAILOVER_PUBACK_S = 2.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
STATUS_PERIOD_S = 60.0  # the signed status is re-published this often (clients: stale after 3)
FAILURE_LOG_WINDOW_S = 60.0  # broker failures: one warning per window, with the count
OVERSIZE_LOG_WINDOW_S = 60.0  # oversized inbound payloads: one warning per window
FORGED_STATUS_LOG_WINDOW_S = 60.0  # a status someone else wrote: one error per window


class _Direct:
    """Publish through aiomqtt's paho client at once, PUBACK by callback (no task hops).

    aiomqtt 2.5 calls ``_pending_publishes.pop(mid).set()`` from paho's ``on_publish``
    when the PUBACK of ``mid`` arrives: an object with a ``set`` method there hears it in
    the same callback. Both attributes are checked once per connection.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        """Raise AttributeError if this aiomqtt lacks the internals."""
        self._paho: paho.Client = client._client  # pinned aiomqtt 2.5
        self._pending: dict[int, Any] = client._pending_publishes
        if not isinstance(self._paho, paho.Client) or not isinstance(self._pending, dict):
            raise AttributeError("aiomqtt internals changed")
        self._in_callback = False

    def publish(self, row: OutboxRow, on_puback: Callable[[], None]) -> bool:
        """Queue and write one message; False if the client refused it (not connected)."""
        p = self._paho
        # Without a register-write hook paho writes the packet itself, in this call. With
        # aiomqtt's hook it would only ask for a writer watch on the loop's next turn
        # (a wake-up through the loop's self-pipe, then add_writer and remove_writer):
        # syscalls on the alarm path for a socket that takes the packet at once anyway.
        watch = p.on_socket_register_write
        p.on_socket_register_write = None
        try:
            info = p.publish(row.topic, row.payload, row.qos, row.retain)
            # Never write from inside paho's PUBACK callback: paho holds its callback lock
            # there, and a write that fails (the node killed mid-burst) closes the socket,
            # which takes that lock again: the event loop hung for ever. paho's publish()
            # only queues there; the writer watch below sends it on the loop's next turn.
            if info.rc == paho.MQTT_ERR_SUCCESS and p.want_write() and not self._in_callback:
                p.loop_write()
        finally:
            p.on_socket_register_write = watch
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        self._pending[info.mid] = _OnSet(functools.partial(self._called_back, on_puback))
        sock = p.socket()
        if watch is not None and sock is not None and p.want_write():
            # the socket is full, or this is paho's callback: the rest when writable
            watch(p, p.user_data_get(), sock)
        return True

    def _called_back(self, on_puback: Callable[[], None]) -> None:
        """Run ``on_puback`` from paho's callback, where :meth:`publish` must not write."""
        self._in_callback = True
        try:
            on_puback()
        finally:
            self._in_callback = False


class _OnSet:
    """Looks like the asyncio.Event aiomqtt sets on PUBACK; calls back instead."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn

    def set(self) -> None:
        self._fn()

    def is_set(self) -> bool:
        return False


def reconnect_pause(delay: float, rng: random.Random) -> float:
    """The pause before the next connection attempt: uniform in [0, ``delay``].

    ``delay`` doubles with each failure in a row (:data:`BACKOFF_MIN_S` up to
    :data:`BACKOFF_MAX_S`). The draw ("full jitter") spreads a city's gateways that lost
    the broker together (a cluster restart, a power cut): without it they all retry at
    the same instants, and every attempt of a herd costs each node a TLS handshake, a
    bcrypt check and a session; with it they arrive at a rate the nodes can serve
    (cluster/SCALE.md, bench/city.py ``--storm``). The first retry of a failover stays
    within 100 ms.
    """
    return rng.uniform(0.0, delay)


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception that is not a group: the reason a connection ended.

    The publisher's own TaskGroup nests its failure one level deeper than the others'.
    """
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class _Stopped(Exception):
    """Raised inside the connection's TaskGroup to leave it on :meth:`Relay.stop`."""


Alert = Callable[[str, dict[str, Any]], None]
"""``alert(kind, detail)``: something the security office must hear of (an event)."""


class Relay:
    """Keeps a broker connection; drains the outbox; routes inbound commands.

    Stop it with :meth:`stop` rather than by cancelling alone: on Python 3.11,
    ``asyncio.wait_for`` (inside aiomqtt's connect) can swallow a cancellation that races
    with the connection's completion, and the task would carry on connected.
    """

    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        clock: Clock,
        *,
        client_id: str,
        subscriptions: Sequence[str],
        status_topic: str,
        on_message: Callable[[str, bytes], None],
        signer: Signer,
        gateway_id: str,
        alert: Alert | None = None,
        brokers: Sequence[BrokerSettings] = (),
        rng: random.Random | None = None,
    ) -> None:
        """``on_message(topic, payload)`` gets every inbound message on ``subscriptions``.

        ``signer`` seals the status (the outbox's messages are sealed when queued, see
        :attr:`gateway.journal.store.Store.seal`); ``alert(kind, detail)`` raises a security
        event (a forged status, a connection taken over). ``brokers``: further nodes of
        the same cluster, tried in order after ``settings`` when it is unreachable.
        ``rng``: draws the reconnect pauses (:func:`reconnect_pause`).
        """
        self._rng = rng or random.Random()
        self._store = store
        self._settings = settings
        self._brokers = [settings, *brokers]
        self._clock = clock
        self._client_id = client_id
        self._subs = list(subscriptions)
        self._status = status_topic
        self._on_message = on_message
        self._signer = signer
        self._gateway_id = gateway_id
        self._own_key = {signer.kid: signer.public_key()}
        self._alert = alert or (lambda kind, detail: None)
        self.instance = secrets.token_hex(8)  # this run; in every status it publishes
        self.started_at = clock.now()
        self.oversized = 0
        self._oversize_logged = -1e18
        self._oversize_since = 0
        self._forged_logged = -1e18
        self._forged_since = 0
        self._republished = -1e18
        self._leaving = False  # say_offline() was called: this run is stopping
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.node: BrokerSettings | None = None  # the broker (cluster node) last connected to
        self.published = 0
        self.connects = 0
        self.failures = 0
        self.connacks_missed = 0  # attempts whose CONNECT went out and no CONNACK came
        self._client: aiomqtt.Client | None = None
        self._session_present: Callable[[], bool] = lambda: False  # the last CONNACK's flag
        self._subscribed = False  # the broker's session holds this run's subscriptions
        # the working set: rows to publish, in flight, PUBACKed but not yet recorded
        self._queue: deque[OutboxRow] = deque()
        self._inflight: dict[int, OutboxRow] = {}
        self._acked: list[tuple[OutboxRow, float]] = []
        self._acked_ids: set[int] = set()
        self._backlog = True  # unsent rows may be in the outbox only: read it first
        self._cursor = 0  # highest outbox id taken into the working set on this connection
        self._live = False  # the publisher takes submitted rows in memory
        self._tg: asyncio.TaskGroup | None = None
        self._pub_client: aiomqtt.Client | None = None
        self._direct: _Direct | None = None
        self._sent_at: dict[int, float] = {}  # in flight: outbox id -> monotonic send time
        self._broken: str | None = None  # why the publisher must drop the connection
        self._marks = asyncio.Event()
        self.puback_s: deque[float] = deque(maxlen=1024)  # publish -> PUBACK, recent

    def wake(self) -> None:
        """New messages may be in the outbox."""
        self._wake.set()

    def reread(self) -> None:
        """Another process may have queued rows in the outbox: read it again."""
        self._backlog = True
        self._wake.set()

    def submit(self, rows: Sequence[OutboxRow]) -> None:
        """Committed outbox rows, in id order: publish them as soon as there is room."""
        if not rows:
            return
        # the next id after the cursor, or another process (campusguard report) queued
        # rows in between: then the publisher reads the outbox, in id order
        if self._live and not self._backlog and rows[0].id == self._cursor + 1:
            self._queue.extend(rows)
            self._cursor = rows[-1].id
            self._dispatch()  # published from this very callback: no hop through a task
        else:
            self._backlog = True  # the publisher reads them from the outbox
        self._wake.set()

    def stop(self) -> None:
        """Leave the connection and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, serve, reconnect, until :meth:`stop` (or cancelled)."""
        marker = asyncio.create_task(self._marker(), name="relay-marker")
        try:
            await self._connect_loop()
        finally:
            marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await marker
            self._flush_marks()

    async def _connect_loop(self) -> None:
        delay = BACKOFF_MIN_S
        node = 0
        down_since: float | None = None  # time.monotonic() of the first failure in a row
        logged_at = 0.0  # ... and of the last warning about it
        outage = 0  # failures in a row
        while not self._stopping.is_set():
            s = self._brokers[node]
            client = loop_watched(
                aiomqtt.Client(
                    s.host,
                    s.port,
                    username=s.username,
                    password=s.password,
                    identifier=self._client_id,
                    clean_session=False,
                    keepalive=keepalive_for(s, len(self._brokers)),
                    timeout=CLUSTER_TIMEOUT_S if len(self._brokers) > 1 else PUBLISH_TIMEOUT_S,
                    tls_context=s.tls_context(),
                    will=aiomqtt.Will(self._status, self._status_payload("offline"), 1, True),
                    max_inflight_messages=WINDOW,
                )
            )
            client._client.manual_ack_set(True)  # PUBACK once handled (:meth:`_inbound`)
            self._session_present = session_flag(client)
            entered = False
            try:
                async with client:
                    entered = True
                    self.connects += 1
                    self.node = s
                    delay = BACKOFF_MIN_S
                    if down_since is not None:
                        log.warning(
                            "broker %s:%d connected again after %d failures in %.0f s",
                            s.host,
                            s.port,
                            outage,
                            time.monotonic() - down_since,
                        )
                    else:
                        log.info("broker %s:%d connected", s.host, s.port)
                    down_since, outage = None, 0
                    try:
                        await self._serve(client)
                    finally:
                        self._disconnected()
            except* _Stopped:
                pass  # the loop ends: _stopping is set
            except* aiomqtt.MqttError as group:
                raise_if_cancelling(group)
                if not entered and connect_sent(client):
                    # This CONNECT may have reached the broker without its CONNACK reaching
                    # us: had the session this run subscribed been wiped before (a client
                    # with a clean session took the id over, a broker restarted without
                    # its store), the broker made a new, empty one then. The next CONNACK's
                    # "session present" may be that one: subscribe everything again. (A
                    # refused connection, a dead node's, sent nothing: the session stands.)
                    self._subscribed = False
                    self.connacks_missed += 1
                self.failures += 1
                outage += 1
                now = time.monotonic()
                # the first failure at once, then one line per window with the count: an
                # outage stays visible however long it lasts, without a line per retry
                if down_since is None or now - logged_at >= FAILURE_LOG_WINDOW_S:
                    first = down_since is None
                    if first:
                        down_since = now
                    log.warning(
                        "broker %s:%d unavailable (%s)%s; %d messages wait in the outbox",
                        s.host,
                        s.port,
                        _leaf(group),
                        ""
                        if first
                        else f" for {now - (down_since or now):.0f} s, {outage} failures",
                        self._store.pending_count(),
                    )
                    logged_at = now
                else:
                    log.debug("broker %s:%d unavailable (%s)", s.host, s.port, _leaf(group))
                if len(self._brokers) > 1:
                    node = (node + 1) % len(self._brokers)
            finally:
                retrieve_disconnect(client)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(reconnect_pause(delay, self._rng)):
                    await self._stopping.wait()
            delay = min(BACKOFF_MAX_S, delay * 2)

    async def say_offline(self) -> None:
        """At a clean stop: replace the retained status with ``offline`` (best effort).

        After a crash or power loss the broker publishes the will instead.
        """
        self._leaving = True  # the offline read back is ours: no "online" again
        client = self._client
        if client is None or not self.connected.is_set():
            return
        try:
            await client.publish(
                self._status, self._status_payload("offline"), qos=1, retain=True, timeout=1.0
            )
        except aiomqtt.MqttError as exc:
            log.info("could not publish offline status: %s", exc)

    async def _serve(self, client: aiomqtt.Client) -> None:
        # aiomqtt's subscribe/publish wait for their ack up to the timeout even when the
        # connection is gone; the message iterator is what notices a lost connection at
        # once, so it runs from the start and its MqttError cancels the rest
        self._client = client
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._inbound(client), name="relay-inbound")
            tg.create_task(self._publisher(client), name="relay-publisher")
            tg.create_task(self._status_loop(client), name="relay-status")
            # The body waits for the stop itself, never ending before the children: a child
            # that fails cancels this task to leave the group, and before Python 3.13
            # (gh-116720) the group takes that cancellation back only if it came while the
            # body ran. One that came while the group's exit waited stayed counted
            # (``cancelling()``), and on 3.11.2 the next asyncio.timeout, the reconnect
            # backoff, then ended the relay instead of expiring (fixed there in 3.11.3,
            # gh-102780): no reconnect after a broker restart, on the Pi's Python.
            await self._stopping.wait()
            raise _Stopped

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        """Re-sign and re-publish ``online`` every period.

        A client sees a dead gateway as stale even when someone replays an old retained
        ``online``: the signed time in it stops moving.
        """
        await self.connected.wait()
        while True:
            await self._clock.sleep(STATUS_PERIOD_S)
            await client.publish(self._status, self._status_payload("online"), qos=1, retain=True)
            raise_if_cancelling()

    def _disconnected(self) -> None:
        """The connection is gone: what was not PUBACKed is read from the outbox again."""
        self.connected.clear()
        self._live = False
        self._backlog = True
        self._cursor = 0
        self._queue.clear()
        self._inflight.clear()
        self._sent_at.clear()

    async def _publisher(self, client: aiomqtt.Client) -> None:
        if not (self._subscribed and self._session_present()):
            # A new session: nothing subscribed (or not by this run: its topics may differ).
            # The SUBSCRIBEs go on the wire now and the outbox right behind them, without
            # waiting for the SUBACKs (_up waits for them beside the outbox): the broker
            # takes one connection's packets in order, so the subscriptions exist before an
            # alarm published behind them reaches anyone, and the ack to it is delivered on
            # them. An ack published before (while the gateway was away) was kept by no
            # session: waiting for the SUBACKs would not bring it back either.
            self._subscribed = False
            # its own status too: see _own_status
            subacks = await send_subscriptions(client, [*self._subs, self._status])
        else:
            # The broker kept this run's session and its subscriptions (CONNACK's session
            # present): NATS restores them at CONNECT, and subscribing again would cost it
            # a consumer update and a retained lookup per filter while it delivers nothing.
            # Only its own status is subscribed again, for its retained copy: whoever took
            # this client id over meanwhile (a second gateway, a stolen account) received
            # what was published in that time, its own status among them (_own_status).
            subacks = await send_subscriptions(client, [self._status])
        try:
            await self._publish_outbox(client, subacks)
        finally:
            # the SUBACK wait was never started when the connection ended first (no
            # "coroutine was never awaited" at exit); else it has ended with _up's task
            subacks.close()

    async def _publish_outbox(
        self, client: aiomqtt.Client, subacks: Coroutine[Any, Any, None]
    ) -> None:
        raise_if_cancelling()
        self._flush_marks()  # so that the backlog does not include what is PUBACKed
        self._backlog, self._cursor, self._broken = True, 0, None
        try:
            self._direct = _Direct(client)
        except AttributeError:
            log.warning("aiomqtt internals not found: publishing through tasks (slower)")
            self._direct = None
        async with asyncio.TaskGroup() as tg:
            # the status goes out through aiomqtt while the outbox writes on the same socket
            # itself: loop_watched keeps the loop's writer watch in step with paho (a watch
            # paho had forgotten outlived the socket: what lost the retained status here
            # before, issue 14)
            tg.create_task(self._up(client, subacks), name="relay-up")
            self._tg, self._pub_client, self._live = tg, client, True
            try:
                while True:
                    raise_if_cancelling()
                    self._wake.clear()
                    if self._broken is not None:
                        raise aiomqtt.MqttError(self._broken)
                    if self._backlog and len(self._queue) < BACKLOG_PAGE:
                        if not self._read_backlog():
                            await asyncio.sleep(1.0)
                            continue
                    self._dispatch()
                    if self._backlog and not self._queue:
                        continue  # a page of rows already PUBACKed: read the next one
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    self._check_overdue()
            finally:
                self._tg, self._pub_client, self._live, self._direct = None, None, False, None

    async def _up(self, client: aiomqtt.Client, subacks: Awaitable[None]) -> None:
        """Every SUBACK in, then the status ``online``: connected (beside the outbox).

        aiomqtt's subscribe and publish wait in asyncio.wait_for, which on Python 3.11
        returns the result when a cancellation races with it and loses the cancellation:
        hence the checks after each (a gateway that did not stop, test_integrity.py).
        """
        await subacks
        raise_if_cancelling()
        self._subscribed = True
        await client.publish(self._status, self._status_payload("online"), qos=1, retain=True)
        raise_if_cancelling()
        self.connected.set()

    def _check_overdue(self) -> None:
        """A PUBACK missing too long: the connection is broken, drop it (next node).

        ``FAILOVER_PUBACK_S`` with several nodes, ``PUBLISH_TIMEOUT_S`` with one broker
        (where dropping the connection gains nothing but a reconnect).
        """
        if self._sent_at:
            oldest = next(iter(self._sent_at.values()))
            limit = FAILOVER_PUBACK_S if len(self._brokers) > 1 else PUBLISH_TIMEOUT_S
            if time.monotonic() - oldest > limit:
                self._broken = f"no PUBACK within {limit:.0f} s"
                self._wake.set()

    def _dispatch(self) -> None:
        """Start publishing queued rows, in order, while the window has room."""
        tg, client, direct = self._tg, self._pub_client, self._direct
        if tg is None or client is None or self._broken is not None:
            return
        while self._queue and len(self._inflight) < WINDOW:
            row = self._queue[0]
            if direct is not None:
                self._inflight[row.id] = row
                self._sent_at[row.id] = time.monotonic()
                if not direct.publish(row, functools.partial(self._on_puback, row)):
                    del self._inflight[row.id], self._sent_at[row.id]
                    self._broken = "the MQTT client refused a message (connection lost)"
                    self._wake.set()
                    return
            else:
                try:
                    tg.create_task(self._publish(client, row), name=f"publish-{row.id}")
                except RuntimeError:  # the connection is being torn down
                    return
                self._inflight[row.id] = row
                self._sent_at[row.id] = time.monotonic()
            self._queue.popleft()

    async def _publish(self, client: aiomqtt.Client, row: OutboxRow) -> None:
        """The fallback path: one task per message, through aiomqtt's public API."""
        await client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        self._on_puback(row)

    def _on_puback(self, row: OutboxRow) -> None:
        """The broker has ``row``: keep the time, make room, record it soon."""
        at = self._clock.now()
        sent = self._sent_at.pop(row.id, None)
        if sent is not None:
            self.puback_s.append(time.monotonic() - sent)
        self._inflight.pop(row.id, None)
        if row.id in self._acked_ids:
            return  # a late PUBACK of a message already published again
        self._acked.append((row, at))
        self._acked_ids.add(row.id)
        self.published += 1
        self._marks.set()
        if self._queue:
            self._dispatch()  # room for the next one
        if self._backlog:
            self._wake.set()

    def _read_backlog(self) -> bool:
        """Take the next page of unsent outbox rows after the cursor; False on an error."""
        try:
            rows = self._store.pending(BACKLOG_PAGE, after=self._cursor)
        except sqlite3.Error:
            log.exception("cannot read the outbox (retrying in 1 s)")
            return False
        if rows:
            self._cursor = rows[-1].id
            self._queue.extend(r for r in rows if r.id not in self._acked_ids)
        if len(rows) < BACKLOG_PAGE:
            self._backlog = False  # from here on, new rows come through submit()
        return True

    async def _marker(self) -> None:
        """Record PUBACKs in the outbox in batches (never on the alarm path)."""
        while True:
            await self._marks.wait()
            await asyncio.sleep(MARK_DELAY_S)
            self._marks.clear()
            if not self._flush_marks():
                await asyncio.sleep(1.0)
                self._marks.set()

    def _flush_marks(self) -> bool:
        """Write the PUBACKs gathered so far; False if the journal refused."""
        if not self._acked:
            return True
        batch, self._acked = self._acked, []
        try:
            self._store.mark_acked(batch)
        except sqlite3.Error:
            log.exception("cannot mark %d messages sent (retrying)", len(batch))
            self._acked[:0] = batch
            return False
        self._acked_ids.difference_update(r.id for r, _ in batch)
        return True

    async def _inbound(self, client: aiomqtt.Client) -> None:
        inner = client._client  # pinned aiomqtt 2.5
        async for message in client.messages:
            try:
                self._take(message)
            finally:  # handled, dropped or failed: it is not to come again
                if message.qos > 0:
                    inner.ack(message.mid, message.qos)

    def _take(self, message: aiomqtt.Message) -> None:
        """Hand one inbound message on (the gateway's own status is read here)."""
        payload = message.payload
        data = (
            payload
            if isinstance(payload, bytes)
            else str(payload).encode()
            if payload is not None
            else b""
        )
        topic = str(message.topic)
        if len(data) > MAX_PAYLOAD_BYTES:
            self._oversize(topic, len(data))
            return
        try:
            if topic == self._status:
                self._own_status(data, bool(message.retain))
            else:
                self._on_message(topic, data)
        except DuplicateGatewayError:
            raise
        except Exception:
            log.exception("handling %s failed", topic)

    def _oversize(self, topic: str, size: int) -> None:
        """Count a payload dropped unparsed; one warning per window."""
        self.oversized += 1
        self._oversize_since += 1
        now = time.monotonic()
        if now - self._oversize_logged >= OVERSIZE_LOG_WINDOW_S:
            log.warning(
                "dropped %d inbound payload(s) over %d bytes unparsed (last: %d bytes on %s);"
                " %d in all",
                self._oversize_since,
                MAX_PAYLOAD_BYTES,
                size,
                topic,
                self.oversized,
            )
            self._alert("oversized_payload", {"topic": topic, "bytes": size})
            self._oversize_logged, self._oversize_since = now, 0

    def _own_status(self, data: bytes, retained: bool) -> None:
        """Read the gateway's own status back, to see who else publishes as this gateway.

        MQTT 3.1.1 does not tell a client that its session was taken over. A status this
        run did not sign means someone else holds the topic (and perhaps the client id);
        a status signed by this gateway's key with another run's ``instance``, dated after
        this run started, means a second gateway with the same id and key is running:
        this one stops. The previous run's retained ``online`` (after a power cut) is
        dated before this run started, and is no reason to stop.
        """
        try:
            body = open_gateway(self._status, data, self._own_key)
        except EnvelopeError as exc:
            self._forged_status("cleared" if not data else exc.reason)
            return
        instance = body.get("instance")
        if instance == self.instance:
            if body.get("state") == "offline" and self.connected.is_set() and not self._leaving:
                # our own will, published late by a node we left (frozen, then resumed and
                # finding the session taken over by our connection to another node)
                log.info("own will read back while connected: publishing online again")
                self._republish_status()
            return  # our own, read back
        at = parse_iso(body.get("at"))
        if body.get("state") == "online" and at is not None and at >= self.started_at:
            detail = {"instance": instance, "ours": self.instance, "at": body.get("at")}
            self._alert("duplicate_gateway", detail)
            raise DuplicateGatewayError(
                f"another gateway runs as {self._gateway_id!r} with this gateway's key"
                f" (instance {instance}, status at {body.get('at')}): stopping this one"
            )
        log.info(
            "status of an earlier run of this gateway (%s, %s)%s",
            body.get("state"),
            body.get("at"),
            " retained" if retained else "",
        )

    def _forged_status(self, problem: str) -> None:
        """Someone else writes this gateway's status: say so, and put the real one back.

        Logged at ERROR at once and then at most once a minute; the event is rate-limited
        by the pipeline; the real status goes out again at most once a second.
        """
        now = time.monotonic()
        self._forged_since += 1
        if now - self._forged_logged >= FORGED_STATUS_LOG_WINDOW_S:
            log.error(
                "%d status message(s) on %s not signed by this gateway (%s): someone"
                " publishes as this gateway (its broker account); publishing the real status",
                self._forged_since,
                self._status,
                problem,
            )
            self._forged_logged, self._forged_since = now, 0
        self._alert("forged_status", {"topic": self._status, "problem": problem})
        if now - self._republished >= 1.0:
            self._republished = now
            self._republish_status()

    def _republish_status(self) -> None:
        client = self._client
        if client is None or not self.connected.is_set() or self._tg is None:
            return
        payload = self._status_payload("online")

        async def again() -> None:
            await client.publish(self._status, payload, qos=1, retain=True)

        coro = again()
        try:
            self._tg.create_task(coro, name="relay-status-again")
        except RuntimeError:  # the connection is being torn down
            coro.close()  # never started: no "never awaited" warning

    def _status_payload(self, state: str) -> str:
        now = self._clock.now()
        body = {
            "gateway": self._gateway_id,
            "state": state,
            "at": iso(now),
            "instance": self.instance,
            "started_at": iso(self.started_at),
            "period_s": STATUS_PERIOD_S,
        }
        return self._signer.seal(self._status, json.dumps(body, separators=(",", ":")))
