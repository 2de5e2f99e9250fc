r"""The signed envelope every CampusGuard MQTT payload travels in (gateway/README.md).

    {"v":1,"kid":"gateway-hx-gw1","body":"{\"incident\":...}","sig":"<base64url>"}

``body`` is the message itself as JSON text, carried as a string so that the signed
bytes are exactly the bytes received (no canonical JSON to agree on); ``sig`` is the
Ed25519 signature (base64url, no padding) by the key ``kid`` over::

    b"campusguard/v1\n" + topic + b"\n" + body        (all UTF-8)

so a signed message cannot be moved to another topic (another site, incident or post).
An empty payload is not an envelope: it clears a retained topic.

Receiving is untrusted input: a payload over :data:`MAX_PAYLOAD_BYTES` is refused before
it is parsed, and every parse failure (bad UTF-8, bad JSON, nesting deep enough for a
``RecursionError``, wrong types) is a clean :class:`EnvelopeError` with a reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.errors import EnvelopeError
from gateway.security.signkeys import gateway_kid, private_path, read_private

VERSION = 1
MAX_PAYLOAD_BYTES = 8192
"""Inbound payloads larger than this are dropped unparsed (an ack is ~400 bytes)."""

_DOMAIN = b"campusguard/v1\n"
_SIG_LEN = 64


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, not yet verified envelope."""

    kid: str
    body: str
    sig: bytes


def signed_bytes(topic: str, body: str) -> bytes:
    """What the signature covers."""
    return _DOMAIN + topic.encode() + b"\n" + body.encode()


class Signer:
    """Seals message bodies with one Ed25519 key."""

    def __init__(self, kid: str, key: Ed25519PrivateKey) -> None:
        """``kid`` is the key's id (its file name without ``.pem``)."""
        self.kid = kid
        self._key = key
        self._head = f'{{"v":{VERSION},"kid":{json.dumps(kid)},"body":'

    @classmethod
    def load(cls, keydir: str | os.PathLike[str], kid: str) -> Signer:
        """The signer of ``<keydir>/<kid>.pem`` (:class:`KeyFileError` if unusable)."""
        return cls(kid, read_private(private_path(keydir, kid)))

    def public_key(self) -> Ed25519PublicKey:
        """The public half (what clients verify with)."""
        return self._key.public_key()

    def seal(self, topic: str, body: str) -> str:
        """The envelope of ``body`` (JSON text) for ``topic``."""
        sig = self._key.sign(signed_bytes(topic, body))
        b64 = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
        return f'{self._head}{json.dumps(body)},"sig":"{b64}"}}'

    def seal_obj(self, topic: str, body: Mapping[str, Any]) -> str:
        """The envelope of a JSON object."""
        return self.seal(topic, json.dumps(dict(body), separators=(",", ":")))


def loads(text: str | bytes) -> Any:
    """``json.loads`` that fails only with :class:`EnvelopeError` (never RecursionError)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise EnvelopeError("malformed", f"not JSON ({type(exc).__name__})") from None


def parse(raw: bytes, limit: int = MAX_PAYLOAD_BYTES) -> Envelope:
    """Size check, then parse; no signature check yet."""
    if len(raw) > limit:
        raise EnvelopeError("oversized", f"{len(raw)} bytes, limit {limit}")
    if not raw:
        raise EnvelopeError("malformed", "empty payload")
    doc = loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise EnvelopeError("malformed", "not a version 1 envelope")
    kid, body, sig = doc.get("kid"), doc.get("body"), doc.get("sig")
    if not isinstance(kid, str) or not isinstance(body, str) or not isinstance(sig, str):
        raise EnvelopeError("malformed", "kid, body and sig must be strings")
    try:
        sig_bytes = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeError("malformed", "sig is not base64url") from None
    if len(sig_bytes) != _SIG_LEN:
        raise EnvelopeError("malformed", "sig is not 64 bytes")
    return Envelope(kid[:80], body, sig_bytes)


def verify(topic: str, env: Envelope, key: Ed25519PublicKey) -> dict[str, Any]:
    """The body as a JSON object if ``key`` signed it for ``topic``; else EnvelopeError."""
    try:
        key.verify(env.sig, signed_bytes(topic, env.body))
    except InvalidSignature:
        raise EnvelopeError("bad_signature", f"not signed by {env.kid} for {topic}") from None
    body = loads(env.body)
    if not isinstance(body, dict):
        raise EnvelopeError("malformed", "body is not a JSON object")
    return body


def reseal(signer: Signer, topic: str, payload: str) -> str | None:
    """``payload`` signed by ``signer`` for ``topic``: None if it already is.

    An unsigned (older) payload is sealed as it is; an envelope by another key (a
    rotated one) is sealed again around the same body.
    """
    if not payload:
        return None
    try:
        env = parse(payload.encode(), limit=1 << 30)
    except EnvelopeError:
        return signer.seal(topic, payload)
    try:
        verify(topic, env, signer.public_key())
    except EnvelopeError:
        return signer.seal(topic, env.body)
    return None


def open_gateway(
    topic: str, raw: bytes, keys: Mapping[str, Ed25519PublicKey], limit: int = MAX_PAYLOAD_BYTES
) -> dict[str, Any]:
    """A gateway's publication, verified: signed by ``gateway-<body.gateway>``.

    For duty-room clients: ``keys`` are the trusted gateways' public keys by key id.
    """
    env = parse(raw, limit)
    key = keys.get(env.kid)
    if key is None:
        raise EnvelopeError("unknown_key", f"no trusted key {env.kid!r}")
    body = verify(topic, env, key)
    if gateway_kid(str(body.get("gateway"))) != env.kid:
        raise EnvelopeError("wrong_signer", f"{env.kid} signed for gateway {body.get('gateway')!r}")
    return body
