"""``campusguard decode``: show what the gateway codec makes of frames, for installers."""

from __future__ import annotations

import argparse
import json
import string
import sys
from typing import BinaryIO

from gateway.core.errors import UsageError
from gateway.link.inspection import inspect_frames
from protocol.keys import TEST_KEY, parse_key

_HEX_TEXT = frozenset((string.hexdigits + string.whitespace).encode())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument(
        "hex",
        nargs="*",
        help="wire bytes as hex (spaces allowed); if none: stdin, as hex text or raw wire bytes",
    )
    parser.add_argument("--key", help="the unit's key as 64 hex digits (default: the test key)")
    parser.add_argument("--downlink", action="store_true", help="frames are gateway-to-unit")


def parse_hex(text: str) -> bytes:
    """Hex digits, whitespace anywhere; a :class:`UsageError` names the first bad character."""
    digits = "".join(text.split())
    bad = next((c for c in digits if c not in string.hexdigits), None)
    if bad is not None:
        raise UsageError(f"not hex: {bad!r} in {text.strip()[:40]!r} (give hex digits, e.g. 00 1f)")
    if len(digits) % 2:
        raise UsageError(f"odd number of hex digits ({len(digits)}): each byte is two digits")
    return bytes.fromhex(digits)


def read_input(args_hex: list[str], stdin: BinaryIO) -> bytes:
    """The bytes to decode: the arguments as hex, else stdin as hex text or raw wire bytes."""
    if args_hex:
        return parse_hex(" ".join(args_hex))
    data = stdin.read()
    if data and set(data) <= _HEX_TEXT:
        return parse_hex(data.decode("ascii"))
    return data  # raw wire bytes (e.g. captured from the serial port)


def run(args: argparse.Namespace) -> int:
    """Decode every frame in the given bytes and print one JSON line per frame or reject.

    Exit status 0 if every frame decoded, 1 if any was rejected, 2 on bad input.
    """
    try:
        key = parse_key(args.key, "--key") if args.key else TEST_KEY
    except ValueError as exc:
        raise UsageError(f"{exc} (64 hex digits, as in keys/<unit>.key)") from None
    status = 0
    for record in inspect_frames(
        read_input(args.hex, sys.stdin.buffer), key, uplink=not args.downlink
    ):
        print(json.dumps(record))
        if "reject" in record:
            status = 1
    return status
