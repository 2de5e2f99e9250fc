"""One running web duty room: database, broker intake, HTTPS listener, re-alert timer.

    async with DutyRoomServer(options) as server:     # listening, intake running
        print(server.url)                              # https://127.0.0.1:PORT/
        server.add_account("li", "Officer Li", "operator", password)

Used by ``campusguard dutyroom`` (:func:`serve`, until SIGINT/SIGTERM), ``campusguard demo
--serve``, the browser tests and bench/dutyroom.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from types import TracebackType

from aiohttp import web

from gateway.core.broker import BrokerSettings
from gateway.core.errors import GatewayError, UsageError
from gateway.dutyroom.web.app import DutyRoomApp
from gateway.dutyroom.web.auth import Auth
from gateway.dutyroom.web.db import DutyDb
from gateway.dutyroom.web.room import Room
from gateway.security.envelope import Signer
from gateway.security.pki import Issued, ensure_ca, issue
from gateway.security.signkeys import gateway_keys

log = logging.getLogger(__name__)
STOP_WAIT_S = 15.0  # aiomqtt gives up leaving a broker after 10 s


@dataclass
class Options:
    """What a duty room needs to run."""

    brokers: Sequence[BrokerSettings]
    db: Path
    keydir: Path
    signer: Signer | None
    tls_cert: Path
    tls_key: Path
    host: str = "127.0.0.1"
    port: int = 8443
    prefix: str = "campusguard"
    sites: Sequence[str] = ("+",)
    realert_s: float = 60.0
    tz: tzinfo | None = None
    now: Callable[[], float] = field(default=time.time)
    # the gateways' time, for the board, acks and timelines (default: now); sessions and
    # logins always run on ``now``
    gateway_clock: Callable[[], float] | None = None


def server_certificate(ca_dir: Path, out_dir: Path, names: Sequence[str]) -> Issued:
    """A server certificate from the project's private CA (made if there is none)."""
    ca = ensure_ca(ca_dir)
    return issue(
        ca,
        out_dir / "dutyroom-web.pem",
        out_dir / "dutyroom-web.key",
        "dutyroom-web",
        server_names=list(names),
    )


def tls_files(
    cert: Path | None, key: Path | None, *, ca_dir: Path, out_dir: Path, names: Sequence[str]
) -> tuple[Path, Path]:
    """The HTTPS certificate and key: those given, or issued by the private CA in ``ca_dir``.

    Issued (made if missing) into ``out_dir`` for ``names``, when neither is given;
    :class:`UsageError` when only one of the two is.
    """
    if cert is None:
        if key is not None:
            raise UsageError("--tls-key needs --tls-cert")
        issued = server_certificate(ca_dir, out_dir, sorted(set(names)))
        return issued.cert, issued.key
    if key is None:
        raise UsageError("--tls-cert needs --tls-key")
    return cert, key


def add_account(options: Options, name: str, role: str, display: str, password: str) -> None:
    """Create or reset an account in the duty room's database, audited (ValueError if unusable).

    The server need not run: an account is made before the first start.
    """
    db = DutyDb(options.db)
    try:
        Auth(db, options.now).add_account(name, display, role, password)
        db.audit(options.now(), "cli", "account", name, role)
    finally:
        with contextlib.suppress(Exception):
            db.close()


async def serve(options: Options, announce: Callable[[str], None]) -> int:
    """Serve until SIGINT/SIGTERM; ``announce`` the address once listening.

    Returns the shell's status for the signal (130 SIGINT, 143 SIGTERM).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[int] = []

    def stopped(sig: signal.Signals) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped, sig)
    async with DutyRoomServer(options) as server:
        announce(server.url)
        await stop.wait()
    return 128 + got[0] if got else 0


class DutyRoomServer:
    """The duty room, serving HTTPS, as an async context manager."""

    def __init__(self, options: Options) -> None:
        """Open the database and check the keys; nothing listens until ``start``."""
        self.options = o = options
        trusted = gateway_keys(o.keydir)
        if not trusted:
            raise GatewayError(
                f"--keydir {o.keydir}: no gateway public key (gateway-<id>.pub): nothing"
                " could be shown"
            )
        try:
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(o.tls_cert, o.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise GatewayError(f"--tls-cert {o.tls_cert}: not usable ({exc})") from None
        self.db = DutyDb(o.db)
        self.auth = Auth(self.db, o.now)
        self.room = Room(
            self.db,
            o.brokers,
            trusted,
            o.signer,
            prefix=o.prefix,
            sites=o.sites,
            now=o.gateway_clock or o.now,
            realert_s=o.realert_s,
        )
        self.web = DutyRoomApp(self.room, self.auth, tz=o.tz)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = o.port

    @property
    def url(self) -> str:
        """Where browsers go."""
        return f"https://{self.options.host}:{self.port}/"

    def add_account(self, name: str, display: str, role: str, password: str) -> None:
        """Create or reset an account (ValueError if unusable)."""
        self.auth.add_account(name, display, role, password)
        self.db.audit(self.options.now(), "cli", "account", name, role)

    async def start(self) -> None:
        """Listen and start the intake."""
        self._runner = web.AppRunner(
            self.web.app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        try:
            sock = socket.create_server((self.options.host, self.options.port), reuse_port=False)
        except OSError as exc:
            await self._runner.cleanup()
            raise GatewayError(
                f"--listen {self.options.host}:{self.options.port}: {exc.strerror or exc}"
            ) from None
        self.port = int(sock.getsockname()[1])  # 0 asks for a free one
        await web.SockSite(self._runner, sock, ssl_context=self.ssl).start()
        self._tasks = [asyncio.create_task(self.room.realert_loop(), name="dutyroom-realert")]
        if self.options.brokers:  # none: fed by hand (tests of the web side alone)
            self._tasks.append(asyncio.create_task(self.room.run(), name="dutyroom-intake"))

    async def stop(self) -> None:
        """Stop listening, leave the broker, close the database."""
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # bounded: a stop must not hang on a broker that does not answer the goodbye
            done, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.error("duty room: %s had failed: %s", t.get_name(), t.exception())
            for t in pending:
                log.error(
                    "duty room: %s did not stop within %g s; leaving it", t.get_name(), STOP_WAIT_S
                )
        self._tasks = []
        self.web.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.db.close()

    async def __aenter__(self) -> DutyRoomServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def failed(self) -> BaseException | None:
        """What ended a background task unasked (None while all run)."""
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None
