"""``campusguard dutyroom``: the police duty room as a web application (HTTPS).

It takes everything from MQTT (each gateway's retained register, open incidents, unit and
post states, events, reports) and keeps its own SQLite (``--db``): history, accounts and
the audit log. Operators log in with accounts made here (``--add-account``); acks are
signed with the duty room's key (``dutyroom-<name>.pem`` in ``--keydir``) in the
operator's name. The certificate comes from ``--tls-cert``/``--tls-key``, or is issued
by the project's private CA in ``--ca-dir`` (made if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.brokeroptions import add_broker_options, broker_settings
from gateway.core.errors import GatewayError, UsageError
from gateway.dutyroom.console import dutyroom_signer, signer_file, zone_of
from gateway.security.envelope import Signer

if TYPE_CHECKING:
    from gateway.dutyroom.web.server import Options

DEFAULT_LISTEN = "127.0.0.1:8443"
PASSWORD_ENV = "CAMPUSGUARD_DUTYROOM_PASSWORD"


def default_db() -> Path:
    """``$STATE_DIRECTORY/dutyroom.db`` under systemd, else ``var/dutyroom.db``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "dutyroom.db"
    return Path("var") / "dutyroom.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    add_broker_options(parser)
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT")
    parser.add_argument(
        "--db",
        type=Path,
        help="the duty room's database (default: $STATE_DIRECTORY/dutyroom.db"
        " under systemd, else var/dutyroom.db)",
    )
    parser.add_argument(
        "--keydir",
        default="keys",
        help="dutyroom-<name>.pem (signs acks) and gateway-<id>.pub (the gateways trusted)",
    )
    parser.add_argument("--dutyroom", metavar="NAME", help="whose key signs: dutyroom-NAME.pem")
    parser.add_argument(
        "--signing-key",
        type=Path,
        metavar="PEM",
        help="the duty room's signing key dutyroom-<name>.pem elsewhere than --keydir"
        " (a systemd credential)",
    )
    parser.add_argument(
        "--site", action="append", help="a site id to show; repeat (default: every site)"
    )
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="the HTTPS certificate")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="its key")
    parser.add_argument(
        "--ca-dir",
        type=Path,
        help="without --tls-cert: issue one from the private CA here (made if missing),"
        " next to --db",
    )
    parser.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="a host name browsers use, for the issued certificate; repeat",
    )
    parser.add_argument(
        "--realert-s", type=float, default=60.0, help="re-alert an alarm unacknowledged this long"
    )
    parser.add_argument("--tz", help="show times in this zone (default: the system's)")
    parser.add_argument(
        "--add-account",
        nargs=3,
        metavar=("NAME", "ROLE", "DISPLAY"),
        help="create or reset an account (role operator|supervisor|viewer) and exit; the"
        f" password comes from ${PASSWORD_ENV}, else a new one is printed",
    )


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def options(args: argparse.Namespace) -> Options:
    """The server's options from the command line (UsageError names a bad one)."""
    try:
        from gateway.dutyroom.web.server import Options, tls_files
    except ImportError as exc:  # the [dutyroom] extra is not installed
        raise UsageError(
            f"the web duty room needs aiohttp and argon2-cffi ({exc.name} is missing):"
            " pip install 'campusguard[dutyroom]'"
        ) from None
    host, port = _listen(args.listen)
    db = args.db or default_db()
    cert, key = tls_files(
        args.tls_cert,
        args.tls_key,
        ca_dir=args.ca_dir or db.parent / "ca",
        out_dir=db.parent,
        names=[*args.server_name, host, "localhost", "127.0.0.1"],
    )
    return Options(
        brokers=broker_settings(args),
        db=db,
        keydir=Path(args.keydir),
        signer=_signer(args),
        tls_cert=cert,
        tls_key=key,
        host=host,
        port=port,
        prefix=args.prefix,
        sites=args.site or ["+"],
        realert_s=args.realert_s,
        tz=zone_of(args.tz),
    )


def _signer(args: argparse.Namespace) -> Signer | None:
    path: Path | None = args.signing_key
    if path is None:
        return dutyroom_signer(args.keydir, args.dutyroom)
    return signer_file(path)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit 2 on a usage or key error."""
    try:
        opts = options(args)
        if args.add_account:
            return _add_account(opts, *args.add_account)
        from gateway.dutyroom.web.server import serve

        return asyncio.run(serve(opts, lambda url: print(f"duty room: {url}", flush=True)))
    except GatewayError as exc:
        print(f"campusguard dutyroom: {exc}", file=sys.stderr)
        return 2


def _add_account(opts: Options, name: str, role: str, display: str) -> int:
    from gateway.dutyroom.web.server import add_account

    password = os.environ.get(PASSWORD_ENV)
    made = password is None
    password = password or secrets.token_urlsafe(12)
    try:
        add_account(opts, name, role, display, password)
    except ValueError as exc:
        print(f"campusguard dutyroom: {exc}", file=sys.stderr)
        return 2
    print(f"account {name} ({role}) saved in {opts.db}")
    if made:
        print(f"password: {password}")
    return 0
