"""``campusguard report``: the monthly statistics per site and the daily duty log.

The figures are gateway/dutyroom/report.py's (``--deliver``: gateway/dutyroom/delivery.py);
this reads the command line, writes the report where it is asked to, and maps a problem
to one line: exit status 2 for a usage, register or journal problem, 1 when the delivery
folder cannot be written or a report is too large for the broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import tzinfo
from pathlib import Path

from gateway.core.config import Config, load_config
from gateway.core.errors import GatewayError, ReportError
from gateway.dutyroom.report import (
    FORMATS,
    check_day,
    check_month,
    default_db,
    make_report,
    render,
    report_period,
)
from gateway.watch.shifts import zone


def _month(text: str) -> str:
    try:
        return check_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day(text: str) -> str:
    try:
        return check_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``campusguard report``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--month", type=_month, metavar="YYYY-MM", help="monthly statistics")
    which.add_argument("--day", type=_day, metavar="YYYY-MM-DD", help="the daily duty log")
    which.add_argument(
        "--period",
        nargs="?",
        const="due",
        metavar="YYYY-MM",
        help="the report due on the 30th of YYYY-MM (February: its last day), covering the "
        "30th of the month before to the 29th; alone: the latest one due",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the gateway's journal (default $STATE_DIRECTORY/gateway.db, else var/gateway.db)",
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (md)")
    parser.add_argument(
        "--config", metavar="PATH", help="boards.yaml, for site names and unit places"
    )
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="the schools' time zone, e.g. Asia/Shanghai (default: --config's gateway.timezone,"
        " else local)",
    )
    parser.add_argument("--site", metavar="ID", help="only this site")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    parser.add_argument(
        "--deliver",
        metavar="DIR",
        help="with --period and --config: write every format to DIR and queue the report, "
        "retained, on <prefix>/<site>/report/<YYYY-MM> in the journal's outbox (the gateway "
        "publishes it)",
    )
    parser.add_argument(
        "--keydir",
        type=Path,
        help="with --deliver: the gateway's signing key (default: systemd's credentials, "
        "else keys/)",
    )
    parser.add_argument("--prefix", default="campusguard", help="with --deliver: MQTT prefix")


def run(args: argparse.Namespace) -> int:
    """Make the report asked for; 0 on success, 2 with a message for a usage problem."""
    try:
        config = load_config(args.config) if args.config else None
        tz = zone(args.tz or (config.timezone if config else None))
        db = Path(args.db) if args.db else default_db()
        period = None if args.period is None else report_period(args.period, tz, time.time())
        if args.deliver:
            return _deliver(args, config, db, period, tz)
        data = make_report(
            db, tz, config=config, site=args.site, month=args.month, day=args.day, period=period
        )
    except (ReportError, GatewayError, ValueError) as exc:
        print(f"campusguard report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the delivery folder
        print(f"campusguard report: {exc}", file=sys.stderr)
        return 1
    text = render(data, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _deliver(
    args: argparse.Namespace, config: Config | None, db: Path, period: str | None, tz: tzinfo
) -> int:
    """``--deliver``: the period's report to a folder and to MQTT (gateway/dutyroom/delivery)."""
    from gateway.core.credentials import unit_keydir
    from gateway.dutyroom.delivery import deliver

    if period is None or config is None:
        raise ReportError("--deliver needs --period and --config")
    done = deliver(
        db,
        config,
        period,
        tz,
        Path(args.deliver),
        keydir=unit_keydir(args.keydir),
        prefix=args.prefix,
        now=time.time(),
    )
    for path in done.files:
        print(f"wrote {path}")
    for topic in done.topics:
        print(f"queued {topic} (retained)")
    for site in done.too_large:
        print(
            f"campusguard report: site {site}: the report is too large for the broker; "
            f"it is only in {args.deliver}",
            file=sys.stderr,
        )
    return 1 if done.too_large else 0
