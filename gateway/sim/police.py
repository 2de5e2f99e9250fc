"""The police duty room as a program: every message the gateway publishes, with its receipt time.

    async with Police(broker_url) as police:
        await unit.press()
        alarm = await police.expect_alarm(unit, within=1.0)      # measured from the press
        await police.ack(alarm.payload["incident"], by="Officer Li")
        await police.expect_event("offline", unit=unit, within=5)

Receipt times are ``time.monotonic()`` in this process, so a harness that presses a
button in the same process measures press-to-police latency on one clock. An ``expect_*``
that is not met raises :class:`ExpectationFailed` (an ``AssertionError``: a test fails
with the message). With ``identifier`` the subscription is a persistent session
(``clean_session=False``): with a persistent broker nothing is lost across its restart.

Like a real duty room it keeps only what a gateway signed (``gateway-<id>.pub`` in
``keydir``; the rest is counted in ``dropped``) and signs its acks with
``dutyroom-<name>.pem`` from ``keydir``. ``clock`` dates the acks: a harness whose
gateway runs on an accelerated clock passes that clock, as the acks must not be dated
before the incidents they answer.

The demo, the HIL harness, the benches and the gateway and cluster tests all use this one
emulator; a test that plays an attacker publishes anything (:meth:`Police.publish`, as
another broker account with ``logins``) on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.broker import BrokerSettings
from gateway.core.cancelling import cancel_and_wait
from gateway.core.errors import EnvelopeError, ExpectationFailed
from gateway.relay.acks import make_ack
from gateway.relay.mqttsocket import NodeLoop, fixed_pause, retrieve_disconnect
from gateway.relay.socketloop import loop_watched
from gateway.security.envelope import Signer, open_gateway
from gateway.security.signkeys import dutyroom_kid, gateway_keys

log = logging.getLogger(__name__)


class Pressable(Protocol):
    """A unit as a harness knows it: its register id and when it was last pressed."""

    @property
    def id(self) -> str:
        """The unit's id in the register."""
        ...

    @property
    def pressed_at(self) -> float | None:
        """``time.monotonic()`` of the last press (None: never pressed)."""
        ...


UnitRef = str | Pressable


