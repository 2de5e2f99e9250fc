"""The web duty room's state and its MQTT side: intake, acknowledgements, re-alerts.

:class:`Room` connects to the broker (the nodes of a cluster in turn, as the console
does), subscribes to its sites' topics and the gateways' statuses (a session the broker
kept holds them: it is resumed without subscribing again), and folds every
message that a trusted gateway signed into the console's :class:`~gateway.dutyroom.board.Board`
and into its own database; anything else is dropped and counted. Each change is told to
:attr:`Room.on_change` with the screens (sections) it touches, so browsers refresh them.

Operators act through it: take an incident, tick its action plan, acknowledge it with a
disposition and a note (signed with the duty room's key, in the operator's name), answer
a missed check-in. An incident left waiting longer than ``realert_s`` re-alerts once,
louder, and the supervisors are told.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.broker import BrokerSettings
from gateway.core.errors import EnvelopeError, RoomError
from gateway.dutyroom.board import CLOSED_KEEP_S, Board
from gateway.dutyroom.web.auth import Who
from gateway.dutyroom.web.db import DutyDb
from gateway.dutyroom.web.plans import plan_for
from gateway.relay.acks import DISPOSITIONS, make_ack
from gateway.relay.mqttsocket import NodeLoop
from gateway.security.envelope import MAX_PAYLOAD_BYTES, Signer, open_gateway

log = logging.getLogger(__name__)

SITE_TOPICS = (
    "alarm/+", "open/+", "event/+", "duty/+", "unit/+/state", "post/+/state",
    "register/#", "report/+",
)  # fmt: skip
PROBLEMS_LEAF = "problems"  # the database's own record of a gateway's conditions
REPORT_MAX_BYTES = 16384  # the broker's max_packet_size (campusguard broker-config)


def _site_of(data: dict[str, Any]) -> str:
    site = data.get("site")
    if isinstance(site, dict):
        return str(site.get("site") or site.get("id") or "")
    return str(site or "")


@dataclass
class Register:
    """What the gateways published of their registers: sites and units."""

    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """A time the duty room was not connected to the broker."""

    since: float
    back: float
    kept: bool  # the broker kept our session: what came meanwhile was queued and delivered

    def text(self) -> str:
        """One line for the audit log and the page."""
        said = (
            "session kept: everything published meanwhile delivered"
            if self.kept
            else "session NOT kept by the broker: updates published meanwhile may be"
            " missing (open alarms restored from the retained copies)"
        )
        return f"broker connection lost for {self.back - self.since:.0f} s; {said}"


def client_id(db: DutyDb, brokers: Sequence[BrokerSettings]) -> str:
    """The client id of this duty room's persistent session.

    The broker account's name, as the console's (Mosquitto binds the client id to it),
    else one made for this database at its first start and kept in it.
    """
    user = brokers[0].username if brokers else None
    return user or db.client_id(f"campusguard-dutyroom-{secrets.token_hex(4)}")


class Room:
    """The duty room: broker connection, board, database, operators' actions."""

    def __init__(
        self,
        db: DutyDb,
        brokers: Sequence[BrokerSettings],
        trusted: Mapping[str, Ed25519PublicKey],
        signer: Signer | None,
        *,
        prefix: str = "campusguard",
        sites: Sequence[str] = ("+",),
        now: Callable[[], float],
        realert_s: float = 60.0,
    ) -> None:
        """``trusted``: gateways' public keys by key id; ``signer``: the duty room's key.

        ``now`` dates acks, ages and timelines: the gateways' time (a demo whose gateway
        runs on an accelerated clock passes that clock, so that no ack is dated before
        the alarm it answers).
        """
        self.db = db
        self.brokers = list(brokers)
        self.trusted = dict(trusted)
        self.signer = signer
        self.prefix = prefix
        self.sites = list(sites)
        self.now = now
        self.realert_s = realert_s
        self.board = Board()
        self.register = Register()
        # gateway id -> what is wrong with it now (links down, clock, receiving centre)
        self.gateway_problems: dict[str, dict[str, str]] = {}
        self.connected = asyncio.Event()
        self.on_change: Callable[[set[str], dict[str, Any] | None], None] = lambda s, n: None
        # the broker connection's gaps: since when it is down (None: up, or never was),
        # and the last one that ended (shown on every page)
        self.down_since: float | None = None
        self.last_gap: Gap | None = None
        # a kept session (another node of the cluster, the broker restarted on its store)
        # holds our subscriptions and what was queued for us: not subscribed again
        # (resume), which on NATS cost ~1.2 s of a station's failover (cluster/SCALE.md)
        self.link = NodeLoop(
            self.brokers,
            identifier=client_id(db, self.brokers),
            resume=True,
            log_failure=lambda s, exc: log.warning(
                "broker %s:%d: %s; retrying", s.host, s.port, exc
            ),
        )
        self._first_seen: dict[str, float] = {}
        self._restore()

    # -- start-up: the board as it was ----------------------------------------------------

    def _restore(self) -> None:
        """Fold the database back in, so a restart shows what was shown before."""
        now = self.now()
        for topic, data in self.db.incidents_shown(now - CLOSED_KEEP_S):
            self.board.take(topic, data, now)
        for topic, data in self.db.latest():
            self._fold_other(topic, data, now, store=False)
        for iid in self.board.incidents:
            self._first_seen[iid] = now

    # -- the broker --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (retrying, node after node) until cancelled."""
        session_lost = False  # since the last subscription (a gap may span connections)

        def connected(_client: aiomqtt.Client) -> None:
            nonlocal session_lost
            if self.link.session_present:
                # The broker kept our session: what was published meanwhile was queued
                # for it and comes now, an incident closed meanwhile too (its cleared
                # retained copy). The board stays. Resumed (``self.link.resumed``: no
                # SUBSCRIBE), no retained message comes again; subscribed again (this
                # server just started, or the last SUBSCRIBE did not finish) the
                # retained copies come again and change nothing already shown. A new
                # session met earlier in this gap keeps ``session_lost``: it is not
                # undone by a session that was kept since.
                return
            session_lost = True
            # a new session (the first, or the broker lost ours): nothing was queued, the
            # retained topics tell the open incidents again
            self.board.reconnected()
            # ... except what closed lately, which the board still shows a while
            now = self.now()
            for topic, data in self.db.incidents_shown(now - CLOSED_KEEP_S, True):
                self.board.take(topic, data, now)

        async def subscribed(_client: aiomqtt.Client) -> None:
            nonlocal session_lost
            self.connected.set()
            notice: dict[str, Any] = {"kind": "broker", "connected": True}
            if self.down_since is not None:
                self._gap_ended(self.down_since, not session_lost)
                notice["gap"] = self.last_gap.text() if self.last_gap else ""
            self.down_since = None
            session_lost = False
            self.on_change({"all"}, notice)

        def lost() -> None:
            self.connected.clear()
            if self.down_since is None:
                self.down_since = self.now()
            self.on_change({"status"}, {"kind": "broker", "connected": False})

        await self.link.run(
            lambda: [
                *(f"{self.prefix}/{site}/{leaf}" for site in self.sites for leaf in SITE_TOPICS),
                f"{self.prefix}/gateway/+/status",
            ],
            self.take,
            on_connect=connected,
            on_up=subscribed,
            on_down=lost,
        )

    def _gap_ended(self, since: float, kept: bool) -> None:
        gap = self.last_gap = Gap(since, self.now(), kept)
        self.db.audit(gap.back, "system", "broker_gap", "", gap.text())
        if kept:
            log.info("broker connection back: %s", gap.text())
        else:
            log.warning("broker connection back: %s", gap.text())

    @property
    def _client(self) -> aiomqtt.Client | None:
        return self.link.client

    def take(self, topic: str, raw: bytes) -> None:
        """One message from the broker: verify, fold in, keep, tell the browsers."""
        now = self.now()
        parts = topic.split("/")
        kind = parts[-2] if len(parts) >= 2 else ""
        # a monthly report may be larger than an alarm: up to what the broker carries
        limit = REPORT_MAX_BYTES if kind == "report" else MAX_PAYLOAD_BYTES
        try:
            data: Any = open_gateway(topic, raw, self.trusted, limit) if raw else None
        except EnvelopeError as exc:
            self.board.dropped += 1
            log.info("dropped a message on %s: %s", topic, exc.reason)
            self.on_change({"status"}, None)
            return
        if kind in ("alarm", "open"):
            self._fold_incident(topic, parts, data, now)
            return
        self._fold_other(topic, data, now, store=True)

    def _fold_incident(self, topic: str, parts: list[str], data: Any, now: float) -> None:
        taken = self.board.take(topic, data, now)
        if data is None:  # open/<id> cleared: closed
            iid = parts[-1]
            self.db.close_incident(iid, now)
            self.on_change({"queue", f"incident:{iid}", "plan"}, None)
            return
        if not isinstance(data, dict) or "incident" not in data:
            return
        iid = str(data["incident"])
        site = str(data.get("site", ""))
        what = str(data.get("update") or ("retained" if parts[-2] == "open" else "update"))
        open_topic = f"{self.prefix}/{site}/open/{iid}"
        kept = self.db.put_incident(iid, site, open_topic, data, now, what)
        self._first_seen.setdefault(iid, now)
        if kept == "late":  # only its timeline changed
            self.on_change({f"incident:{iid}"}, None)
        if kept != "applied":
            return
        notice = None
        if taken.alert:
            notice = {"kind": "alarm", "incident": iid, "sound": "alarm", "what": what}
        self.on_change({"queue", f"incident:{iid}", "plan"}, notice)

    def _fold_other(self, topic: str, data: Any, now: float, *, store: bool) -> None:
        parts = topic.split("/")
        if (len(parts) >= 3 and parts[-3] == "register") or (
            parts and parts[-2:-1] == ["register"]
        ):
            self._fold_register(topic, parts, data, store=store, now=now)
            return
        if len(parts) >= 2 and parts[-2] == "report":
            if store and isinstance(data, dict):
                self._fold_report(topic, data, now)
            return
        if not store and parts[-1] == PROBLEMS_LEAF:  # this room's own record, at a restart
            if isinstance(data, dict):
                self.gateway_problems[parts[-2]] = {str(k): str(v) for k, v in data.items()}
            return
        taken = self.board.take(topic, data, now)
        sections: set[str] = set()
        notice = None
        if taken.kind == "event" and isinstance(data, dict):
            self._gateway_problem(data, now, store=store)
        if taken.kind == "unit":
            sections = {"health", "plan"}
            if store and isinstance(data, dict):
                self.db.unit_state(parts[-2], str(data.get("state")), now)
        elif taken.kind in ("post", "duty"):
            sections = {"duty"}
            if taken.alert:
                notice = {"kind": "duty", "sound": "alarm"}
        elif taken.kind == "gateway":
            sections = {"health", "status"}
        elif taken.kind == "event":
            sections = {"health"}
        if store and taken.kind in ("unit", "post", "gateway"):
            self.db.put_latest(topic, data, now)
        if sections:
            self.on_change(sections, notice)

    def _gateway_problem(self, e: dict[str, Any], now: float, *, store: bool) -> None:
        """Track a gateway's own conditions from its events: links, clock, ARC paths."""
        gid = str(e.get("gateway", ""))
        kind = str(e.get("kind", ""))
        raw = e.get("detail")
        detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if not gid or e.get("unit") not in (None, gid):
            return
        restored = e.get("qualifier") == 3
        if kind in ("link_down", "link_up"):
            key, text = f"link {detail.get('link', '?')}", "serial link down"
            restored = kind == "link_up"
        elif kind == "clock_unsynced":
            key, text = "clock", "clock not synchronised"
        elif kind == "arc_path":
            key, text = f"arc {detail.get('receiver', '?')}", "receiving centre path lost"
        else:
            return
        problems = self.gateway_problems.setdefault(gid, {})
        if restored:
            problems.pop(key, None)
        else:
            problems[key] = f"{text} since {e.get('at')}"
        if store:
            topic = f"{self.prefix}/gateway/{gid}/{PROBLEMS_LEAF}"
            self.db.put_latest(topic, problems, now)

    def _fold_register(
        self, topic: str, parts: list[str], data: Any, *, store: bool, now: float
    ) -> None:
        if parts[-1] == "site" and parts[-2] == "register":
            book, key = self.register.sites, parts[-3]
        elif parts[-2] == "unit" and parts[-3] == "register":
            book, key = self.register.units, parts[-1]
        else:
            return
        if isinstance(data, dict):
            book[key] = data
        else:
            book.pop(key, None)
        if store:
            self.db.put_latest(topic, data if isinstance(data, dict) else None, now)
        self.on_change({"plan", "duty", "health"}, None)

    def _fold_report(self, topic: str, data: dict[str, Any], now: float) -> None:
        """A report a gateway published (``report/<period>``): kept to read and download.

        A report with a ``text`` (Markdown) is kept as it is; otherwise its figures are
        kept as indented JSON (the monthly report's per-site message).
        """
        text = data.get("text")
        if not isinstance(text, str):
            text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        kind = str(data.get("report") or "report")
        name = str(data.get("name") or f"{kind} {data.get('period') or topic.rsplit('/', 1)[-1]}")
        self.db.put_report(topic, str(data.get("site_id") or _site_of(data)), name[:100], text, now)
        self.on_change({"reports"}, None)

    # -- the operators -----------------------------------------------------------------------

    def _incident(self, iid: str) -> dict[str, Any]:
        data = self.db.incident(iid)
        if data is None:
            raise RoomError(f"no incident {iid}", 404)
        return data

    def take_incident(self, who: Who, iid: str) -> None:
        """``who`` handles the incident (others see it)."""
        self._incident(iid)
        now = self.now()
        self.db.take(iid, who.display, now)
        self.db.add_timeline(iid, now, "taken", who.display)
        self.db.audit(now, who.name, "take", iid)
        self.on_change({"queue", f"incident:{iid}"}, None)

    def tick(self, who: Who, iid: str, step: int) -> None:
        """A step of the action plan is done."""
        data = self._incident(iid)
        steps = plan_for(str(data.get("kind")))
        if not 0 <= step < len(steps):
            raise RoomError(f"no step {step} in the plan", 400)
        now = self.now()
        if self.db.tick(iid, step, who.display, now):
            self.db.add_timeline(iid, now, "step done", who.display, steps[step])
            self.db.audit(now, who.name, "tick", iid, steps[step])
            self.on_change({f"incident:{iid}"}, None)

    async def ack(self, who: Who, iid: str, disposition: str, note: str) -> None:
        """Acknowledge with a disposition and a note, signed in ``who``'s name."""
        data = self._incident(iid)
        if disposition not in DISPOSITIONS:
            raise RoomError(f"disposition {disposition!r}: one of {', '.join(DISPOSITIONS)}", 400)
        if data.get("state") == "closed":
            raise RoomError(f"{iid} is closed")
        site = str(data.get("site", ""))
        topic, payload = self._signed(site, who, incident=iid, disposition=disposition)
        await self._publish(topic, payload)
        now = self.now()
        note = note.strip()[:2000]
        self.db.put_note(iid, who.display, disposition, note, now)
        self.db.add_timeline(iid, now, "acknowledged", who.display, f"{disposition}: {note}")
        self.db.audit(now, who.name, "ack", iid, f"{disposition}: {note}")
        self.board.acked(iid)
        self.on_change({"queue", f"incident:{iid}"}, {"kind": "ack", "incident": iid})

    async def ack_post(self, who: Who, post: str) -> None:
        """Answer a missed check-in at ``post`` (its escalation ladder stops)."""
        state = self.board.posts.get(post)
        alert = self.board.post_alerts.get(post)
        site = str((state or {}).get("site") or (alert.site if alert else ""))
        if not site:
            raise RoomError(f"no guard post {post}", 404)
        topic, payload = self._signed(site, who, post=post)
        await self._publish(topic, payload)
        now = self.now()
        self.db.audit(now, who.name, "ack_post", post)
        self.on_change({"duty"}, {"kind": "ack_post", "post": post})

    def _signed(
        self,
        site: str,
        who: Who,
        *,
        incident: str | None = None,
        post: str | None = None,
        disposition: str = "genuine",
    ) -> tuple[str, str]:
        if self.signer is None:
            raise RoomError("this duty room has no signing key: nobody can acknowledge", 503)
        return make_ack(
            self.signer,
            self.prefix,
            site,
            by=who.display,
            incident=incident,
            post=post,
            disposition=disposition,
            at=self.now(),
        )

    async def _publish(self, topic: str, payload: str) -> None:
        client = self._client
        if client is None:
            raise RoomError("not connected to the broker: nothing was sent", 503)
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise RoomError(f"the broker did not take it: {exc}", 503) from None

    # -- re-alerts -------------------------------------------------------------------------------

    def check_realerts(self) -> list[str]:
        """Incidents waiting longer than ``realert_s`` re-alert once; their ids."""
        now = self.now()
        out = []
        for iid, row in self.board.incidents.items():
            if not row.waiting:
                continue
            since = self._first_seen.get(iid, row.seen_at)
            if now - since < self.realert_s:
                continue
            if self.db.realerted(iid, now):
                self.db.add_timeline(
                    iid, now, "re-alert", "", f"unacknowledged {self.realert_s:g} s"
                )
                self.db.audit(now, "system", "realert", iid, "supervisor told")
                out.append(iid)
                self.on_change(
                    {"queue", f"incident:{iid}"},
                    {"kind": "realert", "incident": iid, "sound": "realert", "supervisor": True},
                )
        return out

    async def realert_loop(self, period_s: float = 1.0) -> None:
        """Check for re-alerts every ``period_s`` until cancelled."""
        while True:
            self.check_realerts()
            await asyncio.sleep(period_s)

    def status(self) -> dict[str, Any]:
        """The broker connection, its gaps and what was dropped, for the page's header."""
        return {
            "connected": self._client is not None,
            "down_since": self.down_since,
            "last_gap": self.last_gap,
            "dropped": self.board.dropped,
        }
