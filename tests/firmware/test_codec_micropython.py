"""The firmware codec, run on the MicroPython binary, against the golden vectors and
against the gateway's codec in both directions."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.flashing.unitfiles import FIRMWARE_DIR
from gateway.sim.vboard import find_micropython
from protocol import (
    Ack,
    AckState,
    Codec,
    Frame,
    MsgType,
    Signal,
    SignalPattern,
    decode,
    to_wire,
)
from protocol.cobs import cobs_decode
from protocol.keys import TEST_KEY

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "protocol/vectors/vectors.json").read_text()
)["vectors"]
ORDER = {
    "ALARM": ("kind", "presses", "press_ms"),
    "CANCEL": ("ref_epoch", "ref_seq"),
    "CHECKIN": ("flags", "press_ms"),
    "HEARTBEAT": ("battery_mv", "uptime_s", "fw", "flags"),
    "TEST": ("kind", "result", "battery_mv"),
    "FAULT": ("code", "active", "detail"),
    "ACK": ("ref_epoch", "ref_seq", "state"),
    "SIGNAL": ("pattern", "duration_s"),
}
UPLINK = [v for v in VECTORS if MsgType[v["type"]].uplink]
DOWNLINK = [v for v in VECTORS if not MsgType[v["type"]].uplink]
K = TEST_KEY.hex()


def wire_of(v: dict[str, Any]) -> str:
    return str(v["wire"]).replace(" ", "")


def run_mp(job: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    # the batch (hundreds of frames and their JSON) needs more heap than a unit
    out = subprocess.run(
        [
            find_micropython(),
            "-X",
            "heapsize=16M",
            str(Path(__file__).parent / "mp_codec.py"),
            str(FIRMWARE_DIR),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_uplink_vectors_exact_on_micropython(tmp_path: Path) -> None:
    job = {
        "encode": [
            [
                K,
                int(MsgType[v["type"]]),
                v["unit"],
                v["epoch"],
                v["seq"],
                [v["body"][f] for f in ORDER[v["type"]]],
            ]
            for v in UPLINK
        ]
    }
    got = run_mp(job, tmp_path)["encoded"]
    for v, hexwire in zip(UPLINK, got, strict=True):
        assert hexwire == wire_of(v), v["name"]


def test_downlink_vectors_decode_and_tampering_is_rejected(tmp_path: Path) -> None:
    cases: list[list[Any]] = []
    expect: list[tuple[str, Any]] = []
    for v in DOWNLINK:
        cases.append([K, v["unit"], wire_of(v)])
        expect.append(("ok", v))
        raw = bytearray(cobs_decode(bytes.fromhex(wire_of(v))[:-1]))
        for bit in range(len(raw) * 8):  # every single-bit flip of the decoded frame
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            cases.append([K, v["unit"], to_wire(bytes(flipped)).hex()])
            expect.append(("reject", None))
        cases.append([bytes(32).hex(), v["unit"], wire_of(v)])  # another key: forged
        expect.append(("forged", None))
        cases.append([K, v["unit"] + 1, wire_of(v)])  # for another unit on the bus
        expect.append(("other_unit", None))
    for v in UPLINK:  # the unit's own direction, reflected back at it
        cases.append([K, v["unit"], wire_of(v)])
        expect.append(("unknown_type", None))
    got = run_mp({"decode": cases}, tmp_path)["decoded"]
    for (what, v), (t, reason, fields) in zip(expect, got, strict=True):
        if what == "ok":
            assert t == int(MsgType[v["type"]])
            body = [v["body"][f] for f in ORDER[v["type"]]]
            assert fields == [v["epoch"], v["seq"], *body]
        elif what == "reject":
            assert t == -1 and reason in (
                "corrupt",
                "version",
                "unknown_type",
                "malformed",
                "other_unit",
                "forged",
            )
        else:
            assert (t, reason) == (-1, what)


def test_each_side_decodes_the_other(tmp_path: Path) -> None:
    rng = random.Random(1234)
    gateway = Codec({0x0101: TEST_KEY}, gateway=True)
    downs: list[Frame] = []
    for _ in range(40):
        e, s = rng.randrange(2**32), rng.randrange(2**16)
        if rng.random() < 0.5:
            body: Ack | Signal = Ack(
                rng.randrange(2**32), rng.randrange(2**16), AckState(rng.randint(1, 3))
            )
        else:
            body = Signal(SignalPattern(rng.randint(0, 3)), rng.randrange(2**16))
        downs.append(Frame(0x0101, e, s, body))
    ups: list[list[Any]] = []
    for _ in range(60):
        t = rng.choice(["ALARM", "CANCEL", "CHECKIN", "HEARTBEAT", "TEST", "FAULT"])
        fields = {
            "ALARM": [rng.randint(0, 5), rng.randint(1, 255), rng.randrange(2**32)],
            "CANCEL": [rng.randrange(2**32), rng.randrange(2**16)],
            "CHECKIN": [rng.randint(0, 1), rng.randrange(2**32)],
            "HEARTBEAT": [rng.randrange(2**16), rng.randrange(2**32), 0x0100, rng.randrange(64)],
            "TEST": [rng.randint(0, 1), rng.randrange(16), rng.randrange(2**16)],
            "FAULT": [rng.randint(1, 8), rng.randint(0, 1), rng.randrange(2**16)],
        }[t]
        ups.append([K, int(MsgType[t]), 0x0101, rng.randrange(2**32), rng.randrange(2**16), fields])
    job = {
        "encode": ups,
        "decode": [[K, 0x0101, gateway.encode(f).hex()] for f in downs],
    }
    got = run_mp(job, tmp_path)
    for (_, t, unit, e, s, fields), hexwire in zip(ups, got["encoded"], strict=True):
        frame = decode(cobs_decode(bytes.fromhex(hexwire)[:-1]), {unit: TEST_KEY})
        assert (int(frame.type), frame.epoch, frame.seq) == (t, e, s)
        assert [int(getattr(frame.body, f)) for f in ORDER[frame.type.name]] == fields
    for f, (t, reason, fields) in zip(downs, got["decoded"], strict=True):
        assert t == int(f.type), reason
        body = [int(getattr(f.body, n)) for n in ORDER[f.type.name]]
        assert fields == [f.epoch, f.seq, *body]


@pytest.mark.parametrize("v", UPLINK, ids=[v["name"] for v in UPLINK])
def test_vectors_decode_on_the_gateway(v: dict[str, Any]) -> None:
    raw = cobs_decode(bytes.fromhex(wire_of(v))[:-1])
    assert decode(raw, {v["unit"]: TEST_KEY}).epoch == v["epoch"]


def test_cobs_long_runs_agree_with_the_gateway(tmp_path: Path) -> None:
    """Runs of 254, 255 and 600 non-zero bytes split into blocks as on the gateway."""
    from protocol.cobs import cobs_encode

    run = bytes((i % 255) + 1 for i in range(600))
    inputs = [run[:253], run[:254], run[:255], run, run[:254] + b"\x00\x07", b"\x00" + run[:255]]
    got = run_mp({"cobs": [d.hex() for d in inputs]}, tmp_path)["cobs"]
    for data, (encoded, decoded) in zip(inputs, got, strict=True):
        assert bytes.fromhex(encoded) == cobs_encode(data) + b"\x00", len(data)
        assert bytes.fromhex(decoded) == data
