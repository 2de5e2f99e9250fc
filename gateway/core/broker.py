"""Where the broker is and how to log in: the settings every client shares.

``campusguard gateway``, ``console``, ``dutyroom`` and ``demo`` (and any later client)
declare the same broker options (gateway/cli/brokeroptions.py), read by :func:`brokers_from`:

    --broker URL       mqtt://host:port or mqtts://user@host:port; repeatable: the nodes
                       of one broker cluster, tried in order (failover)
    --ca-file PEM      the CA that signed the broker's certificate (mqtts)
    --client-cert PEM  this client's certificate, --client-key PEM its key (mqtts)
    --prefix TEXT      the topic prefix

The password is never an option (it would show in ``ps``): it comes from the URL or from
the environment variable ``CAMPUSGUARD_BROKER_PASSWORD``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urlsplit

from gateway.core.errors import UsageError

PASSWORD_ENV = "CAMPUSGUARD_BROKER_PASSWORD"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PREFIX = "campusguard"
# A client given several nodes of one cluster: keepalive (a subscriber that publishes
# nothing notices a frozen node only by it, within ~2 periods) and the wait for an answer
# to CONNECT or SUBSCRIBE before it tries the next node.
CLUSTER_KEEPALIVE_S = 2
CLUSTER_TIMEOUT_S = 5.0


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
        """``mqtt://host[:1883]`` or ``mqtts://[user[:pass]@]host[:8883]``.

        Raises :class:`UsageError` for a bad URL, certificates without TLS, and a
        certificate file that cannot be used (named, now rather than at connect).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(f"--broker {url!r}: use mqtt://host:port or mqtts://host:port")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise UsageError(f"--broker {url!r}: {exc}") from None
        files = {k: v for k, v in extra.items() if k in _TLS_FILES and v is not None}
        if files and not tls:
            option = _TLS_FILES[next(iter(files))]
            raise UsageError(f"{option} is for TLS: use --broker mqtts://{parts.netloc}")
        settings = cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=extra.get("ca_file"),
            client_cert=extra.get("client_cert"),
            client_key=extra.get("client_key"),
        )
        settings.tls_context()  # a missing or broken file is an error now, not at connect
        return settings

    @property
    def url(self) -> str:
        """The broker's URL, without the password."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def cli_args(self) -> list[str]:
        """The shared options that name this broker (the password goes by environment)."""
        args = ["--broker", self.url]
        for flag, value in (
            ("--ca-file", self.ca_file),
            ("--client-cert", self.client_cert),
            ("--client-key", self.client_key),
        ):
            if value:
                args += [flag, value]
        return args

    @staticmethod
    def cli_args_of(nodes: Sequence[BrokerSettings]) -> list[str]:
        """The shared options naming every node of one cluster (same CA and certificate)."""
        first, *more = nodes
        args = first.cli_args()
        for node in more:
            args += ["--broker", node.url]
        return args

    def environ(self) -> dict[str, str]:
        """The environment a child client needs for the password (empty without one)."""
        return {PASSWORD_ENV: self.password} if self.password else {}

    def tls_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context, or None for plain TCP.

        Raises :class:`UsageError` naming the option and file that cannot be used.
        """
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(_file_problem("--ca-file", self.ca_file, exc)) from None
        if self.client_cert:
            try:
                ctx.load_cert_chain(self.client_cert, self.client_key)
            except (OSError, ssl.SSLError) as exc:
                cert_or_key = (
                    ("--client-key", self.client_key)
                    if self.client_key and not os.access(self.client_key, os.R_OK)
                    else ("--client-cert", self.client_cert)
                )
                raise UsageError(_file_problem(*cert_or_key, exc)) from None
        return ctx


def keepalive_for(node: BrokerSettings, nodes: int) -> int:
    """The keepalive of a connection to ``node``, one of ``nodes`` nodes given to a client.

    One broker: its own (:attr:`BrokerSettings.keepalive_s`). Several nodes of a cluster:
    at most :data:`CLUSTER_KEEPALIVE_S`, for a client that has nothing to send (an idle
    gateway, a console) notices a frozen node only by its keepalive (no PINGRESP within a
    period after its PINGREQ): with 15 s it would sit there, deaf, for 30-45 s.
    """
    return min(node.keepalive_s, CLUSTER_KEEPALIVE_S) if nodes > 1 else node.keepalive_s


_TLS_FILES = {"ca_file": "--ca-file", "client_cert": "--client-cert", "client_key": "--client-key"}


def _file_problem(option: str, path: str | None, exc: Exception) -> str:
    if not isinstance(exc, ssl.SSLError) and isinstance(exc, OSError) and exc.errno is not None:
        return f"{option} {path}: {os.strerror(exc.errno)}"
    return f"{option} {path}: not a usable PEM file ({exc})"


def brokers_from(
    urls: Sequence[str] | None,
    *,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[BrokerSettings]:
    """The brokers at ``urls`` (default: :data:`DEFAULT_BROKER`), in order.

    :class:`UsageError` names a bad one. Files named by ``ca_file``, ``client_cert`` and
    ``client_key`` must be usable (checked here, so the error names the path rather than
    an SSL failure later). The password comes from a URL, else from ``environ``'s
    :data:`PASSWORD_ENV`.
    """
    env = os.environ if environ is None else environ
    if client_key and not client_cert:
        raise UsageError("--client-key needs --client-cert")
    password = env.get(PASSWORD_ENV) or None
    out = []
    for url in urls or [DEFAULT_BROKER]:
        s = BrokerSettings.from_url(
            url, ca_file=ca_file, client_cert=client_cert, client_key=client_key
        )
        if s.password is None and password is not None:
            s = replace(s, password=password)
        out.append(s)
    return out
