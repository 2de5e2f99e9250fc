"""Ed25519 signing keys of gateways and duty rooms: names in the key directory, files, pairs.

Every secret and public key lives in one key directory (``--keydir``; under systemd
``$CREDENTIALS_DIRECTORY``), by one naming rule (gateway/README.md, "Keys and names"):

- ``<unit>.key``: a unit's 32-byte MAC key (64 hex digits; :mod:`protocol.keys`).
- ``gateway-<gateway id>.pem``: the gateway's signing key (PKCS#8 PEM, mode 0600);
  ``gateway-<gateway id>.pub`` its public key, handed to every duty room.
- ``dutyroom-<name>.pem``: a duty room's signing key, on the duty room's machine only;
  ``dutyroom-<name>.pub`` its public key. On a gateway, ``dutyroom-<name>.pub`` authorises
  that duty room for every site the gateway serves, ``dutyroom-<name>@<site>.pub`` for
  that one site (several such files for several sites).

A key's id (``kid`` in a signed payload) is its file name without the extension:
``gateway-hx-gw1``, ``dutyroom-police-hexi``. Keys never live in boards.yaml.

systemd's ``LoadCredential=keys:/etc/campusguard/keys`` hands each file over as
``keys_<file>``: every name here is also found with that prefix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.errors import KeyFileError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,47}$")
_DUTYROOM_PUB = re.compile(
    r"^(?:keys_)?(dutyroom-[A-Za-z0-9][A-Za-z0-9-]{0,47})(?:@([A-Za-z0-9-]+))?\.pub$"
)
_GATEWAY_PUB = re.compile(r"^(?:keys_)?(gateway-[A-Za-z0-9][A-Za-z0-9-]{0,47})\.pub$")
SYSTEMD_PREFIX = "keys_"  # LoadCredential=keys:DIR names each file keys_<file>


def gateway_kid(gateway_id: str) -> str:
    """The key id of a gateway's signing key."""
    return f"gateway-{gateway_id}"


def dutyroom_kid(name: str) -> str:
    """The key id of a duty room's signing key (``name`` may already carry the prefix)."""
    return name if name.startswith("dutyroom-") else f"dutyroom-{name}"


def check_name(name: str, what: str) -> str:
    """``name`` if it can be part of a key file name; else :class:`KeyFileError`."""
    if not _NAME.match(name):
        raise KeyFileError(f"{what} {name!r}: letters, digits and '-' only, at most 48")
    return name


def private_path(keydir: str | os.PathLike[str], kid: str) -> Path:
    """Where the private key ``kid`` lives (``keys_<kid>.pem`` as systemd hands it over)."""
    plain = Path(keydir) / f"{kid}.pem"
    credential = Path(keydir) / f"{SYSTEMD_PREFIX}{kid}.pem"
    return credential if not plain.exists() and credential.exists() else plain


def public_path(keydir: str | os.PathLike[str], kid: str, site: str | None = None) -> Path:
    """Where the public key ``kid`` (authorised for ``site``, or all) lives."""
    return Path(keydir) / (f"{kid}@{site}.pub" if site else f"{kid}.pub")


def write_pair(keydir: str | os.PathLike[str], kid: str, *, force: bool = False) -> Path:
    """Make a new key pair ``<kid>.pem`` (0600) and ``<kid>.pub``; return the private path.

    Refuses to replace an existing private key unless ``force``.
    """
    priv = private_path(keydir, kid)
    pub = public_path(keydir, kid)
    priv.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if priv.exists():
        if not force:
            raise KeyFileError(f"{priv} exists (use --force to replace it)")
        priv.unlink()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub.write_bytes(public_pem(key.public_key()))
    return priv


def ensure_pair(keydir: str | os.PathLike[str], kid: str) -> Path:
    """The private key ``kid``, made first if there is none (demo, tests, fleets)."""
    path = private_path(keydir, kid)
    if not path.exists():
        write_pair(keydir, kid)
    return path


def public_pem(key: Ed25519PublicKey) -> bytes:
    """A public key as PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_private(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; :class:`KeyFileError` names the path."""
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{p}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{p}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: not an Ed25519 key")
    return key


def read_public(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; :class:`KeyFileError` names the path."""
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"{p}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{p}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p}: not an Ed25519 key")
    return key


@dataclass(frozen=True, slots=True)
class Authorised:
    """A duty room's public key and the sites it may acknowledge (None: every site)."""

    kid: str
    key: Ed25519PublicKey
    sites: frozenset[str] | None

    def may_act_for(self, site: str) -> bool:
        """True if this key is authorised for ``site``."""
        return self.sites is None or site in self.sites


def dutyroom_keys(keydir: str | os.PathLike[str]) -> dict[str, Authorised]:
    """Every duty room authorised in ``keydir``, by key id.

    ``dutyroom-<name>.pub`` is authorised for every site, ``dutyroom-<name>@<site>.pub``
    for that site. Files of one name must hold the same key; a broken file is an error.
    """
    d = Path(keydir)
    found: dict[str, tuple[Ed25519PublicKey, bytes, set[str] | None]] = {}
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError:
        return {}
    for name in names:
        m = _DUTYROOM_PUB.match(name)
        if m is None:
            continue
        kid, site = m.group(1), m.group(2)
        key = read_public(d / name)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        old = found.get(kid)
        if old is not None and old[1] != raw:
            raise KeyFileError(f"{d / name}: a different key than another file of {kid}")
        sites = old[2] if old is not None else set()
        if site is None or sites is None:
            sites = None
        else:
            sites.add(site)
        found[kid] = (key, raw, sites)
    return {
        kid: Authorised(kid, key, None if sites is None else frozenset(sites))
        for kid, (key, _, sites) in found.items()
    }


def gateway_keys(keydir: str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """Every gateway public key (``gateway-<id>.pub``) in ``keydir``, by key id."""
    d = Path(keydir)
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError:
        return {}
    out = {}
    for name in names:
        m = _GATEWAY_PUB.match(name)
        if m is not None:
            out[m.group(1)] = read_public(d / name)
    return out


def provision_one_room(keydir: str | os.PathLike[str], gateway_id: str, dutyroom: str) -> None:
    """A gateway and a duty room sharing one key directory (a demo, a test rig).

    Makes whichever of the two key pairs is missing. A real installation keeps the two
    apart: the gateway holds ``gateway-<id>.pem`` and ``dutyroom-<name>.pub``, the duty
    room ``dutyroom-<name>.pem`` and ``gateway-<id>.pub``.
    """
    ensure_pair(keydir, gateway_kid(gateway_id))
    ensure_pair(keydir, dutyroom_kid(dutyroom))
