"""Mosquitto locked down: accounts, password file, ACL, TLS listener (``broker-config``).

Who may do what (gateway/README.md, "Security"), for the topic prefix ``P``:

- gateway ``gateway-<id>``: write its sites' ``P/<site>/alarm/+``, ``event/+``, ``duty/+``,
  ``open/+``, ``unit/+/state``, ``post/+/state``, ``snapshot/+/+``, ``register/#``; read its
  sites' ``P/<site>/ack/+`` and ``P/<site>/duty/+/ack``; read and write its own
  ``P/gateway/<id>/status`` (it reads it back to notice a second instance).
- duty room ``dutyroom-<name>``: read its sites' ``P/<site>/#`` and every gateway status;
  write ``P/<site>/ack/+`` and ``P/<site>/duty/+/ack`` (acks, which the gateway verifies
  against the duty room's signing key anyway).
- viewer ``viewer-<name>``: read its sites' ``P/<site>/#`` and the gateway statuses.

Anonymous clients are refused, every client needs a password and a client certificate
from the private CA, the client id is the user name (``use_username_as_clientid``: nobody
can take over a gateway's session without its password and certificate), and packets
over ``max_packet_size`` are refused by the broker before any client sees them.

Passwords are written once per user to ``credentials/<user>.password`` (0600) and hashed
into ``passwd`` in Mosquitto 2's ``$7$`` format (PBKDF2-SHA512, 101 iterations, as
``mosquitto_passwd`` writes it); ``rotate`` makes a user's password and certificate anew.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.config import Config
from gateway.core.errors import GatewayError
from gateway.security.pki import Issued, ensure_ca, issue

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 uses for $7$
MAX_PACKET_SIZE = 16384  # bytes; an alarm envelope is ~1.5 KB, an ack ~0.5 KB
ACK_LEAVES = ("ack/+", "duty/+/ack", "patrol/+/ack")
"""What duty rooms write and the gateway reads: police, duty and patrol acknowledgements."""
GATEWAY_WRITES = (
    "alarm/+", "event/+", "duty/+", "patrol/+", "open/+", "unit/+/state", "post/+/state",
    "patrol/+/state", "report/+", "snapshot/+/+", "register/#",
)  # fmt: skip


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password file hash: ``$7$101$<salt>$<PBKDF2-SHA512>`` (base64)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True)
class Accounts:
    """Broker users and what each may read and write."""

    prefix: str = "campusguard"
    gateways: Mapping[str, Sequence[str]] = field(default_factory=dict)  # id -> sites
    dutyrooms: Mapping[str, Sequence[str]] = field(default_factory=dict)  # name -> sites
    viewers: Mapping[str, Sequence[str]] = field(default_factory=dict)  # name -> sites

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        dutyrooms: Mapping[str, Sequence[str] | None],
        viewers: Mapping[str, Sequence[str] | None] = {},
        prefix: str = "campusguard",
    ) -> Accounts:
        """The gateway of ``config`` with its sites; duty rooms and viewers (None: all)."""
        sites = sorted({config.site, *(u.site for u in config.units.values())})
        return cls(
            prefix=prefix,
            gateways={config.gateway_id: sites},
            dutyrooms={n: list(s) if s else sites for n, s in dutyrooms.items()},
            viewers={n: list(s) if s else sites for n, s in viewers.items()},
        )

    def check_users(self, names: Iterable[str], what: str) -> None:
        """GatewayError naming every one of ``names`` that is no broker user here."""
        unknown = set(names) - set(self.users())
        if unknown:
            raise GatewayError(f"{what}: no such user {', '.join(sorted(unknown))}")

    def users(self) -> list[str]:
        """Every broker user name."""
        return [
            *(f"gateway-{g}" for g in self.gateways),
            *(f"dutyroom-{d}" for d in self.dutyrooms),
            *(f"viewer-{v}" for v in self.viewers),
        ]

    def acl(self) -> str:
        """The Mosquitto ACL file (anything not granted is denied)."""
        p = self.prefix
        out = ["# written by campusguard broker-config: anything not granted is denied", ""]
        for gid, sites in self.gateways.items():
            out.append(f"user gateway-{gid}")
            for s in sites:
                out += [f"topic write {p}/{s}/{leaf}" for leaf in GATEWAY_WRITES]
                out += [f"topic read {p}/{s}/{leaf}" for leaf in ACK_LEAVES]
            out += [f"topic readwrite {p}/gateway/{gid}/status", ""]
        for name, sites in self.dutyrooms.items():
            out.append(f"user dutyroom-{name}")
            for s in sites:
                out += [f"topic read {p}/{s}/#"]
                out += [f"topic write {p}/{s}/{leaf}" for leaf in ACK_LEAVES]
            out += [f"topic read {p}/gateway/+/status", ""]
        for name, sites in self.viewers.items():
            out.append(f"user viewer-{name}")
            out += [f"topic read {p}/{s}/#" for s in sites]
            out += [f"topic read {p}/gateway/+/status", ""]
        return "\n".join(out)


@dataclass(frozen=True)
class BrokerFiles:
    """What :func:`write_broker_config` made, and where."""

    dir: Path
    conf: Path
    ca: Issued
    server: Issued

    def password(self, user: str) -> str:
        """A user's broker password."""
        return (self.dir / "credentials" / f"{user}.password").read_text().strip()

    def client(self, user: str) -> Issued:
        """A user's client certificate and key."""
        return Issued(self.dir / "clients" / f"{user}.pem", self.dir / "clients" / f"{user}.key")


