"""Protocol figures: gateway decode/encode time, firmware encode time, bytes on the wire.

python bench/codec.py [--json] [--frames N]

Decode is the gateway's whole check of one ALARM frame: CRC, MAC (HMAC-SHA256), field
parse into a frozen dataclass. The firmware figure runs firmware/proto.py on the
MicroPython binary. The SIA DC-09 line is built here for the same panic alarm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    Ack,
    AckState,
    Alarm,
    AlarmKind,
    Cancel,
    Checkin,
    Fault,
    FaultCode,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Signal,
    SignalPattern,
    Test,
    TestKind,
    decode,
    encode,
    to_wire,
)
from protocol.cobs import cobs_decode  # noqa: E402
from protocol.keys import TEST_KEY  # noqa: E402

SAMPLES = {
    "ALARM": Alarm(AlarmKind.PANIC, 1, 123456),
    "CANCEL": Cancel(7, 42),
    "CHECKIN": Checkin(0, 3600000),
    "HEARTBEAT": Heartbeat(3712, 86400, 0x0102, HeartbeatFlags(0)),
    "TEST": Test(TestKind.PERIODIC, 0, 3700),
    "FAULT": Fault(FaultCode.TAMPER, 1, 0),
    "ACK": Ack(7, 42, AckState.RECEIVED),
    "SIGNAL": Signal(SignalPattern.PROMPT_CHECKIN, 60),
}


def sia_crc(data: bytes) -> int:
    """CRC-16/ARC (poly 0xA001 reflected), as SIA DC-09 uses."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def sia_dc09_line(seq: int = 42, account: str = "1234", encrypted: bool = False) -> bytes:
    """A SIA DC-09 line carrying the same panic (SIA-DCS event PA, zone 1), with timestamp."""
    ts = time.strftime("_%H:%M:%S,%m-%d-%Y", time.gmtime(1_796_000_000))
    data = f"[#{account}|Nri1/PA1]"
    if encrypted:
        # AES-CBC: data and timestamp padded to 16-byte blocks, sent as hex
        plain = len(data) + len(ts)
        blocks = (plain + 15) // 16
        body = f'"*SIA-DCS"{seq:04d}R0L0#{account}' + "x" * (blocks * 32)
    else:
        body = f'"SIA-DCS"{seq:04d}R0L0#{account}{data}{ts}'
    crc = sia_crc(body.encode())
    return f"\n{crc:04X}0{len(body):03X}{body}\r".encode()


def time_per_call(fn, n: int, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    """Median over ``repeat`` runs of the mean time per call, in microseconds."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def firmware_encode_us() -> float | None:
    """Median encode time per ALARM frame of firmware/proto.py on the MicroPython binary."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_firmware", ROOT / "bench" / "firmware.py")
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return round(float(module.encode_us_median()), 2)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"firmware encode not measured: {exc}", file=sys.stderr)
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--frames", type=int, default=20000, help="frames per timing run")
    args = ap.parse_args()

    frame = Frame(257, 7, 42, SAMPLES["ALARM"])
    raw = encode(frame, TEST_KEY)
    wire = to_wire(raw)
    keys = {257: TEST_KEY}
    decode_us = time_per_call(lambda: decode(raw, keys), args.frames)
    decode_wire_us = time_per_call(lambda: decode(cobs_decode(wire[:-1]), keys), args.frames)
    encode_us = time_per_call(lambda: to_wire(encode(frame, TEST_KEY)), args.frames)
    sizes = {
        name: len(to_wire(encode(Frame(257, 7, 42, body), TEST_KEY)))
        for name, body in SAMPLES.items()
    }
    result = {
        "gateway_decode_alarm_us_median": round(decode_us, 2),
        "gateway_decode_alarm_with_cobs_us_median": round(decode_wire_us, 2),
        "gateway_encode_alarm_us_median": round(encode_us, 2),
        "firmware_encode_alarm_us_median": firmware_encode_us(),
        "wire_bytes": sizes,
        "sia_dc09_alarm_bytes": len(sia_dc09_line()),
        "sia_dc09_alarm_encrypted_bytes": len(sia_dc09_line(encrypted=True)),
        "target_decode_us": 20,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(f"gateway decode ALARM (CRC+MAC+parse): {r['gateway_decode_alarm_us_median']} us median")
    print(
        f"  ... with COBS decode:                {r['gateway_decode_alarm_with_cobs_us_median']} us"
    )
    print(f"gateway encode ALARM (to wire):       {r['gateway_encode_alarm_us_median']} us median")
    fw = r["firmware_encode_alarm_us_median"]
    print(f"firmware encode ALARM (MicroPython):  {fw if fw is not None else 'n/a'} us median")
    print("bytes on the wire (COBS + delimiter):")
    for name, n in sizes.items():
        print(f"  {name:<10} {n:>3}")
    print(f"  SIA DC-09 line, same panic:           {result['sia_dc09_alarm_bytes']}")
    print(f"  SIA DC-09 line, same panic, AES-CBC:  {result['sia_dc09_alarm_encrypted_bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
