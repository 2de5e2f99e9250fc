"""``campusguard demo``: the whole path on this machine, as a police duty room would see it.

The demo is gateway/sim/demo.py (``--city``: gateway/sim/citydemo.py; ``--serve``:
gateway/sim/demoserve.py); this reads the command line, prints the summary (``--json``:
one JSON object on stdout, progress on stderr) and maps the outcome to an exit status:
0 if nothing was lost and every check held, 1 otherwise, 2 on a bad option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from gateway.cli.brokeroptions import add_broker_options, broker_settings
from gateway.core.errors import GatewayError
from gateway.sim.citydemo import run_city
from gateway.sim.demo import SPEED, DemoOptions, failed_checks, run_demo, summary_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("--units", type=int, default=10, help="virtual units (default 10)")
    parser.add_argument("--links", type=int, default=2, help="links they share (default 2)")
    parser.add_argument("--presses", type=int, default=20, help="alarm presses (default 20)")
    add_broker_options(parser, "a private Mosquitto")
    parser.add_argument("--loss", type=float, default=0.0, help="frame loss on every link, 0..1")
    parser.add_argument("--seed", type=int, default=1, help="seed of the link impairment")
    parser.add_argument(
        "--provision",
        choices=("fast", "mpremote"),
        default="fast",
        help="write unit folders directly (fast) or deploy each through mpremote",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=SPEED,
        help="the gateway's clock runs this many times faster than real time (default "
        f"{SPEED:.0f}: a missed check-in walks its ladder in seconds); 1: real time, presses "
        "only, with every timestamp checked",
    )
    parser.add_argument("--keep", type=Path, help="keep the fleet's folder here (journal, logs)")
    parser.add_argument(
        "--arc",
        action="append",
        default=[],
        metavar="dc09+tcp://ACCOUNT@HOST:PORT",
        help="also report to an alarm receiving centre over SIA DC-09 (repeatable, primary "
        "first; timestamps from the real clock although the demo's runs faster)",
    )
    parser.add_argument(
        "--arc-key-file", type=Path, metavar="FILE", help="the AES key for a single --arc"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (progress to stderr)"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the school running with the web duty room (nobody acks but you) until"
        " Ctrl-C; prints its address and a login for this run",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8443", metavar="HOST:PORT", help="with --serve"
    )
    parser.add_argument(
        "--city",
        action="store_true",
        help="the city instead: three schools on a three-node NATS cluster, two police"
        " stations, a node killed in the middle (cluster/README.md)",
    )


def options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options from the command line (GatewayError names a bad one)."""
    return DemoOptions(
        units=args.units,
        links=args.links,
        presses=args.presses,
        # --serve and --city run their own brokers: only the school demo reads --broker
        brokers=None if args.broker is None or args.serve or args.city else broker_settings(args),
        prefix=args.prefix,
        loss=args.loss,
        seed=args.seed,
        provision=args.provision,
        speed=args.speed,
        keep=args.keep,
        arc=tuple(args.arc),
        arc_key_file=args.arc_key_file,
        listen=args.listen,
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; with ``--json`` one JSON object on stdout. 0 if nothing was lost."""
    out = sys.stderr if args.json else sys.stdout
    if not getattr(args, "verbose", 0):
        logging.getLogger("gateway").setLevel(logging.ERROR)  # the screen says it all
    if args.serve:
        from gateway.sim.demoserve import serve  # needs the [dutyroom] extra

        try:
            return asyncio.run(serve(options(args), out))
        except GatewayError as exc:
            print(f"campusguard demo: {exc}", file=sys.stderr)
            return 2
    if args.city:
        try:
            city = asyncio.run(run_city(args.keep, out))
        except GatewayError as exc:
            print(f"campusguard demo: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(city))
        return 0 if city["lost"] == 0 else 1
    try:
        summary = asyncio.run(run_demo(options(args), out))
    except GatewayError as exc:
        print(f"campusguard demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(summary_lines(summary)))
    return 0 if summary["lost"] == 0 and not failed_checks(summary) else 1
