"""``campusguard unit UNIT --uart PTY``: a virtual alarm unit for people.

The real firmware for UNIT (``firmware/``, configured from boards.yaml and keyed from the
key directory, as ``campusguard deploy`` would) runs on the MicroPython unix port (the
``[sim]`` extra; that binary is built for x86-64 only, so not on a Pi). Its UART is the
pty given by ``--uart`` (one end of a pty pair; the gateway opens the other end, see
firmware/README.md). Control commands are read from stdin, one per line, as the virtual
board's control channel takes them (``button 1``, ``button 0``, ``checkin 1``,
``tamper 1``, ``mains 0``, ``battery 3300``, ``sounder 0``, ``test``); every change of
the LED and the buzzer is printed. The unit's flash is a folder (``--flash``, default
``units/<UNIT>``): its boot epoch and pending alarms survive a restart, as on a real
unit. A watchdog reset or a crash restarts the firmware (the reset circuit); Ctrl-C stops
it for maintenance as mpremote's Ctrl-C stops a real unit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from gateway.core.errors import GatewayError, UsageError, VirtualUnitError
from gateway.flashing.unitfiles import unit_to_flash
from gateway.sim.unitrunner import UnitRunner, prepare, say
from gateway.sim.vboard import DEFAULT_HEAPSIZE, find_micropython


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard unit``."""
    parser.add_argument("unit", help="unit id from boards.yaml")
    parser.add_argument(
        "--uart", required=True, metavar="PTY", help="the unit's UART: one end of a pty pair"
    )
    parser.add_argument("--config", default="boards.yaml", help="the register (boards.yaml)")
    parser.add_argument("--keydir", default="keys", help="directory of <unit>.key files")
    parser.add_argument(
        "--flash", type=Path, help="the unit's flash: a folder (default: units/<UNIT>)"
    )
    parser.add_argument(
        "--heapsize", default=DEFAULT_HEAPSIZE, help="MicroPython heap (-X heapsize)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the unit until Ctrl-C; exit 0, 2 on a usage or register error, 1 on failure."""
    target = unit_to_flash(args.config, args.unit, args.keydir)
    unit = target.unit
    if not os.path.exists(args.uart):
        raise UsageError(
            f"--uart {args.uart}: no such pty (make a pair first: socat -d -d "
            "pty,raw,echo=0,link=/tmp/cg-unit pty,raw,echo=0,link=/tmp/cg-gw)"
        )
    flash: Path = args.flash or Path("units") / unit.id
    try:
        find_micropython()
        new = prepare(unit, target.key, flash)
    except VirtualUnitError as exc:
        print(f"campusguard unit: {exc}", file=sys.stderr)
        return 1
    except (GatewayError, OSError) as exc:
        print(f"campusguard unit: {flash}: {exc}", file=sys.stderr)
        return 1
    say(
        f"unit {unit.id} (addr {unit.addr}, {unit.kind} {unit.role}) on {args.uart}; "
        f"flash {flash}" + (" (new: it sends its installation TEST)" if new else "")
    )
    return asyncio.run(UnitRunner(flash, args.uart, args.heapsize).run())
