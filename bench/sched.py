"""What the firmware's scheduling costs: heap allocated per wake-up, and an idle unit's CPU.

    python bench/sched.py [--json] [--firmware DIR] [--idle-s S]

alloc_per_wake_bytes   heap allocated (gc disabled, gc.mem_alloc() before and after)
                       per wake-up from idle of a sleeping task: feedback.Feedback.show()
                       of a blinking pattern while the task sleeps with nothing to step
                       (a steady LED), which wakes it to drive the step and sleep until
                       the next (mean of 40), by interpreter: mp64 (the PyPI unix port)
                       and frozen32 (`make firmware32`; the modules under test come from
                       the firmware folder, asyncio is frozen in both)
outbox_alloc_per_wake_bytes   the same for outbox.Outbox.add() of a frame (sent at once)
                       while the outbox task sleeps with nothing pending: it wakes and
                       sleeps until the frame's retry is due
alloc_per_timed_step_bytes    per step of the blinking pattern that follows
alloc_to_idle_bytes    per return to a steady pattern (the task goes to sleep untimed:
                       the Event's wait() generator; it happens after the ACK, off the
                       alarm path)
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
import asyncio, gc, time
from feedback import Feedback
from outbox import Outbox

class B:
    def led(self, v):
        pass
    def buzzer(self, v):
        pass
    def indicate(self, what, name):
        pass

class Line:  # the link as the outbox sees it
    def busy(self):
        return False
    def send(self, buf, n, off=0):
        pass
    def poll(self):
        pass

N = 40
fb = Feedback(B())
ob = Outbox(Line(), None)
wire = bytearray(28)
wake = [0, 0]  # feedback, outbox: bytes over N wake-ups from idle
step = [0, 0]  # bytes over the timed steps that follow, and their count
idle = 0  # bytes over N returns to idle


def measure(f):
    a = gc.mem_alloc()
    f()
    return gc.mem_alloc() - a


async def main():
    global idle
    tf = asyncio.create_task(fb.run())
    to = asyncio.create_task(ob.run())
    for i in range(4):  # warm up: every code path once
        fb.show(led="sending")
        await asyncio.sleep_ms(120)
        fb.show(led="received")
        await asyncio.sleep_ms(250)
    gc.collect()
    gc.disable()
    for i in range(N):
        # the feedback task is asleep with nothing to step (a steady LED): a press shows
        # "sending" (fast blink, 100 ms steps), which wakes it; it drives the step and
        # sleeps until the next one
        a = gc.mem_alloc()
        fb.show(led="sending")
        await asyncio.sleep_ms(1)
        wake[0] += gc.mem_alloc() - a
        # three steps of the blink
        a = gc.mem_alloc()
        await asyncio.sleep_ms(300)
        step[0] += gc.mem_alloc() - a
        step[1] += 3
        # back to steady: the task sees it within its hurry (50 ms) and sleeps untimed
        a = gc.mem_alloc()
        fb.show(led="received")
        await asyncio.sleep_ms(250)
        idle += gc.mem_alloc() - a
        # the outbox task is asleep with nothing pending: a frame is added (sent at
        # once), which wakes it to sleep until the frame's retry is due
        a = gc.mem_alloc()
        ob.add(1, 7, 10 + i, wire, 28, 2, False)
        await asyncio.sleep_ms(1)
        wake[1] += gc.mem_alloc() - a
        ob.ack(7, 10 + i)
        await asyncio.sleep_ms(ob.rto_ms + 30)  # it finds nothing pending: untimed again
        gc.collect()
    gc.enable()
    tf.cancel()
    to.cancel()
    print(wake[0] / N, wake[1] / N, step[0] / step[1], idle / N)

asyncio.run(main())
"""


def interpreters() -> dict[str, str]:
    found = {"mp64": find_micropython()}
    try:
        found["frozen32"] = str(frozen32.ensure())
    except frozen32.Frozen32BuildError as exc:
        print(exc, file=sys.stderr)
    return found


def allocations(exe: str, firmware: Path) -> dict[str, float]:
    """Bytes allocated (gc disabled, gc.mem_alloc() around each phase), per phase."""
    res = subprocess.run(
        [exe, "-X", "heapsize=256K", "-c", _WAKE % str(firmware)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    wake, outbox, step, idle = (round(float(x), 1) for x in res.stdout.split())
    return {"wake": wake, "outbox_wake": outbox, "step": step, "to_idle": idle}


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
    keys = {
        "wake": "alloc_per_wake_bytes",
        "outbox_wake": "outbox_alloc_per_wake_bytes",
        "step": "alloc_per_timed_step_bytes",
        "to_idle": "alloc_to_idle_bytes",
    }
    figures: dict[str, Any] = {k: {} for k in keys.values()}
    figures["idle_cpu_percent"] = {}
    for name, exe in interpreters().items():
        for k, v in allocations(exe, firmware).items():
            figures[keys[k]][name] = v
        figures["idle_cpu_percent"][name] = asyncio.run(
            idle_cpu(exe, firmware, args.idle_s, frozen=name == "frozen32")
        )
    if args.json:
        print(json.dumps(figures))
        return 0
    for name in figures["alloc_per_wake_bytes"]:
        print(
            f"{name}: bytes allocated per wake-up from idle "
            f"{figures['alloc_per_wake_bytes'][name]} (feedback), "
            f"{figures['outbox_alloc_per_wake_bytes'][name]} (outbox); per timed step "
            f"{figures['alloc_per_timed_step_bytes'][name]}; per return to idle "
            f"{figures['alloc_to_idle_bytes'][name]}; "
            f"idle CPU {figures['idle_cpu_percent'][name]} % of a core"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
