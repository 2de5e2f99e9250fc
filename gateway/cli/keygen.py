"""``campusguard keygen``: make a unit's key, a gateway's signing key or a duty room's.

- ``keygen UNIT``: the unit's 32-byte MAC key (``<keydir>/<unit>.key``, 0600).
- ``keygen --gateway``: the gateway's Ed25519 signing key (``gateway-<id>.pem``, 0600,
  the id from boards.yaml) and its public key ``gateway-<id>.pub`` for the duty rooms.
- ``keygen --dutyroom NAME``: a duty room's signing key (``dutyroom-NAME.pem``, made on
  the duty room's machine) and ``dutyroom-NAME.pub``; install the ``.pub`` in the
  gateway's key directory (as ``dutyroom-NAME@SITE.pub`` to allow only that site).

A key is made once and never overwritten by accident: replacing a unit key (``--force``)
means the unit must be deployed again before the gateway will take its frames; see
gateway/README.md for rotating the signing keys.
"""

from __future__ import annotations

import argparse
import sys

from gateway.core.config import load_config, unit_not_found
from gateway.core.errors import GatewayError, UsageError
from gateway.security.signkeys import (
    check_name,
    dutyroom_kid,
    gateway_kid,
    public_path,
    write_pair,
)
from gateway.security.unitkeys import new_unit_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard keygen``."""
    parser.add_argument("unit", nargs="?", help="unit id from boards.yaml")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--gateway", action="store_true", help="the gateway's signing key (id from --config)"
    )
    which.add_argument("--dutyroom", metavar="NAME", help="a duty room's signing key")
    parser.add_argument("--keydir", default="keys", help="the key directory")
    parser.add_argument(
        "--config",
        default="boards.yaml",
        help="the register",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing key (re-deploy the unit)"
    )


def run(args: argparse.Namespace) -> int:
    """Make the key; exit 0, 2 on a usage or register error, 1 if it cannot be written."""
    chosen = sum(bool(x) for x in (args.unit, args.gateway, args.dutyroom))
    if chosen != 1:
        raise UsageError("give a UNIT, --gateway or --dutyroom NAME")
    if args.dutyroom:
        check_name(args.dutyroom, "--dutyroom")
    cfg = None if args.dutyroom else load_config(args.config)
    if args.unit and cfg is not None and args.unit not in cfg.units:
        raise UsageError(unit_not_found(args.unit, args.config, cfg.units))
    try:
        if args.dutyroom:
            kid = dutyroom_kid(check_name(args.dutyroom, "--dutyroom"))
            path = write_pair(args.keydir, kid, force=args.force)
            print(
                f"duty-room key {kid} written to {path}; give {public_path(args.keydir, kid)}"
                " to each gateway's key directory"
            )
            return 0
        if args.gateway and cfg is not None:
            kid = gateway_kid(cfg.gateway_id)
            path = write_pair(args.keydir, kid, force=args.force)
            print(
                f"gateway key {kid} written to {path}; give {public_path(args.keydir, kid)}"
                " to every duty room"
            )
            return 0
        path = new_unit_key(args.unit, args.keydir, args.force)
    except (GatewayError, OSError) as exc:
        print(f"campusguard keygen: {exc}", file=sys.stderr)
        return 1
    print(f"key for {args.unit} written to {path}")
    return 0
