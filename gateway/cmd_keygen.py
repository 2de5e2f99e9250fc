"""``campusguard keygen UNIT``: make a unit's 32-byte key (``<keydir>/<unit>.key``, 0600).

A key is made once, at enrolment, and never overwritten by accident: replacing it
(``--force``) means the unit must be deployed again before the gateway will take its
frames.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gateway.config import load_config, unit_not_found
from gateway.errors import GatewayError, UsageError
from protocol.keys import key_path, write_new_key

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``campusguard keygen``."""
    parser.add_argument("unit", help="unit id from boards.yaml")
    parser.add_argument("--keydir", default="keys", help="directory of <unit>.key files")
    parser.add_argument(
        "--config", default="boards.yaml", help="the register; the unit must be in it"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing key (re-deploy the unit)"
    )


def keygen(unit_id: str, keydir: str | Path, force: bool = False) -> Path:
    """Write a new random key for ``unit_id``; refuse to replace one unless ``force``."""
    path = key_path(keydir, unit_id)
    if path.exists():
        if not force:
            raise GatewayError(f"{path} exists (use --force to replace it, then re-deploy)")
        path.unlink()
        log.warning("replacing the key of %s: re-deploy the unit", unit_id)
    return write_new_key(keydir, unit_id)


def run(args: argparse.Namespace) -> int:
    """Make the key; exit 0, 2 on a usage or register error, 1 if the key cannot be written."""
    cfg = load_config(args.config)
    if args.unit not in cfg.units:
        raise UsageError(unit_not_found(args.unit, args.config, cfg.units))
    try:
        path = keygen(args.unit, args.keydir, args.force)
    except (GatewayError, OSError) as exc:
        print(f"campusguard keygen: {exc}", file=sys.stderr)
        return 1
    print(f"key for {args.unit} written to {path}")
    return 0
