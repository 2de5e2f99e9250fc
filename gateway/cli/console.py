"""``campusguard console``: the police duty room's view of live alarms, and the ack.

The console is gateway/dutyroom/console.py; this reads the command line and maps the
outcome to an exit status: 2 on a bad option or key, 130/143 when stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.cli.brokeroptions import add_broker_options, broker_settings
from gateway.core.errors import GatewayError
from gateway.dutyroom.console import Console, ConsoleOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    add_broker_options(parser)
    parser.add_argument(
        "--keydir",
        default="keys",
        help="the duty room's keys: dutyroom-<name>.pem (signs acks), gateway-<id>.pub"
        " (the gateways trusted)",
    )
    parser.add_argument(
        "--dutyroom",
        metavar="NAME",
        help="whose key signs acks: dutyroom-NAME.pem (default: the only one in --keydir)",
    )
    parser.add_argument("--site", default="+", help="one site id (default: every site)")
    parser.add_argument("--by", default="duty-room", help="who acknowledges (sent with the ack)")
    parser.add_argument(
        "--ack-after", type=int, metavar="MS", help="acknowledge every new incident after MS ms"
    )
    parser.add_argument(
        "--tz", help="show times in this zone, e.g. Asia/Shanghai (default: the system's)"
    )
    parser.add_argument("--once", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON line per message")


def options(args: argparse.Namespace) -> ConsoleOptions:
    """The console's options from the command line (GatewayError names a bad one)."""
    return ConsoleOptions(
        brokers=broker_settings(args),
        keydir=args.keydir,
        dutyroom=args.dutyroom,
        prefix=args.prefix,
        site=args.site,
        by=args.by,
        ack_after=args.ack_after,
        tz=args.tz,
        once=args.once,
        json=args.json,
    )


def run(args: argparse.Namespace) -> int:
    """Run the console until interrupted (or ``--once`` messages)."""
    try:
        console = Console(options(args))
    except GatewayError as exc:
        print(f"campusguard console: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(console.run())
    except KeyboardInterrupt:  # before the console's own handlers are installed
        return 130
    if console.stopped_by is not None:
        return 128 + console.stopped_by  # the shell's convention: 130 SIGINT, 143 SIGTERM
    return 0