def write_broker_config(
    out: str | os.PathLike[str],
    accounts: Accounts,
    *,
    port: int = 8883,
    bind: str = "0.0.0.0",
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    ca_dir: str | os.PathLike[str] | None = None,
    rotate: Iterable[str] = (),
    extra: str = "",
) -> BrokerFiles:
    """Write (or update) the broker's files in ``out``; keep passwords and certificates.

    ``ca_dir``: where the CA lives (default ``out``; tests share one per session).
    ``rotate``: users whose password and client certificate are made anew. ``extra``:
    lines appended to mosquitto.conf (persistence, logging). GatewayError names a user to
    rotate that has no account, before anything is written.
    """
    rotate = list(rotate)
    accounts.check_users(rotate, "--rotate")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = ensure_ca(ca_dir or d)
    server = Issued(d / "broker.pem", d / "broker.key")
    if not (server.cert.exists() and server.key.exists()):
        server = issue(ca, server.cert, server.key, hosts[0], server_names=hosts)
    files = BrokerFiles(d, d / "mosquitto.conf", ca, server)
    ensure_users(d, ca, accounts.users(), rotate)
    lines = [f"{user}:{password_hash(files.password(user))}" for user in accounts.users()]
    write_private(d / "passwd", "\n".join(lines) + "\n")
    write_private(d / "acl", accounts.acl() + "\n")
    files.conf.write_text(
        "# written by campusguard broker-config (see gateway/README.md, Security)\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"password_file {d / 'passwd'}\n"
        f"acl_file {d / 'acl'}\n"
        f"max_packet_size {MAX_PACKET_SIZE}\n"
        f"listener {port} {bind}\n"
        f"cafile {ca.cert}\n"
        f"certfile {server.cert}\n"
        f"keyfile {server.key}\n"
        "tls_version tlsv1.2\n"
        "require_certificate true\n"
        "use_identity_as_username false\n"
        "use_username_as_clientid true\n" + extra
    )
    return files


def ensure_users(d: Path, ca: Issued, users: Iterable[str], rotate: Iterable[str] = ()) -> None:
    """Each user's password and client certificate in ``d``: kept, or made anew.

    ``credentials/<user>.password`` (0600) and ``clients/<user>.pem``/``.key`` are made
    when missing or when the user is in ``rotate``. The same files serve a Mosquitto
    broker and a NATS cluster (gateway/security/cluster.py).
    """
    renew = set(rotate)
    for user in users:
        secret = d / "credentials" / f"{user}.password"
        if user in renew or not secret.exists():
            secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if secret.exists():
                secret.unlink()
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        cert = Issued(d / "clients" / f"{user}.pem", d / "clients" / f"{user}.key")
        if user in renew or not cert.cert.exists():
            issue(ca, cert.cert, cert.key, user)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600) in one rename: never half a file, never readable."""
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
