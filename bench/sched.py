"""What the firmware's scheduling costs: heap allocated per wake-up, and an idle unit's CPU.

    python bench/sched.py [--json] [--firmware DIR] [--idle-s S]

alloc_per_wake_bytes   heap allocated (gc disabled, gc.mem_alloc() before and after)
                       per wake-up of a sleeping task: feedback.Feedback.show() hurrying
                       its run task, which steps the pattern and goes back to sleep
                       (mean of 200), by interpreter: mp64 (the PyPI unix port) and
                       frozen32 (`make firmware32`; the modules under test come from
                       the firmware folder, asyncio is frozen in both)
idle_cpu_percent       CPU time (user + system, /proc) of an idle virtual unit's process
                       over --idle-s seconds once it is idle, as % of one core, by
                       interpreter (a unit with nothing to do sleeps between the
                       supervisor's 500 ms ticks and the idle LED's steps)

--firmware DIR measures another firmware tree (an older checkout's firmware/, for a
before/after comparison); default this checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.config import load_config
from gateway.flashing.unitfiles import FIRMWARE_DIR, compiled_tree
from gateway.sim import frozen32
from gateway.sim.vboard import VirtualUnit, find_micropython, prepare_unit_dir
from protocol.keys import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent

_WAKE = """
import sys
sys.path.insert(0, %r)
import asyncio, gc
from feedback import Feedback

class B:
    def led(self, v):
        pass
    def buzzer(self, v):
        pass
    def indicate(self, what, name):
        pass

N = 200
fb = Feedback(B())

async def main():
    t = asyncio.create_task(fb.run())
    for i in range(20):  # warm up: every code path once
        fb.show(led=("sending", "received")[i & 1])
        await asyncio.sleep_ms(1)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for i in range(N):
        # a timed pattern (fast blink: the task sleeps 100 ms) and a steady one (it
        # sleeps until woken), alternately; each show() wakes the sleeping task
        fb.show(led=("sending", "received")[i & 1])
        await asyncio.sleep_ms(1)
    b = gc.mem_alloc()
    gc.enable()
    t.cancel()
    print((b - a) / N)

asyncio.run(main())
"""


def interpreters() -> dict[str, str]:
    found = {"mp64": find_micropython()}
    try:
        found["frozen32"] = str(frozen32.ensure())
    except frozen32.Frozen32BuildError as exc:
        print(exc, file=sys.stderr)
    return found


def alloc_per_wake(exe: str, firmware: Path) -> float:
    res = subprocess.run(
        [exe, "-X", "heapsize=256K", "-c", _WAKE % str(firmware)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return round(float(res.stdout.strip()), 1)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(exe: str, firmware: Path, idle_s: float, frozen: bool) -> float:
    cfg = load_config(ROOT / "boards.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        same = firmware == FIRMWARE_DIR
        folder = prepare_unit_dir(
            Path(tmp) / "shop-fruit",
            cfg.units["shop-fruit"],
            TEST_KEY,
            overrides={"heartbeat_ms": 3600000, "boot_spread_ms": 0},
            compiled=True,
            cache=Path(tmp),
            frozen=frozen and same,
        )
        if not same:  # another tree's modules, as deploy writes them (before frozen ones)
            tree = compiled_tree(Path(tmp), firmware)
            for p in tree.rglob("*"):
                if p.is_file():
                    (folder / p.relative_to(tree)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, folder / p.relative_to(tree))
        vu = VirtualUnit(folder, micropython=exe, romfs=False)
        try:
            await vu.start()
            await vu.wait_led("idle")
            await asyncio.sleep(1.0)  # the boot's one-off work is over
            pid = vu.pid
            if pid is None:
                raise RuntimeError("unit not running")
            c0, t0 = _cpu_s(pid), time.monotonic()
            await asyncio.sleep(idle_s)
            c1, t1 = _cpu_s(pid), time.monotonic()
        finally:
            await vu.stop()
    return round(100 * (c1 - c0) / (t1 - t0), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--firmware", type=Path, default=FIRMWARE_DIR, help="firmware folder")
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle CPU window (s)")
    args = ap.parse_args()
    firmware = args.firmware.resolve()
    figures: dict[str, Any] = {"alloc_per_wake_bytes": {}, "idle_cpu_percent": {}}
    for name, exe in interpreters().items():
        figures["alloc_per_wake_bytes"][name] = alloc_per_wake(exe, firmware)
        figures["idle_cpu_percent"][name] = asyncio.run(
            idle_cpu(exe, firmware, args.idle_s, frozen=name == "frozen32")
        )
    if args.json:
        print(json.dumps(figures))
        return 0
    for name in figures["alloc_per_wake_bytes"]:
        print(
            f"{name}: {figures['alloc_per_wake_bytes'][name]} bytes allocated per wake-up, "
            f"idle CPU {figures['idle_cpu_percent'][name]} % of a core"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
