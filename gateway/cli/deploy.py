"""``campusguard deploy UNIT --port PORT``: put the firmware, config and key on a unit.

The steps are gateway/flashing/deploy.py's; this reads the command line, says what was
done in one line, and maps a failure to one line and exit status 1 (a usage, register or
key error is 2, by gateway/cli/main.py).
"""

from __future__ import annotations

import argparse
import sys

from gateway.core.errors import GatewayError
from gateway.flashing.deploy import Mpremote, deploy
from gateway.flashing.unitfiles import ROMFS_IMAGE, mpremote_exe, unit_to_flash


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard deploy``."""
    parser.add_argument("unit", help="unit id from boards.yaml")
    parser.add_argument("--port", required=True, help="serial port of the unit (mpremote)")
    parser.add_argument("--config", default="boards.yaml", help="the register (boards.yaml)")
    parser.add_argument("--keydir", default="keys", help="directory of <unit>.key files")
    parser.add_argument(
        "--unix-port",
        action="store_true",
        help="the unit is the MicroPython unix port (virtual board): 'resume', no reset",
    )
    parser.add_argument(
        "--mpremote", default=None, help="mpremote executable (default: next to python)"
    )
    parser.add_argument(
        "--config-only",
        action="store_true",
        help="the firmware is frozen or on ROMFS: write main.py, config and key only",
    )
    parser.add_argument(
        "--romfs",
        action="store_true",
        help="modules on the ROMFS partition (mpremote romfs deploy; a virtual board: "
        f"the file {ROMFS_IMAGE}), then main.py, config and key",
    )


def _mpremote_exe(given: str | None) -> str:
    return given or mpremote_exe()


def run(args: argparse.Namespace) -> int:
    """Deploy one unit; exit status 0, 2 on a usage or register error, else 1 with one line."""
    target = unit_to_flash(args.config, args.unit, args.keydir)
    unit = target.unit
    try:
        files = deploy(
            unit,
            target.key,
            Mpremote(args.mpremote or mpremote_exe(), args.port, args.unix_port),
            code=not args.config_only,
            romfs=args.romfs,
            baud=target.baud,
        )
    except GatewayError as exc:
        print(f"campusguard deploy: {exc}", file=sys.stderr)
        return 1
    print(f"deployed {unit.id} (addr {unit.addr}) to {args.port}: {len(files)} files verified")
    if args.unix_port:
        print("virtual board: restart its process to run the new firmware")
    return 0