def _unit_id(unit: UnitRef | None) -> str | None:
    if unit is None or isinstance(unit, str):
        return unit
    return unit.id


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the duty room got it."""

    topic: str
    kind: str  # alarm | event | duty | gateway | other
    payload: Any
    at: float  # time.monotonic() at receipt
    wall: float  # time.time() at receipt

    def get(self, key: str, default: Any = None) -> Any:
        """A field of a JSON object payload (``default`` otherwise)."""
        return self.payload.get(key, default) if isinstance(self.payload, dict) else default

    def __getitem__(self, key: str) -> Any:
        """A field of the payload (``KeyError`` if it has none): ``alarm["incident"]``."""
        return self.payload[key]

    @property
    def unit(self) -> str | None:
        """The unit the message is about (alarms and unit events)."""
        value = self.get("unit")
        return str(value) if value is not None else None


def _kind(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) >= 3 and "gateway" in parts[1:3]:  # <p>/<site>/gateway/<id> or <p>/gateway/..
        return "gateway"
    if len(parts) >= 4 and parts[2] in ("alarm", "event"):
        return parts[2]
    if len(parts) >= 4 and parts[2] == "duty":
        return "duty" if len(parts) == 4 else "other"
    return "other"


class Police:
    """An MQTT subscriber on ``<prefix>/<site>/#``: what the police duty room receives."""

    def __init__(
        self,
        url: str | BrokerSettings | Sequence[BrokerSettings],
        *,
        keydir: str | os.PathLike[str],
        dutyroom: str = "police",
        prefix: str = "campusguard",
        site: str = "+",
        sites: Sequence[str] = (),
        identifier: str | None = None,
        by: str = "duty-room",
        clock: Callable[[], float] = time.time,
        time_scale: float | Callable[[], float] = 1.0,
        home_site: str | None = None,
        logins: Callable[[str], BrokerSettings] | None = None,
    ) -> None:
        """``identifier``: a persistent session (messages queued while away are delivered).

        ``sites``: several sites (a station's district), instead of ``site``.
        ``url``: one broker, or the nodes of one cluster in order: the subscriber moves to
        the next node when its node dies or stops answering (keepalive), and keeps its
        session there.
        ``time_scale``: every wait's timeout is multiplied by it (a test harness on a
        busy machine; tests/support/timing.py), or by what it returns when the wait begins.
        ``home_site``: where an ack goes for an incident this duty room never received
        (a test replaying or forging acks by name); otherwise the incident's own site.
        ``logins``: another broker account's settings by user name, for :meth:`publish`
        as that account (a harness playing a second desk or an intruder).
        """
        if isinstance(url, str):
            self.brokers = [BrokerSettings.from_url(url)]
        elif isinstance(url, BrokerSettings):
            self.brokers = [url]
        else:
            self.brokers = list(url)
        # a frozen node is noticed by the keepalive (a subscriber sends nothing else)
        self.link = NodeLoop(
            self.brokers,
            identifier=identifier,
            pause=fixed_pause(0.05),
            # keeps what it received: needs no retained messages again on a kept session
            resume=True,
            log_failure=lambda s, exc: log.debug(
                "police: broker %s:%d: %s; retrying", s.host, s.port, exc
            ),
        )
        self.keydir = Path(keydir)
        self.dutyroom = dutyroom_kid(dutyroom)
        self.prefix = prefix
        self.site = site
        self.sites = list(sites) or [site]
        self.identifier = identifier
        self.by = by
        self.clock = clock
        self.time_scale = time_scale
        self.home_site = home_site
        self.logins = logins
        self.messages: list[Received] = []
        self.dropped: list[tuple[str, str]] = []  # (topic, reason) of what did not verify
        self._trusted: dict[str, Ed25519PublicKey] = {}
        self._trust_read = -1e18
        self.subscribed = self.link.up  # set while subscribed
        self._changed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Received], None]] = []

    # ------------------------------------------------------------------ life cycle

    async def start(self, timeout: float = 5.0) -> None:
        """Connect and subscribe (retrying); return once subscribed (``timeout`` scaled)."""
        self._task = asyncio.create_task(self._run(), name="police")
        async with asyncio.timeout(timeout * self._scale()):
            await self.subscribed.wait()

    async def stop(self) -> None:
        """Disconnect."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def __aenter__(self) -> Police:
        """Start the subscriber."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop it (never swallows the exception)."""
        await self.stop()

    def listen(self, callback: Callable[[Received], None]) -> None:
        """Call ``callback`` with every message as it arrives (a live display)."""
        self._listeners.append(callback)

    async def _run(self) -> None:
        await self.link.run(lambda: [f"{self.prefix}/{site}/#" for site in self.sites], self._take)

    @property
    def settings(self) -> BrokerSettings:
        """The broker (cluster node) in use, or last tried."""
        return self.link.node or self.brokers[0]

    @property
    def node_changes(self) -> int:
        """Connections made to another node than the last one."""
        return self.link.node_changes

    @property
    def _client(self) -> aiomqtt.Client | None:
        return self.link.client

    def _take(self, topic: str, raw_payload: Any) -> None:
        at, wall = time.monotonic(), time.time()
        raw = raw_payload if isinstance(raw_payload, bytes) else str(raw_payload or "").encode()
        if "/ack/" in topic or topic.endswith("/ack") or not raw:
            return  # acks are the duty rooms' own; an empty payload clears a retained topic
        try:
            data: Any = open_gateway(topic, raw, self._trust(raw))
        except EnvelopeError as exc:
            self.dropped.append((topic, exc.reason))
            log.info("police: dropped a message on %s: %s", topic, exc)
            self._wake()  # a waiter may be counting what was dropped
            return
        msg = Received(topic, _kind(topic), data, at, wall)
        self.messages.append(msg)
        for cb in self._listeners:
            cb(msg)
        self._wake()

    def _trust(self, raw: bytes) -> dict[str, Ed25519PublicKey]:
        """The gateways' public keys; read again (at most once a second) for a new one."""
        now = time.monotonic()
        if now - self._trust_read >= 1.0 and not any(
            f'"kid":"{k}"'.encode() in raw[:200] for k in self._trusted
        ):
            self._trust_read = now
            self._trusted = gateway_keys(self.keydir)
        return self._trusted

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    # ------------------------------------------------------------------ what arrived

    def alarms(
        self,
        unit: UnitRef | None = None,
        *,
        incident: str | None = None,
        kind: str | None = None,
        update: str | None = None,
        since: float | None = None,
    ) -> list[Received]:
        """Alarm messages, filtered (``since``: received at or after that monotonic time)."""
        uid = _unit_id(unit)
        return [
            m
            for m in self.messages
            if m.kind == "alarm"
            and isinstance(m.payload, dict)
            and (uid is None or m.unit == uid)
            and (incident is None or m.get("incident") == incident)
            and (kind is None or m.get("kind") == kind)
            and (update is None or m.get("update") == update)
            and (since is None or m.at >= since)
        ]

    def incidents(self, unit: UnitRef | None = None) -> dict[str, dict[str, Any]]:
        """Every incident's latest state (highest ``update_no``), by incident id."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.alarms(unit):
            iid = str(m.get("incident"))
            if int(m.get("update_no", 0)) >= int(out.get(iid, {}).get("update_no", 0)):
                out[iid] = m.payload
        return out

    def events(
        self, kind: str | None = None, *, unit: UnitRef | None = None, since: float | None = None
    ) -> list[Received]:
        """Event messages (``<prefix>/<site>/event/<unit>``), filtered."""
        uid = _unit_id(unit)
        return [
            m
            for m in self.messages
            if m.kind == "event"
            and isinstance(m.payload, dict)
            and (kind is None or m.get("kind") == kind)
            and (uid is None or m.unit == uid)
            and (since is None or m.at >= since)
        ]

    def duty(
        self,
        kind: str | None = None,
        *,
        post: str | None = None,
        step: str | None = None,
        since: float | None = None,
    ) -> list[Received]:
        """Duty messages (``<prefix>/<site>/duty/<post>``), filtered (``step`` of the ladder)."""
        return [
            m
            for m in self.messages
            if m.kind == "duty"
            and isinstance(m.payload, dict)
            and (kind is None or m.get("kind") == kind)
            and (post is None or m.topic.rsplit("/", 1)[-1] == post)
            and (step is None or (m.get("detail") or {}).get("step") == step)
            and (since is None or m.at >= since)
        ]

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "awaited message"
    ) -> None:
        """Wait until ``predicate()`` holds (checked at every message, kept or dropped).

        ``timeout`` is multiplied by :attr:`time_scale`; :class:`ExpectationFailed` when it
        passes first.
        """
        await self._wait(predicate, timeout * self._scale(), what)

    def _scale(self) -> float:
        scale = self.time_scale
        return scale() if callable(scale) else scale

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                while not predicate():
                    if self._changed is None:
                        self._changed = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._changed)
        except TimeoutError:
            raise ExpectationFailed(f"police: no {what} within {timeout:.2f} s") from None

    async def _expect(
        self, find: Callable[[], list[Received]], within: float, since: float, what: str
    ) -> Received:
        # the patience is scaled; the time already spent since ``since`` is not
        limit = within * self._scale()
        remaining = since + limit - time.monotonic()
        try:
            await self._wait(lambda: bool(find()), remaining, what)
        except ExpectationFailed:
            late = find()
            if late:  # pragma: no cover - arrived between timeout and check
                raise ExpectationFailed(
                    f"police: {what} arrived {late[0].at - since:.3f} s after, "
                    f"not within {limit:.2f} s"
                ) from None
            raise ExpectationFailed(f"police: no {what} within {limit:.2f} s") from None
        first = find()[0]
        if first.at - since > limit:
            raise ExpectationFailed(
                f"police: {what} arrived {first.at - since:.3f} s after, not within {limit:.2f} s"
            )
        return first

    async def expect_alarm(
        self,
        unit: UnitRef,
        *,
        within: float = 1.0,
        kind: str | None = None,
        update: str | None = "new",
        since: float | None = None,
        incident: str | None = None,
    ) -> Received:
        """The first alarm of ``unit`` received since its last press (or ``since``).

        ``within`` is measured from that moment: from the press, for a unit the harness
        pressed. ``kind`` (panic, duress, ...) and ``update`` (new, presses, kind,
        cancelled, police_ack; None: any) narrow what counts.
        """
        start = self._since(unit, since)
        uid = _unit_id(unit)
        what = (
            f"alarm from {uid}"
            + (f" kind {kind}" if kind else "")
            + (f" update {update}" if update else "")
        )
        return await self._expect(
            lambda: self.alarms(unit, incident=incident, kind=kind, update=update, since=start),
            within,
            start,
            what,
        )

    async def expect_event(
        self,
        kind: str,
        *,
        unit: UnitRef | None = None,
        within: float = 5.0,
        since: float | None = None,
    ) -> Received:
        """The first event ``kind`` (of ``unit``) since ``since`` (default: now)."""
        start = time.monotonic() if since is None else since
        return await self._expect(
            lambda: self.events(kind, unit=unit, since=start),
            within,
            start,
            f"event {kind}" + (f" of {_unit_id(unit)}" if unit is not None else ""),
        )

    async def expect_duty(
        self,
        kind: str,
        *,
        post: str | None = None,
        step: str | None = None,
        within: float = 5.0,
        since: float | None = None,
    ) -> Received:
        """The first duty message ``kind`` (``escalation`` with ``step``) since ``since``."""
        start = time.monotonic() if since is None else since
        return await self._expect(
            lambda: self.duty(kind, post=post, step=step, since=start),
            within,
            start,
            f"duty {kind}" + (f" step {step}" if step else "") + (f" at {post}" if post else ""),
        )

    @staticmethod
    def _since(unit: UnitRef, since: float | None) -> float:
        if since is not None:
            return since
        if not isinstance(unit, str) and unit.pressed_at is not None:
            return unit.pressed_at
        return time.monotonic()

    # ------------------------------------------------------------------ answering

    async def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, user: str | None = None
    ) -> None:
        """Publish anything (an ack, a forgery, a replay), as this duty room or as ``user``.

        The broker binds client ids to user names: as this duty room's own account, publish
        on its connection when there is one (a second connection would take its session
        over); as ``user``, on a connection of that account (:attr:`logins`).
        """
        client = self._client
        if user is None or user == self.settings.username:
            s = self.settings
            if client is not None:
                await client.publish(topic, payload, qos=1, retain=retain)
                return
        elif self.logins is None:
            raise ValueError(f"police: no logins to publish as {user}")
        else:
            s = self.logins(user)
        one_off = loop_watched(
            aiomqtt.Client(
                s.host,
                s.port,
                username=s.username,
                password=s.password,
                tls_context=s.tls_context(),
            )
        )
        try:
            async with one_off:
                await one_off.publish(topic, payload, qos=1, retain=retain)
        finally:
            retrieve_disconnect(one_off)  # taken over (its id is a user name): no stray log

    async def ack(
        self,
        incident: str,
        *,
        by: str | None = None,
        disposition: str = "genuine",
        site: str | None = None,
        at: float | None = None,
    ) -> str:
        """Acknowledge an incident (``<prefix>/<site>/ack/<incident>``), signed.

        ``at``: the ack's date (default: :attr:`clock`). Returns the payload sent (a test
        replays it).
        """
        site = site or self._site_of(incident)
        topic, payload = make_ack(
            self._signer(),
            self.prefix,
            site,
            incident=incident,
            by=by or self.by,
            disposition=disposition,
            at=self.clock() if at is None else at,
        )
        await self.publish(topic, payload)
        return payload

    async def ack_duty(self, post: str, *, by: str | None = None, site: str | None = None) -> str:
        """Acknowledge a guard post's duty call (``<prefix>/<site>/duty/<post>/ack``), signed.

        Returns the payload sent.
        """
        site = site or self._site_of_post(post)
        topic, payload = make_ack(
            self._signer(), self.prefix, site, post=post, by=by or self.by, at=self.clock()
        )
        await self.publish(topic, payload)
        return payload

    def _signer(self) -> Signer:
        return Signer.load(self.keydir, self.dutyroom)

    def _site_of(self, incident: str) -> str:
        for m in self.alarms(incident=incident):
            if m.get("site"):
                return str(m.get("site"))
        if self.home_site is not None:
            return self.home_site
        if self.site != "+":
            return self.site
        raise ValueError(f"unknown site of incident {incident}: pass site=")

    def _site_of_post(self, post: str) -> str:
        for m in self.duty(post=post):
            return m.topic.split("/")[1]
        if self.home_site is not None:
            return self.home_site
        if self.site != "+":
            return self.site
        raise ValueError(f"unknown site of post {post}: pass site=")
