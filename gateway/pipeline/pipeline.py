"""Authentic frames -> journal, incidents, events, outbox; then ACKs and watchers.

For each batch of frames from one read of a link, in ONE transaction: every fresh frame
is journalled, incidents are opened or updated, events and publications are queued in the
outbox, and each unit's replay window is stored once. The commit hands the new outbox
rows to the relay in memory (:attr:`gateway.journal.store.Store.on_commit`), which publishes them
at once, and the watchers are told. The frames are ACKed (state 1, 2 once the police have
the incident, or 3 for a recorded cancel) only once the commit is on disk
(:meth:`gateway.journal.store.Store.when_durable`): the fsync runs in a worker thread while the
loop reads the broker's PUBACK. If the commit fails, nothing is ACKed and the replay
window and the incident book are rolled back, so the unit's retransmission is taken
again as fresh. The pipeline is also the :class:`gateway.pipeline.ports.Outlet` of the watchers.

Security rejects (a bad MAC, a replayed counter, a frame from an address without a key)
become a ``forgery`` event per claimed unit address, at most one every
``SECURITY_EVENT_INTERVAL_S`` with the counts since the last one, so a security office sees
an attack without an event storm. Only a fresh frame moves a unit's downlink route, and
duplicates are re-ACKed at a limited rate (:meth:`Pipeline._may_reack`).

Acks from the broker are verified before anything acts on them (:mod:`gateway.relay.acks`:
a duty room's signature for this site, topic and incident or post, a nonce never seen,
not dated before the incident); one that fails changes nothing and is counted in a
rate-limited ``forgery`` event per site (``channel: mqtt``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.core.clock import Clock
from gateway.core.config import Config, Unit
from gateway.core.contact_id import code_of
from gateway.core.errors import AckRejected
from gateway.core.timefmt import iso
from gateway.journal.store import Store
from gateway.link.downlink import Downlink
from gateway.link.receiver import Received
from gateway.pipeline.incidents import IncidentBook
from gateway.pipeline.ports import JournalledEvent, Watcher
from gateway.relay.acks import ACK_CLOCK_SKEW_S, AckVerifier, SignedAck, body_json
from protocol import (
    AckState,
    Alarm,
    Cancel,
    Checkin,
    Frame,
    Heartbeat,
    Reason,
    ReplayGuard,
    Signal,
    SignalPattern,
    Verdict,
)

log = logging.getLogger(__name__)

CID_LINK = code_of("link_down")
CID_FORGERY = code_of("forgery")
SECURITY_EVENT_INTERVAL_S = 300.0
SECURITY_REASONS = (Reason.FORGED, Reason.REPLAYED, Reason.UNKNOWN_UNIT)
# police ACK (state 2) is sent at once and repeated after these delays (a frame can be lost)
POLICE_ACK_REPEATS_S = (1.0, 3.0)
# duplicates (retransmissions, replays) are re-ACKed at most this often per counter ...
REACK_MIN_INTERVAL_S = 0.5
# ... and this many times per second per unit
REACK_PER_UNIT = 4
REACK_MEMORY = 4096  # counters remembered for the per-counter limit


@dataclass(slots=True)
class _Tally:
    """Security rejects of one claimed unit address since its last ``forgery`` event."""

    last_event: float = -1e18
    first_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    links: set[str] = field(default_factory=set)
    addrs: set[int] = field(default_factory=set)
    kids: set[str] = field(default_factory=set)


_BODY_FIELDS: dict[type, tuple[str, ...]] = {}


def rekey_hint(unit_id: str) -> str:
    """What a bad MAC from a registered unit may mean besides forgery, and what to do."""
    return f"if this unit was re-keyed, deploy it again (campusguard deploy {unit_id})"


def body_dict(frame: Frame) -> dict[str, int]:
    """A frame's body fields as plain integers (for the journal)."""
    body = frame.body
    names = _BODY_FIELDS.get(type(body))
    if names is None:
        names = _BODY_FIELDS[type(body)] = tuple(f.name for f in fields(body))  # type: ignore[arg-type]
    return {n: int(getattr(body, n)) for n in names}


