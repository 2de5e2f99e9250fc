"""``campusguard gateway``: run the gateway service (serial links to the police)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.arc.wiring import plan_arc
from gateway.cli.brokeroptions import add_broker_options, broker_settings
from gateway.core.clock import Clock, ScaledClock, SystemClock
from gateway.core.config import Link, load_config
from gateway.core.credentials import unit_keydir
from gateway.core.errors import GatewayError, UsageError
from gateway.journal.store import RETENTION_DAYS, default_db_path
from gateway.service.assembly import Settings
from gateway.service.serve import serve

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115200


def parse_serial(specs: list[str]) -> dict[str, Link]:
    """``PORT[@BAUD]`` options -> links ``serial0``, ``serial1``, ..."""
    links: dict[str, Link] = {}
    for i, spec in enumerate(specs):
        port, sep, baud_text = spec.rpartition("@")
        if not sep:
            port, baud_text = spec, str(DEFAULT_BAUD)
        if not port or not baud_text.isdigit() or not 1200 <= int(baud_text) <= 921600:
            raise GatewayError(f"--serial {spec!r}: use PORT or PORT@BAUD (1200..921600)")
        links[f"serial{i}"] = Link(f"serial{i}", port, int(baud_text))
    return links


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("--config", default="boards.yaml", help="the register (boards.yaml)")
    parser.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="PORT[@BAUD]",
        help=f"a serial link (repeatable; replaces boards.yaml's links; baud {DEFAULT_BAUD})",
    )
    add_broker_options(parser)
    parser.add_argument(
        "--db", type=Path, help="journal database (default $STATE_DIRECTORY/gateway.db or var/)"
    )
    parser.add_argument(
        "--keydir",
        type=Path,
        help="unit keys, the gateway's signing key, duty-room public keys (default:"
        " systemd's credentials $CREDENTIALS_DIRECTORY/keys_<file>, else keys/)",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=RETENTION_DAYS,
        metavar="DAYS",
        help="frames and delivered messages older than this are deleted from the journal "
        "(they carry owners' phone numbers); incidents and events stay",
    )
    parser.add_argument(
        "--arc",
        action="append",
        default=[],
        metavar="dc09+tcp://ACCOUNT@HOST:PORT",
        help="an alarm receiving centre's SIA DC-09 receiver (repeatable, primary first; "
        "replaces boards.yaml's arc receivers; ACCOUNT for sites without one)",
    )
    parser.add_argument(
        "--arc-key-file",
        type=Path,
        metavar="FILE",
        help="the DC-09 AES key for a single --arc: 16/24/32 characters or 32/48/64 hex "
        "digits (default: dc09-<receiver>.key in the key directory)",
    )
    parser.add_argument(
        "--arc-key-format",
        choices=("auto", "text", "hex"),
        default="auto",
        help="how --arc-key-file holds the key (auto: 32 hex digits are ambiguous)",
    )
    parser.add_argument("--clock-speed", type=float, default=1.0, help=argparse.SUPPRESS)
    # bench/e2e.py: every journal fsync also takes LOW..HIGH ms (a Pi's SD card)
    parser.add_argument("--fsync-delay-ms", metavar="LOW:HIGH", help=argparse.SUPPRESS)


def settings_from(args: argparse.Namespace) -> Settings:
    """Options -> :class:`Settings` (raises GatewayError on a bad option)."""
    broker, *more = broker_settings(args)
    if not args.retention_days > 0:
        raise UsageError(f"--retention-days {args.retention_days:g}: give a number of days > 0")
    clock: Clock = ScaledClock(args.clock_speed) if args.clock_speed != 1.0 else SystemClock()
    return Settings(
        db_path=args.db or default_db_path(),
        keydir=unit_keydir(args.keydir),
        broker=broker,
        links=parse_serial(args.serial) if args.serial else None,
        prefix=args.prefix,
        clock=clock,
        more_brokers=tuple(more),
        retention_days=args.retention_days,
        fsync=_fsync(args.fsync_delay_ms),
    )


def _fsync(delay_ms: str | None) -> Callable[[int], None]:
    """os.fsync, or for the bench's ``--fsync-delay-ms LOW:HIGH`` a slower one."""
    if not delay_ms:
        return os.fsync
    from gateway.sim.fleet import slow_fsync  # the simulation, only when asked for

    low, _, high = delay_ms.partition(":")
    try:
        lo, hi = float(low), float(high or low)
    except ValueError:
        raise UsageError(f"--fsync-delay-ms {delay_ms}: give LOW:HIGH in ms") from None
    if not 0 <= lo <= hi:
        raise UsageError(f"--fsync-delay-ms {delay_ms}: give 0 <= LOW <= HIGH")
    return slow_fsync(lo, hi)


def run(args: argparse.Namespace) -> int:
    """Run the service; 2 on a configuration error, 1 if it fails."""
    try:
        config = load_config(args.config)
        settings = settings_from(args)
        arc = plan_arc(config, settings.keydir, args.arc, args.arc_key_file, args.arc_key_format)
        settings = dataclasses.replace(settings, arc=arc)
    except GatewayError as exc:
        print(f"campusguard gateway: {exc}", file=sys.stderr)
        return 2
    status = 0
    try:
        asyncio.run(serve(config, settings))
    except* GatewayError as group:  # from the constructor, or a task of the TaskGroup
        for problem in _leaves(group):
            print(f"campusguard gateway: {problem}", file=sys.stderr)
        status = 1
    return status


def _leaves(group: BaseExceptionGroup[GatewayError]) -> list[BaseException]:
    """The errors in a group of (nested) task groups, one line each."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
