"""``campusguard decode``: show what the gateway codec makes of frames, for installers."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from protocol import Deframer, ProtocolError, decode
from protocol.keys import TEST_KEY, parse_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("hex", nargs="*", help="wire bytes as hex (spaces allowed); stdin if none")
    parser.add_argument("--key", help="the unit's key as 64 hex digits (default: the test key)")
    parser.add_argument("--downlink", action="store_true", help="frames are gateway-to-unit")


def run(args: argparse.Namespace) -> int:
    """Decode every frame in the given bytes and print one JSON line per frame or reject."""
    text = " ".join(args.hex) if args.hex else sys.stdin.read()
    data = bytes.fromhex("".join(text.split()))
    key = parse_key(args.key, "--key") if args.key else TEST_KEY
    deframer = Deframer()
    status = 0
    for raw in deframer.feed(data if data.endswith(b"\x00") else data + b"\x00"):
        try:
            frame = decode(raw, lambda _unit: key, uplink=not args.downlink)
        except ProtocolError as exc:
            print(json.dumps({"reject": exc.reason.value, "detail": exc.detail}))
            status = 1
            continue
        body = {f.name: getattr(frame.body, f.name) for f in fields(frame.body)}  # type: ignore[arg-type]
        body = {
            k: (v.name.lower() if hasattr(v, "name") and v.name else int(v))
            for k, v in body.items()
        }
        print(
            json.dumps(
                {
                    "type": frame.type.name,
                    "unit": frame.unit,
                    "epoch": frame.epoch,
                    "seq": frame.seq,
                    **body,
                }
            )
        )
    for reason, count in deframer.rejects.items():
        print(json.dumps({"reject": reason.value, "count": count}))
        status = 1
    return status