class Pipeline:
    """The events layer: journal + incidents + outbox, ACK after commit, fan-out to watchers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        guard: ReplayGuard,
        downlink: Downlink,
        clock: Clock,
        *,
        prefix: str,
        wake_relay: Callable[[], None] = lambda: None,
        acks: AckVerifier | None = None,
    ) -> None:
        """``wake_relay`` is called after each commit that queued messages.

        ``acks`` checks duty-room acknowledgements (None: no duty room may acknowledge).
        """
        self._config = config
        self._store = store
        self._guard = guard
        self._downlink = downlink
        self._clock = clock
        self._prefix = prefix
        self._wake = wake_relay
        self._units = {u.addr: u for u in config.units.values()}
        self.watchers: list[Watcher] = []
        # called with each event inside the transaction that journals it (SMS to queue)
        self.event_hooks: list[Callable[[JournalledEvent], None]] = []
        self.incidents = IncidentBook(store, config, prefix=prefix, event=self.event)
        self._timers: set[asyncio.TimerHandle] = set()
        # claimed unit address (None: any unregistered one) -> last event time, counts since
        self._security: dict[int | None, _Tally] = {}
        self._mqtt_security: dict[str, _Tally] = {}  # rejected MQTT messages, per site
        self.mqtt_rejects: Counter[str] = Counter()  # ... by reason, since the start
        self._reacked: OrderedDict[tuple[int, int, int], float] = OrderedDict()
        self._reack_unit: dict[int, tuple[float, int]] = {}
        self.reacks_suppressed = 0
        self.acks = acks
        self.batch_s: deque[float] = deque(maxlen=4096)  # frames in -> ACKs out, recent
        self.journalled = 0
        self.retries: Counter[str] = Counter()  # retransmissions seen, by unit id
        self.commit_failures = 0
        self.last_commit_ok = True

    # -- frames (from the receiver) -----------------------------------------------------

    def on_frames(self, link: str, items: Sequence[Received]) -> None:
        """Journal a batch (one commit), then ACK it and tell the watchers."""
        t0 = time.perf_counter()
        at = self._clock.now()
        acks: list[tuple[int, int, int, AckState]] = []
        fresh: list[tuple[Unit, Frame]] = []
        touched: dict[int, list[tuple[int, int, int]]] = {}
        try:
            with self._store.transaction():
                for it in items:
                    f = it.frame
                    unit = self._units.get(f.unit)
                    if unit is None:  # a key without a register entry: cannot happen via codec
                        continue
                    if it.verdict is Verdict.FRESH:
                        # only a fresh frame moves the route: a replay recorded on another
                        # line must not pull the unit's ACKs there
                        self._downlink.heard(f.unit, link)
                        if f.unit not in touched:
                            touched[f.unit] = self._guard.state(f.unit)
                        state = self._fresh(unit, f, at, link)
                        self._guard.record(f.unit, f.epoch, f.seq)
                        fresh.append((unit, f))
                    else:
                        self.retries[unit.id] += 1
                        if not self._may_reack(f.unit, f.epoch, f.seq, at):
                            self.reacks_suppressed += 1
                            continue
                        state = self._duplicate_state(f)
                    acks.append((f.unit, f.epoch, f.seq, state))
                for addr in touched:
                    self._store.replay_save(addr, self._guard.state(addr))
                self.incidents.flush_board(at)
        except sqlite3.Error:
            self.commit_failures += 1
            self.last_commit_ok = False
            for addr, before in touched.items():
                self._guard.load(addr, before)
            try:
                self.incidents.reload()
            except sqlite3.Error:
                log.exception("cannot reload the incident book")
            log.exception(
                "journal commit failed: %d frames not ACKed (units will retry)", len(items)
            )
            return
        self.last_commit_ok = True
        self.journalled += len(fresh)
        self.incidents.log_opened()
        # duplicates too: their first copy's commit may still be on its way to the disk
        self._store.when_durable(functools.partial(self._ack, acks, t0))
        if fresh:
            self._wake()
        for unit, f in fresh:
            for w in self.watchers:
                try:
                    w.on_frame(unit, f, at)
                except Exception:
                    log.exception("watcher %s failed on a frame", type(w).__name__)

    def _may_reack(self, addr: int, epoch: int, seq: int, at: float) -> bool:
        """May a duplicate of (epoch, seq) be ACKed again now? Counts it if so.

        A unit repeats a frame whose ACK it missed (first after ~200 ms, then backing
        off), so a genuine retransmission is ACKed; a flood of replays is not answered
        frame for frame on a half-duplex bus: per counter at most one re-ACK per
        ``REACK_MIN_INTERVAL_S``, per unit at most ``REACK_PER_UNIT`` per second.
        """
        key = (addr, epoch, seq)
        last = self._reacked.get(key)
        if last is not None and at - last < REACK_MIN_INTERVAL_S:
            return False
        start, count = self._reack_unit.get(addr, (at, 0))
        if at - start >= 1.0:
            start, count = at, 0
        if count >= REACK_PER_UNIT:
            return False
        self._reack_unit[addr] = (start, count + 1)
        self._reacked[key] = at
        self._reacked.move_to_end(key)
        while len(self._reacked) > REACK_MEMORY:
            self._reacked.popitem(last=False)
        return True

    def _ack(self, acks: Sequence[tuple[int, int, int, AckState]], t0: float) -> None:
        for addr, epoch, seq, state in acks:
            self._downlink.ack(addr, epoch, seq, state)
        self.batch_s.append(time.perf_counter() - t0)

    def _fresh(self, unit: Unit, f: Frame, at: float, link: str) -> AckState:
        body = f.body
        incident: str | None = None
        state = AckState.RECEIVED
        if isinstance(body, Alarm):
            incident = self.incidents.on_alarm(unit, f, body, at, link)
            state = self.incidents.unit_ack_state(incident)
        elif isinstance(body, Checkin) and body.duress:
            incident = self.incidents.on_duress_checkin(unit, f, at, link)
        elif isinstance(body, Cancel):
            incident = self.incidents.on_cancel(unit, f, body, at)
            if incident is not None:
                state = AckState.CANCELLED
        elif isinstance(body, Heartbeat):
            self._store.boot_set(f.unit, f.epoch, at - body.uptime_s)
        self._store.journal_frame(
            at=at,
            link=link,
            unit=unit.id,
            addr=f.unit,
            epoch=f.epoch,
            seq=f.seq,
            type_name=f.type.name,
            body=body_dict(f),
            incident=incident,
        )
        return state

    def _duplicate_state(self, f: Frame) -> AckState:
        """The state a retransmission is ACKed with: what the unit should show now."""
        if isinstance(f.body, Cancel):
            if self._store.frame_incident(f.unit, f.epoch, f.seq) is not None:
                return AckState.CANCELLED
        elif isinstance(f.body, Alarm):
            iid = self._store.frame_incident(f.unit, f.epoch, f.seq)
            return self.incidents.unit_ack_state(iid)
        return AckState.RECEIVED

    # -- security rejects (from the receiver) ---------------------------------------------

    def on_security_reject(self, link: str, reason: Reason, addr: int | None) -> None:
        """A forged, replayed or unkeyed frame claiming ``addr``: a rate-limited event."""
        if reason not in SECURITY_REASONS:
            return
        now = self._clock.now()
        unit = self._units.get(addr) if addr is not None else None
        key = unit.addr if unit is not None else None  # unregistered addresses: one tally
        tally = self._security.setdefault(key, _Tally())
        if not tally.counts:
            tally.first_at = now
        tally.counts[reason.value] += 1
        tally.links.add(link)
        if addr is not None and unit is None and len(tally.addrs) < 16:
            tally.addrs.add(addr)
        if now - tally.last_event >= SECURITY_EVENT_INTERVAL_S:
            self._security_event(key, tally, now)

    def _security_event(self, key: int | None, tally: _Tally, now: float) -> None:
        unit = self._units.get(key) if key is not None else None
        detail: dict[str, Any] = dict(tally.counts)
        detail["links"] = sorted(tally.links)
        if unit is not None:
            detail["addr"] = unit.addr
            detail["place"] = unit.place
            if tally.counts[Reason.FORGED.value]:
                # a bad MAC from a registered unit is also what a unit still carrying its
                # old key looks like after `campusguard keygen --force`
                detail["hint"] = rekey_hint(unit.id)
        else:
            detail["addrs"] = sorted(tally.addrs)
        detail["since"] = iso(tally.first_at) if tally.first_at is not None else None
        detail["window_s"] = SECURITY_EVENT_INTERVAL_S
        self._security[key] = _Tally(last_event=now)
        log.warning(
            "security: frames rejected for %s: %s",
            unit.id if unit is not None else "unregistered addresses",
            detail,
        )
        try:
            self.event(
                site=unit.site if unit is not None else self._config.site,
                kind="forgery",
                code=CID_FORGERY,
                at=now,
                unit=unit.id if unit is not None else None,
                detail=detail,
            )
        except sqlite3.Error:
            log.exception("cannot journal the forgery event")

    # -- links --------------------------------------------------------------------------

    def on_link(self, link: str, up: bool) -> None:
        """A link went down or came back: an event for the police, and the watchers."""
        at = self._clock.now()
        try:
            self.event(
                site=self._config.site,
                kind="link_up" if up else "link_down",
                at=at,
                code=CID_LINK,
                qualifier=3 if up else 1,
                detail={"link": link},
            )
        except sqlite3.Error:
            log.exception("cannot journal link %s %s", link, "up" if up else "down")
        for w in self.watchers:
            try:
                w.on_link(link, up, at)
            except Exception:
                log.exception("watcher %s failed on a link change", type(w).__name__)

    # -- inbound MQTT (from the relay) --------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        """A police acknowledgement or a duty acknowledgement arrived (verified here)."""
        at = self._clock.now()
        parts = topic.split("/")
        pre = self._prefix.split("/")
        rest = parts[len(pre) :] if parts[: len(pre)] == pre else []
        if len(rest) == 3 and rest[1] == "ack":
            self.police_ack(topic, rest[0], rest[2], payload, at)
        elif len(rest) == 4 and rest[1] == "duty" and rest[3] == "ack":
            self.duty_ack(topic, rest[0], rest[2], payload, at)
        elif len(rest) == 4 and rest[1] == "patrol" and rest[3] == "ack":
            self.duty_ack(topic, rest[0], rest[2], payload, at, kind="patrol_ack")
        else:
            log.info("ignoring message on %s", topic)

    def _verified(
        self, topic: str, payload: bytes, kind: str, site: str, subject: str
    ) -> SignedAck | None:
        """The ack if authentic and fresh; otherwise a (rate-limited) forgery event."""
        if self.acks is None:
            self.on_bad_ack(site, topic, AckRejected("no_keys", "no duty-room key installed"))
            return None
        try:
            return self.acks.verify(topic, payload, kind=kind, site=site, subject=subject)
        except AckRejected as exc:
            self.on_bad_ack(site, topic, exc)
            return None

    def police_ack(self, topic: str, site: str, incident: str, payload: bytes, at: float) -> None:
        """Record a verified police acknowledgement and tell the unit (ACK state 2, repeated).

        Anything that does not verify changes nothing: no ACK state at the unit, no
        close; it is counted in a ``forgery`` event.
        """
        ack = self._verified(topic, payload, "police_ack", site, incident)
        if ack is None or self.acks is None:
            return
        published = self.incidents.published(incident)
        if published is None:
            log.warning("police ack for unknown incident %s (by %s)", incident, ack.by)
            return
        inc_site, first_at = published
        if inc_site != site:
            self.on_bad_ack(
                site, topic, AckRejected("mismatch", f"{incident} is not at {site}", ack.kid)
            )
            return
        if ack.at < first_at - ACK_CLOCK_SKEW_S:
            self.on_bad_ack(
                site,
                topic,
                AckRejected("predated", f"signed {iso(ack.at)}, incident {iso(first_at)}", ack.kid),
            )
            return
        by, disposition = ack.by, ack.disposition
        first = self.incidents.police_ack_of(incident)
        try:
            with self._store.transaction():
                self.acks.record(ack, at)
                target, news = self.incidents.on_police_ack(incident, by, disposition, at)
                self.incidents.flush_board(at)
        except sqlite3.Error:
            log.exception("cannot journal police ack of %s", incident)
            return
        if first is not None and first[1] != disposition:
            self._ack_conflict(site, incident, first, by, disposition, ack.kid, at)
        if news:
            log.warning(
                "incident %s: police acknowledged (by %s, %s, key %s)",
                incident,
                by,
                disposition,
                ack.kid,
            )
            self._wake()
        if target is None:
            return
        self._store.when_durable(
            functools.partial(self._police_ack_out, target.addr, target.epoch, target.seq)
        )

    def _ack_conflict(
        self,
        site: str,
        incident: str,
        first: tuple[str | None, str | None],
        by: str | None,
        disposition: str | None,
        kid: str,
        at: float,
    ) -> None:
        """Two stations acknowledged one incident differently: the first stands.

        Every station hears of the second as an ``ack_conflict`` event.
        """
        log.warning(
            "incident %s: acknowledged as %s by %s, then as %s by %s (key %s): the first stands",
            incident,
            first[1],
            first[0],
            disposition,
            by,
            kid,
        )
        detail = {
            "incident": incident,
            "first": {"by": first[0], "disposition": first[1]},
            "second": {"by": by, "disposition": disposition, "kid": kid},
        }
        try:
            self.event(site=site, kind="ack_conflict", at=at, detail=detail)
        except sqlite3.Error:
            log.exception("cannot journal the ack conflict of %s", incident)

    def duty_ack(
        self, topic: str, site: str, post: str, payload: bytes, at: float, kind: str = "duty_ack"
    ) -> None:
        """A verified duty ack goes to the watchers (the duty watch acts on it).

        With ``kind="patrol_ack"`` it is a patrol ack and ``post`` the route.
        """
        ack = self._verified(topic, payload, kind, site, post)
        if ack is None or self.acks is None:
            return
        try:
            with self._store.transaction():
                self.acks.record(ack, at)
        except sqlite3.Error:
            log.exception("cannot journal duty ack of %s", post)
            return
        body = body_json(ack)
        for w in self.watchers:
            try:
                w.on_command(topic, body, at)
            except Exception:
                log.exception("watcher %s failed on %s", type(w).__name__, topic)

    def on_bad_ack(self, site: str, topic: str, exc: AckRejected) -> None:
        """An MQTT message nobody may act on: counted; a ``forgery`` event per site, limited."""
        now = self._clock.now()
        tally = self._mqtt_security.setdefault(site, _Tally())
        if not tally.counts:
            tally.first_at = now
        tally.counts[exc.reason] += 1
        self.mqtt_rejects[exc.reason] += 1
        if len(tally.links) < 16:
            tally.links.add(topic)
        if exc.kid is not None and len(tally.kids) < 16:
            tally.kids.add(exc.kid)
        log.info("rejected message on %s: %s", topic, exc)
        if now - tally.last_event >= SECURITY_EVENT_INTERVAL_S:
            self._mqtt_event(site, tally, now)

    def on_alert(self, kind: str, detail: Mapping[str, Any]) -> None:
        """A security alert from the relay (forged status, a second gateway, oversized)."""
        if kind in ("oversized_payload", "forged_status"):  # counted, one event per window
            reason = "oversized" if kind == "oversized_payload" else "forged_status"
            self.on_bad_ack(self._config.site, str(detail.get("topic")), AckRejected(reason))
            return
        try:
            self.event(
                site=self._config.site,
                kind="forgery",
                code=CID_FORGERY,
                at=self._clock.now(),
                detail={**detail, "channel": "mqtt", "reason": kind},
            )
        except sqlite3.Error:
            log.exception("cannot journal the %s event", kind)

    def _mqtt_event(self, site: str, tally: _Tally, now: float) -> None:
        detail: dict[str, Any] = {"channel": "mqtt", **tally.counts}
        detail["topics"] = sorted(tally.links)
        detail["kids"] = sorted(tally.kids)
        detail["since"] = iso(tally.first_at) if tally.first_at is not None else None
        detail["window_s"] = SECURITY_EVENT_INTERVAL_S
        self._mqtt_security[site] = _Tally(last_event=now)
        log.warning("security: MQTT messages rejected for site %s: %s", site, detail)
        try:
            self.event(site=site, kind="forgery", code=CID_FORGERY, at=now, detail=detail)
        except sqlite3.Error:
            log.exception("cannot journal the forgery event")

    def _police_ack_out(self, addr: int, epoch: int, seq: int) -> None:
        self._downlink.ack(addr, epoch, seq, AckState.POLICE_ACK)
        loop = asyncio.get_running_loop()
        for delay in POLICE_ACK_REPEATS_S:
            handle = loop.call_later(delay, self._repeat_ack, addr, epoch, seq)
            self._timers.add(handle)

    def _repeat_ack(self, addr: int, epoch: int, seq: int) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {h for h in self._timers if h.when() > now}
        self._downlink.ack(addr, epoch, seq, AckState.POLICE_ACK)

    # -- time ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Called 5x per real second: coalesced updates, then the watchers' deadlines."""
        now = self._clock.now()
        try:
            if self.incidents.tick(now):
                self._wake()
        except sqlite3.Error:
            log.exception("cannot journal coalesced press updates")
            self.incidents.reload()
        for key, tally in list(self._security.items()):
            if tally.counts and now - tally.last_event >= SECURITY_EVENT_INTERVAL_S:
                self._security_event(key, tally, now)
        for site, tally in list(self._mqtt_security.items()):
            if tally.counts and now - tally.last_event >= SECURITY_EVENT_INTERVAL_S:
                self._mqtt_event(site, tally, now)
        for w in self.watchers:
            try:
                w.tick(now)
            except Exception:
                log.exception("watcher %s failed on tick", type(w).__name__)

    def close(self) -> None:
        """Cancel pending repeats."""
        for h in self._timers:
            h.cancel()
        self._timers.clear()

    # -- Outlet -------------------------------------------------------------------------

    def event(
        self,
        *,
        site: str,
        kind: str,
        at: float,
        unit: str | None = None,
        post: str | None = None,
        code: int | None = None,
        qualifier: int | None = None,
        detail: Mapping[str, Any] | None = None,
        topic: str = "event",
        route: str | None = None,
    ) -> None:
        """Journal an event and queue it for the police; committed before this returns."""
        if topic not in ("event", "duty", "patrol"):
            raise ValueError(f"topic must be 'event', 'duty' or 'patrol', not {topic!r}")
        if topic == "patrol" and not route:
            raise ValueError("a patrol event names its route")
        detail_text = json.dumps(dict(detail or {}), separators=(",", ":"), default=str)
        with self._store.transaction():
            eid = self._store.add_event(
                at=at,
                site=site,
                kind=kind,
                unit=unit,
                post=post,
                code=code,
                qualifier=qualifier,
                detail=detail_text,
                route=route,
            )
            if topic == "patrol":
                leaf = f"patrol/{route}"
            elif topic == "duty":
                leaf = f"duty/{post or unit or self._config.gateway_id}"
            else:
                leaf = f"event/{unit or self._config.gateway_id}"
            payload = {
                "event": f"{self._config.gateway_id}-{eid}",  # unique across gateways
                "gateway": self._config.gateway_id,
                "site": site,
                "unit": unit,
                "post": post,
                **({"route": route} if route is not None else {}),
                "kind": kind,
                "code": code,
                "qualifier": qualifier,
                "at": iso(at),
                "detail": json.loads(detail_text),
            }
            self._store.enqueue(
                at=at,
                topic=f"{self._prefix}/{site}/{leaf}",
                payload=json.dumps(payload, separators=(",", ":")),
            )
            if self.event_hooks:
                note = JournalledEvent(
                    payload["event"],
                    site,
                    kind,
                    at,
                    unit,
                    post,
                    qualifier,
                    payload["detail"],
                    route,
                )
                for hook in self.event_hooks:
                    try:  # e.g. an SMS to queue: never at the cost of the event itself
                        hook(note)
                    except Exception:
                        log.exception("event hook failed on %s %s", kind, note.event)
        if not self._store.in_transaction:
            self._wake()

    def retain(self, *, site: str, topic: str, payload: Mapping[str, Any], at: float) -> None:
        """Queue a retained state message (``unit/<id>/state``, ``post/<id>/state``).

        The body names the gateway, as every publication does: clients check that the
        key that signed it is that gateway's.
        """
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] not in ("unit", "post", "patrol") or parts[2] != "state":
            raise ValueError(f"topic must be unit/, post/ or patrol/<id>/state, not {topic!r}")
        with self._store.transaction():
            self._store.enqueue(
                at=at,
                topic=f"{self._prefix}/{site}/{topic}",
                payload=json.dumps(
                    {"gateway": self._config.gateway_id, **payload},
                    separators=(",", ":"),
                    default=str,
                ),
                retain=True,
            )
        if not self._store.in_transaction:
            self._wake()

    def signal(self, unit: str, pattern: SignalPattern, duration_s: int) -> None:
        """Send a SIGNAL frame (best effort)."""
        u = self._config.units.get(unit)
        if u is None:
            log.error("signal to unknown unit %s", unit)
            return
        self._downlink.send(u.addr, Signal(pattern=pattern, duration_s=duration_s))
