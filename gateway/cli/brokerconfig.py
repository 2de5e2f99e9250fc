"""``campusguard broker-config``: Mosquitto locked down for this register (TLS, ACL, users).

Writes into ``--out`` (default ``broker/``): ``mosquitto.conf`` (include it, or start
``mosquitto -c``), ``passwd``, ``acl``, the private CA (``ca.pem``, ``ca.key``), the
broker's certificate, and per user ``credentials/<user>.password`` and
``clients/<user>.pem``/``.key`` to hand to that client. Run it again after a change in
boards.yaml or the duty rooms: passwords and certificates are kept unless ``--rotate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.core.config import load_config
from gateway.core.errors import GatewayError, KeyFileError
from gateway.security.brokerconfig import Accounts, write_broker_config
from gateway.security.signkeys import check_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard broker-config``."""
    parser.add_argument("--config", default="boards.yaml", help="the register")
    parser.add_argument("--out", type=Path, default=Path("broker"), help="output folder")
    parser.add_argument(
        "--dutyroom",
        action="append",
        default=[],
        metavar="NAME[=SITE,...]",
        help="a duty room's broker account (default: every site); repeatable",
    )
    parser.add_argument(
        "--viewer",
        action="append",
        default=[],
        metavar="NAME[=SITE,...]",
        help="a read-only account (default: every site); repeatable",
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or address clients use for the broker (repeatable; default localhost"
        " and 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=8883, help="TLS listener port")
    parser.add_argument("--bind", default="0.0.0.0", help="listen address")
    parser.add_argument("--prefix", default="campusguard", help="MQTT topic prefix")
    parser.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="USER",
        help="make this user's password and client certificate anew (repeatable)",
    )


def _accounts(specs: list[str], what: str, known_sites: set[str]) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for spec in specs:
        name, _, sites_text = spec.partition("=")
        check_name(name, what)
        sites = [s for s in sites_text.split(",") if s] or None
        unknown = set(sites or ()) - known_sites
        if unknown:
            raise GatewayError(f"{what} {spec!r}: unknown site(s) {', '.join(sorted(unknown))}")
        out[name] = sites
    return out


def run(args: argparse.Namespace) -> int:
    """Write the broker's files; 2 on a usage or configuration error."""
    try:
        config = load_config(args.config)
        sites = {config.site, *(u.site for u in config.units.values())}
        if not args.dutyroom:
            raise GatewayError("name at least one --dutyroom: nobody could acknowledge")
        accounts = Accounts.from_config(
            config,
            dutyrooms=_accounts(args.dutyroom, "--dutyroom", sites),
            viewers=_accounts(args.viewer, "--viewer", sites),
            prefix=args.prefix,
        )
        files = write_broker_config(
            args.out,
            accounts,
            port=args.port,
            bind=args.bind,
            hosts=args.host or ("localhost", "127.0.0.1"),
            rotate=args.rotate,
        )
    except (GatewayError, KeyFileError, OSError, ValueError) as exc:
        print(f"campusguard broker-config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {files.conf} (users: {', '.join(accounts.users())})")
    print(f"hand each client its credentials/<user>.password, clients/<user>.* and {files.ca.cert}")
    return 0
