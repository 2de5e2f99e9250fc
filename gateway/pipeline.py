"""Authentic frames -> journal, incidents, events, outbox; then ACKs and watchers.

For each batch of frames from one read of a link, in ONE transaction: every fresh frame
is journalled with its replay window, incidents are opened or updated, events and
publications are queued in the outbox. Only after the commit are the frames ACKed (state 1,
or 3 for a recorded cancel), the watchers told and the relay woken. If the commit fails,
nothing is ACKed and the replay window is rolled back, so the unit's retransmission is
taken again as fresh. The pipeline is also the :class:`gateway.ports.Outlet` of the
watchers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from gateway.clock import Clock
from gateway.config import Config, Unit
from gateway.downlink import Downlink
from gateway.incidents import IncidentBook, iso
from gateway.ports import Watcher
from gateway.receiver import Received
from gateway.store import Store
from protocol import (
    AckState,
    Alarm,
    Cancel,
    Checkin,
    Frame,
    Heartbeat,
    ReplayGuard,
    Signal,
    SignalPattern,
    Verdict,
)

log = logging.getLogger(__name__)

CID_LINK = 350
# police ACK (state 2) is sent at once and repeated after these delays (a frame can be lost)
POLICE_ACK_REPEATS_S = (1.0, 3.0)


def body_dict(frame: Frame) -> dict[str, int]:
    """A frame's body fields as plain integers (for the journal)."""
    return {f.name: int(getattr(frame.body, f.name)) for f in fields(frame.body)}  # type: ignore[arg-type]


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
    ) -> None:
        """``wake_relay`` is called after each commit that queued messages."""
        self._config = config
        self._store = store
        self._guard = guard
        self._downlink = downlink
        self._clock = clock
        self._prefix = prefix
        self._wake = wake_relay
        self._units = {u.addr: u for u in config.units.values()}
        self.watchers: list[Watcher] = []
        self.incidents = IncidentBook(store, config, prefix=prefix, event=self.event)
        self._timers: set[asyncio.TimerHandle] = set()
        self.journalled = 0
        self.commit_failures = 0
        self.last_commit_ok = True

    # -- frames (from the receiver) -----------------------------------------------------

    def on_frames(self, link: str, items: Sequence[Received]) -> None:
        """Journal a batch, then ACK it and tell the watchers."""
        at = self._clock.now()
        acks: list[tuple[int, int, int, AckState]] = []
        fresh: list[tuple[Unit, Frame]] = []
        addrs = {it.frame.unit for it in items}
        snapshot = {a: self._guard.state(a) for a in addrs}
        try:
            with self._store.transaction():
                for it in items:
                    f = it.frame
                    unit = self._units.get(f.unit)
                    if unit is None:  # a key without a register entry: cannot happen via codec
                        continue
                    self._downlink.heard(f.unit, link)
                    if it.verdict is Verdict.FRESH:
                        state = self._fresh(unit, f, at, link)
                        self._guard.record(f.unit, f.epoch, f.seq)
                        self._store.replay_save(f.unit, self._guard.state(f.unit))
                        fresh.append((unit, f))
                    else:
                        state = self._duplicate_state(f)
                    acks.append((f.unit, f.epoch, f.seq, state))
        except sqlite3.Error:
            self.commit_failures += 1
            self.last_commit_ok = False
            for a, st in snapshot.items():
                self._guard.load(a, st)
            log.exception(
                "journal commit failed: %d frames not ACKed (units will retry)", len(items)
            )
            return
        self.last_commit_ok = True
        self.journalled += len(fresh)
        for addr, epoch, seq, state in acks:
            self._downlink.ack(addr, epoch, seq, state)
        if fresh:
            self._wake()
        for unit, f in fresh:
            for w in self.watchers:
                try:
                    w.on_frame(unit, f, at)
                except Exception:
                    log.exception("watcher %s failed on a frame", type(w).__name__)

    def _fresh(self, unit: Unit, f: Frame, at: float, link: str) -> AckState:
        body = f.body
        incident: str | None = None
        state = AckState.RECEIVED
        if isinstance(body, Alarm):
            incident = self.incidents.on_alarm(unit, f, body, at, link)
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
        if isinstance(f.body, Cancel):
            iid = self._store.frame_incident(f.unit, f.epoch, f.seq)
            if iid is not None:
                return AckState.CANCELLED
        return AckState.RECEIVED

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
        """A police acknowledgement or a duty command arrived."""
        at = self._clock.now()
        parts = topic.split("/")
        pre = self._prefix.split("/")
        rest = parts[len(pre) :] if parts[: len(pre)] == pre else []
        if len(rest) == 3 and rest[1] == "ack":
            self.police_ack(rest[2], payload, at)
        elif len(rest) == 4 and rest[1] == "duty" and rest[3] == "ack":
            for w in self.watchers:
                try:
                    w.on_command(topic, payload, at)
                except Exception:
                    log.exception("watcher %s failed on %s", type(w).__name__, topic)
        else:
            log.info("ignoring message on %s", topic)

    def police_ack(self, incident: str, payload: bytes, at: float) -> None:
        """Record the police acknowledgement and tell the unit (ACK state 2, repeated)."""
        by, disposition = _parse_ack(payload)
        try:
            with self._store.transaction():
                target, news = self.incidents.on_police_ack(incident, by, disposition, at)
        except sqlite3.Error:
            log.exception("cannot journal police ack of %s", incident)
            return
        if news:
            log.warning("incident %s: police acknowledged (by %s, %s)", incident, by, disposition)
            self._wake()
        if target is None:
            return
        self._downlink.ack(target.addr, target.epoch, target.seq, AckState.POLICE_ACK)
        loop = asyncio.get_running_loop()
        for delay in POLICE_ACK_REPEATS_S:
            handle = loop.call_later(delay, self._repeat_ack, target.addr, target.epoch, target.seq)
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
    ) -> None:
        """Journal an event and queue it for the police; committed before this returns."""
        if topic not in ("event", "duty"):
            raise ValueError(f"topic must be 'event' or 'duty', not {topic!r}")
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
            )
            if topic == "duty":
                leaf = f"duty/{post or unit or self._config.gateway_id}"
            else:
                leaf = f"event/{unit or self._config.gateway_id}"
            payload = {
                "event": eid,
                "gateway": self._config.gateway_id,
                "site": site,
                "unit": unit,
                "post": post,
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
        if not self._store.in_transaction:
            self._wake()

    def signal(self, unit: str, pattern: SignalPattern, duration_s: int) -> None:
        """Send a SIGNAL frame (best effort)."""
        u = self._config.units.get(unit)
        if u is None:
            log.error("signal to unknown unit %s", unit)
            return
        self._downlink.send(u.addr, Signal(pattern=pattern, duration_s=duration_s))


def _parse_ack(payload: bytes) -> tuple[str | None, str | None]:
    """``{"by": ..., "disposition": ...}``; anything else is still an ack (by unknown)."""
    try:
        data = json.loads(payload.decode("utf-8")) if payload else None
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return None, None
    by = data.get("by")
    disposition = data.get("disposition")
    by_text = str(by)[:100] if by is not None else None
    if disposition not in ("genuine", "false_alarm", "test"):
        disposition = None
    return by_text, disposition
