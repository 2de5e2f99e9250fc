"""The ``campusguard`` console command: one subcommand per module, imported on use.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``. A
:class:`~gateway.core.errors.UsageError` or :class:`~gateway.core.errors.ConfigError` from any of
them is one line on stderr and exit status 2; Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from gateway.core.errors import ConfigError, UsageError

DESCRIPTION = (
    "CampusGuard: one-button alarm units around schools, their gateway to the police's "
    "duty room, and the tools to install them. `campusguard COMMAND --help` for each command."
)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.cli.gateway", "run the gateway service: serial links to the police"),
    "console": ("gateway.cli.console", "the police duty-room view: live alarms, acknowledge"),
    "dutyroom": ("gateway.cli.dutyroom", "the police duty room in a browser (HTTPS)"),
    "deploy": ("gateway.cli.deploy", "flash a unit with its config and key (mpremote)"),
    "keygen": (
        "gateway.cli.keygen",
        "make a unit's key, or a gateway's or duty room's signing key",
    ),
    "broker-config": ("gateway.cli.brokerconfig", "Mosquitto locked down: TLS, users, ACL"),
    "cluster-config": (
        "gateway.cli.clusterconfig",
        "the city's NATS cluster from city.yaml: nodes, TLS, accounts, keys",
    ),
    "report": ("gateway.cli.report", "monthly statistics and the daily duty log"),
    "demo": ("gateway.cli.demo", "the whole path on this machine: units, gateway, broker, police"),
    "unit": ("gateway.cli.unit", "a virtual unit: the real firmware on MicroPython, on a pty"),
    "decode": ("gateway.cli.decode", "decode frames (hex or wire bytes) with the gateway codec"),
    "status": ("gateway.cli.status", "per unit and link: last heard, battery, retries, rejects"),
    "backup": ("gateway.cli.backup", "a consistent copy of the live journal (SQLite backup)"),
    "test-mode": ("gateway.cli.testmode", "put a unit or a site in test mode for a while"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless it has no default or names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == []
            or default == argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0
        ):
            return action.help
        return f"{text} (default: %(default)s)"


def version() -> str:
    """The installed distribution's version (``pyproject.toml``)."""
    try:
        return importlib.metadata.version("campusguard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(chosen: str | None) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    """The parser; only the ``chosen`` subcommand's module is imported (returned too)."""
    parser = argparse.ArgumentParser(
        prog="campusguard", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        # -v also after the subcommand: counted apart, added to the one before it
        p.add_argument(
            "-v", "--verbose", dest="sub_verbose", action="count", default=0, help="more log output"
        )
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # only the chosen subcommand's module is imported, so `campusguard report` does not
    # pay for the gateway's MQTT and serial imports
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser, module = build_parser(chosen)
    args = parser.parse_args(argv)
    if module is None:  # parse_args exits unless a command was given
        parser.error("no command")
    verbose = args.verbose + args.sub_verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(module.run(args))
    except (UsageError, ConfigError) as exc:
        print(f"campusguard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
