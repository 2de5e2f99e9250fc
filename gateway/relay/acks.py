"""Duty-room acknowledgements: the signed format, made by duty rooms, checked by the gateway.

A police ack (``<prefix>/<site>/ack/<incident>``), a duty ack
(``<prefix>/<site>/duty/<post>/ack``) and a patrol ack
(``<prefix>/<site>/patrol/<route>/ack``, body ``"kind": "patrol_ack", "route": ...``) are
envelopes (:mod:`gateway.security.envelope`) signed by a
duty room's key, whose body binds everything the gateway acts on::

    {"kind": "police_ack", "site": "hexi-primary", "incident": "hx-gw1-shop-fruit-3-17",
     "disposition": "genuine", "by": "Officer Li", "nonce": "9f0c...", "at": "2026-...Z"}
    {"kind": "duty_ack", "site": "hexi-primary", "post": "gate", "by": "Officer Li",
     "nonce": "...", "at": "..."}

The gateway accepts one if the key (``kid``) is a duty room authorised for the site
(:func:`gateway.security.signkeys.dutyroom_keys`), the signature covers this very topic, the body
names the topic's site and incident or post, the nonce was never accepted before (kept in
the journal, table ``ack_nonces``, for ever), and it is not dated before the incident's
first publication (the caller checks that: it knows the incident). There is no
wall-clock window: acks sent while the gateway was away still count when they arrive.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.errors import AckRejected, EnvelopeError
from gateway.core.timefmt import iso
from gateway.security.envelope import Signer, parse, verify
from gateway.security.signkeys import Authorised

DISPOSITIONS = ("genuine", "false_alarm", "test")
ACK_CLOCK_SKEW_S = 5.0
"""An ack may be dated this much before what it acknowledges (duty room vs gateway clock)."""

_NONCE = re.compile(r"^[0-9a-f]{16,64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS ack_nonces (
    nonce       TEXT PRIMARY KEY,  -- every accepted ack's nonce: never accepted twice
    kid         TEXT NOT NULL,     -- the duty room's key
    topic       TEXT NOT NULL,
    signed_at   REAL NOT NULL,     -- the ack's own time
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class SignedAck:
    """An acknowledgement whose signature, authorisation and fields checked out."""

    kind: str  # police_ack | duty_ack | patrol_ack
    site: str
    subject: str  # the incident, the post or the patrol route
    kid: str
    by: str
    disposition: str | None
    nonce: str
    at: float
    topic: str


def ack_topic(
    prefix: str,
    site: str,
    *,
    incident: str | None = None,
    post: str | None = None,
    route: str | None = None,
) -> str:
    """The topic of a police ack (``incident``), a duty ack (``post``) or a patrol ack."""
    if incident is not None:
        return f"{prefix}/{site}/ack/{incident}"
    if post is not None:
        return f"{prefix}/{site}/duty/{post}/ack"
    if route is not None:
        return f"{prefix}/{site}/patrol/{route}/ack"
    raise ValueError("an ack is for an incident, a post or a patrol route")


SUBJECT_FIELD = {"police_ack": "incident", "duty_ack": "post", "patrol_ack": "route"}
"""The body field that names what each kind of ack acknowledges."""


def make_ack(
    signer: Signer,
    prefix: str,
    site: str,
    *,
    by: str,
    incident: str | None = None,
    post: str | None = None,
    route: str | None = None,
    disposition: str = "genuine",
    at: float | None = None,
) -> tuple[str, str]:
    """(topic, payload) of a signed ack, as a duty room sends it."""
    topic = ack_topic(prefix, site, incident=incident, post=post, route=route)
    kind = (
        "police_ack" if incident is not None else "duty_ack" if post is not None else "patrol_ack"
    )
    body: dict[str, Any] = {"kind": kind, "site": site}
    if incident is not None:
        if disposition not in DISPOSITIONS:
            raise ValueError(f"disposition {disposition!r}: one of {', '.join(DISPOSITIONS)}")
        body["incident"] = incident
        body["disposition"] = disposition
    elif post is not None:
        body["post"] = post
    else:
        body["route"] = route
    body["by"] = by
    body["nonce"] = secrets.token_hex(16)
    body["at"] = iso(time.time() if at is None else at)
    return topic, signer.seal_obj(topic, body)


def _time(text: Any) -> float | None:
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


class AckVerifier:
    """Checks acks against the authorised duty-room keys; remembers accepted nonces."""

    def __init__(self, conn: sqlite3.Connection, keys: Mapping[str, Authorised]) -> None:
        """``conn`` is the journal's connection (the caller's transactions hold the writes)."""
        self._conn = conn
        self.keys = dict(keys)
        conn.executescript(SCHEMA)

    def verify(
        self, topic: str, payload: bytes, *, kind: str, site: str, subject: str
    ) -> SignedAck:
        """The ack on ``topic`` if it is authentic and fresh; else :class:`AckRejected`."""
        try:
            env = parse(payload)
        except EnvelopeError as exc:
            raise AckRejected(exc.reason, exc.detail) from None
        auth = self.keys.get(env.kid)
        if auth is None:
            raise AckRejected("unknown_key", f"no duty-room key {env.kid!r}", env.kid)
        if not auth.may_act_for(site):
            raise AckRejected("not_authorised", f"{env.kid} may not act for {site}", env.kid)
        try:
            body = verify(topic, env, auth.key)
        except EnvelopeError as exc:
            raise AckRejected(exc.reason, exc.detail, env.kid) from None
        field = SUBJECT_FIELD[kind]
        if body.get("kind") != kind or body.get("site") != site or body.get(field) != subject:
            raise AckRejected("mismatch", f"body is not a {kind} of {site}/{subject}", env.kid)
        nonce, at = body.get("nonce"), _time(body.get("at"))
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise AckRejected("malformed", "nonce: 16..64 lower-case hex digits", env.kid)
        if at is None:
            raise AckRejected("malformed", "at: an ISO 8601 time with a zone", env.kid)
        disposition = body.get("disposition")
        if kind == "police_ack" and disposition not in DISPOSITIONS:
            raise AckRejected("malformed", f"disposition {disposition!r}", env.kid)
        by = body.get("by")
        if not isinstance(by, str) or not by.strip():
            raise AckRejected("malformed", "by: who acknowledges", env.kid)
        if self.seen(nonce):
            raise AckRejected("replayed", f"nonce {nonce} was accepted before", env.kid)
        return SignedAck(
            kind=kind,
            site=site,
            subject=subject,
            kid=env.kid,
            by=by.strip()[:100],
            disposition=disposition if kind == "police_ack" else None,
            nonce=nonce,
            at=at,
            topic=topic,
        )

    def seen(self, nonce: str) -> bool:
        """True if an ack with ``nonce`` was accepted before."""
        row = self._conn.execute("SELECT 1 FROM ack_nonces WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def record(self, ack: SignedAck, received_at: float) -> None:
        """Keep the nonce (inside the transaction that acts on the ack)."""
        self._conn.execute(
            "INSERT INTO ack_nonces(nonce, kid, topic, signed_at, received_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (ack.nonce, ack.kid, ack.topic, ack.at, received_at),
        )


def body_json(ack: SignedAck) -> bytes:
    """The verified fields as the JSON a watcher reads (``by``, ``at``, ``nonce``)."""
    return json.dumps(
        {"by": ack.by, "at": iso(ack.at), "nonce": ack.nonce, "kid": ack.kid}
    ).encode()
