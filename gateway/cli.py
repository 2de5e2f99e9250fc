"""The ``campusguard`` console command: one subcommand per module, imported on use.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.cmd_gateway", "run the gateway service: serial links to the police"),
    "console": ("gateway.console", "the police duty-room view: live alarms, acknowledge"),
    "deploy": ("gateway.deploy", "flash a unit with its config and key (mpremote)"),
    "keygen": ("gateway.cmd_keygen", "make a new key for a unit"),
    "report": ("gateway.report", "monthly statistics and the daily duty log"),
    "demo": ("gateway.demo", "the whole path on this machine: units, gateway, broker, police"),
    "decode": ("gateway.cmd_decode", "decode frames (hex or wire bytes) with the gateway codec"),
    "test-mode": ("gateway.cmd_testmode", "put a unit or a site in test mode for a while"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; return its exit status."""
    parser = argparse.ArgumentParser(prog="campusguard", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    # only the chosen subcommand's module is imported, so `campusguard report` does not
    # pay for the gateway's MQTT and serial imports
    chosen = next((a for a in argv if a in COMMANDS), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    args = parser.parse_args(argv)
    assert module is not None  # parse_args exits unless a command was given
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
