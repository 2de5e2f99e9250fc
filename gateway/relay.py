"""Outbox -> MQTT broker (QoS 1, in order), and inbound police/duty commands -> pipeline.

aiomqtt's reconnect loop: ``async with client`` inside a retry loop that catches
``aiomqtt.MqttError``, with capped backoff. While connected, the publisher sends the
outbox's unsent messages in order, a window at a time, and marks them sent when the
broker's PUBACKs are in; a message whose PUBACK never came is sent again after the next
connect (at least once: receivers de-duplicate on ``incident`` + ``update_no`` or
``event``). The session is persistent (``clean_session=False``, a fixed client id), so
police acknowledgements published while the gateway was away are delivered on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.incidents import iso
from gateway.store import Store

log = logging.getLogger(__name__)

WINDOW = 64  # messages in flight at once
PUBLISH_TIMEOUT_S = 10.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the broker is and how to authenticate."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    keepalive_s: int = 15

    @classmethod
    def from_url(cls, url: str, **extra: str | None) -> BrokerSettings:
        """``mqtt://host[:1883]`` or ``mqtts://[user:pass@]host[:8883]``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise GatewayError(f"--broker {url!r}: use mqtt://host:port or mqtts://host:port")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise GatewayError(f"--broker {url!r}: {exc}") from None
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=extra.get("ca_file"),
            client_cert=extra.get("client_cert"),
            client_key=extra.get("client_key"),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context, or None for plain TCP."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class _Stopped(Exception):
    """Raised inside the connection's TaskGroup to leave it on :meth:`Relay.stop`."""


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
    ) -> None:
        """``on_message(topic, payload)`` gets every inbound message on ``subscriptions``."""
        self._store = store
        self._settings = settings
        self._clock = clock
        self._client_id = client_id
        self._subs = list(subscriptions)
        self._status = status_topic
        self._on_message = on_message
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.published = 0
        self.connects = 0
        self.failures = 0
        self._client: aiomqtt.Client | None = None

    def wake(self) -> None:
        """New messages are in the outbox."""
        self._wake.set()

    def stop(self) -> None:
        """Leave the connection and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, serve, reconnect, for ever (until cancelled)."""
        delay = BACKOFF_MIN_S
        s = self._settings
        while not self._stopping.is_set():
            client = aiomqtt.Client(
                s.host,
                s.port,
                username=s.username,
                password=s.password,
                identifier=self._client_id,
                clean_session=False,
                keepalive=s.keepalive_s,
                timeout=PUBLISH_TIMEOUT_S,
                tls_context=s.tls_context(),
                will=aiomqtt.Will(self._status, self._status_payload("offline"), 1, True),
                max_inflight_messages=WINDOW,
            )
            try:
                async with client:
                    self.connects += 1
                    delay = BACKOFF_MIN_S
                    log.info("broker %s:%d connected", s.host, s.port)
                    try:
                        await self._serve(client)
                    finally:
                        self.connected.clear()
            except* _Stopped:
                pass  # the loop ends: _stopping is set
            except* aiomqtt.MqttError as group:
                self.failures += 1
                level = logging.WARNING if self.failures % 20 == 1 else logging.DEBUG
                log.log(
                    level,
                    "broker %s:%d unavailable (%s); %d messages wait in the outbox; retry in %.1fs",
                    s.host,
                    s.port,
                    group.exceptions[0],
                    self._store.pending_count(),
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(BACKOFF_MAX_S, delay * 2)

    async def say_offline(self) -> None:
        """At a clean stop: replace the retained status with ``offline`` (best effort).

        After a crash or power loss the broker publishes the will instead.
        """
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
            tg.create_task(self._until_stopped(), name="relay-stop")

    async def _until_stopped(self) -> None:
        await self._stopping.wait()
        raise _Stopped

    async def _publisher(self, client: aiomqtt.Client) -> None:
        for topic in self._subs:
            await client.subscribe(topic, qos=1)
        await client.publish(self._status, self._status_payload("online"), qos=1, retain=True)
        self.connected.set()
        while True:
            self._wake.clear()
            try:
                rows = self._store.pending(WINDOW)
            except sqlite3.Error:
                log.exception("cannot read the outbox")
                await asyncio.sleep(1.0)
                continue
            if not rows:
                await self._wake.wait()
                continue
            async with asyncio.TaskGroup() as tg:
                for r in rows:
                    tg.create_task(client.publish(r.topic, r.payload, qos=r.qos, retain=r.retain))
            try:
                self._store.mark_sent(rows, self._clock.now())
            except sqlite3.Error:
                log.exception("cannot mark %d messages sent (they will be sent again)", len(rows))
                await asyncio.sleep(1.0)
                continue
            self.published += len(rows)

    async def _inbound(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = (
                payload
                if isinstance(payload, bytes)
                else str(payload).encode()
                if payload is not None
                else b""
            )
            try:
                self._on_message(str(message.topic), data)
            except Exception:
                log.exception("handling %s failed", message.topic)

    def _status_payload(self, state: str) -> str:
        return json.dumps({"state": state, "at": iso(self._clock.now())})
