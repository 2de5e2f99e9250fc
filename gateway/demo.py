"""``campusguard demo``: what a unit's panic looks like on the wire and to the gateway.

This first version builds the frames a unit sends for one press and decodes them with the
gateway codec; it grows into the whole path (virtual fleet, gateway, broker, police).
"""

from __future__ import annotations

import argparse
import json

from protocol import (
    Alarm,
    AlarmKind,
    Deframer,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    decode,
    encode,
    to_wire,
)
from protocol.keys import TEST_KEY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's options."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Encode a press and a heartbeat as unit 257 would, then decode them as the gateway."""
    frames = [
        Frame(257, 7, 42, Alarm(AlarmKind.PANIC, 1, 123456)),
        Frame(257, 7, 43, Heartbeat(3712, 86400, 0x0100, HeartbeatFlags(0))),
    ]
    stream = b"\x00" + b"".join(to_wire(encode(f, TEST_KEY)) for f in frames)
    deframer = Deframer()
    decoded = [decode(raw, {257: TEST_KEY}) for raw in deframer.feed(stream)]
    if args.json:
        print(json.dumps({"wire": stream.hex(" "), "frames": [repr(f) for f in decoded]}))
        return 0
    print(f"unit 257 (shop-fruit) sends {len(stream)} bytes: {stream.hex(' ')}")
    for f in decoded:
        print(f"gateway decodes: {f}")
    return 0
