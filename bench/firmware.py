"""Firmware figures on the real MicroPython binary: encode time, heap, press latency.

    python bench/firmware.py [--json] [--presses N]

encode_us_median   ALARM frame build (struct + HMAC-SHA256 + CRC + COBS) per frame,
                   median of batches, on `micropython -X heapsize=64K`
heap_*             gc.mem_alloc() after gc.collect() in a running virtual unit (bytes),
                   on the unix port (64-bit: objects are about twice their ESP32 size),
                   unit shop-fruit booted from a ROMFS image as `deploy --romfs` leaves
                   it: the modules' image mapped read-only and mounted at /rom
                   (gateway/sim/romlaunch.py, as an ESP32 maps its ROMFS partition), .mpy
                   bytecode executed in place; main.py the only source file
heap_after_boot_ok  heap_after_boot_bytes <= heap_after_boot_target_bytes (40 KB, issue 18:
                   the 64-bit ROMFS unit's ceiling); false is a missed target, not an error
heap_after_boot_code_bytes  the part of it taken by importing the firmware's modules at
                   boot (qstrs, function and class objects, module globals, asyncio's
                   module objects; bytecode only where it is not in place): measured
                   by main.py around the imports
heap_after_boot_data_bytes  the rest: buffers, tables, objects, tasks, the board's state
romfs_qstr_bytes   qstr pools the imports from the image make (part of the code bytes;
                   a frozen build has them in flash too): micropython.qstr_info()
                   around the same imports in a separate process
romfs_qstr_count   qstrs in the heap's pools after those imports (the pools double: a
                   new pool of ~320 entries, ~3.6 KB on 64 bits, opens at ~304 qstrs)
heap_after_boot_frozen_estimate_bytes   heap_after_boot - romfs_qstr: frozen modules
                   on the 64-bit port (an estimate)
frozen32_heap_*    the same unit on the 32-bit unix port with asyncio and the firmware
                   frozen in (`make firmware32`, the ESP32 image's shape: 32-bit objects,
                   bytecode and qstrs in the image); None without a MicroPython source
interpreter_heap_bytes  what the unit's heap holds before any firmware module is
                   imported, measured in a bare `micropython` with the unit's heap: the
                   interpreter itself (bare), `import asyncio`, and asyncio.event (the
                   Event the virtual board's inputs are; the ESP32's ThreadSafeFlag lives
                   there too); total = their sum, part of heap_after_boot
heap_after_boot_firmware_bytes  heap_after_boot - interpreter_heap_bytes.total
fs_mpy_heap_*      the same figures with the .mpy modules on the filesystem (`deploy`
                   without --romfs): imported into RAM, bytecode and all
press_to_first_byte_ms  host writes "button 1" on the control pty -> first byte of the
                   ALARM at the gateway end of the UART pty (includes the 5 ms debounce),
                   on the ROMFS unit (fs_mpy_press_to_first_byte_ms: on the other)
mpy_sizes          the firmware as deploy writes it (.mpy, main.py source);
                   romfs_image_bytes: the ROMFS image of the modules
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.config import load_config
from gateway.flashing.unitfiles import FIRMWARE_DIR, compiled_tree, romfs_image
from gateway.sim import frozen32
from gateway.sim.vboard import (
    DEFAULT_HEAPSIZE,
    ROMLAUNCH,
    VirtualUnit,
    find_micropython,
    prepare_unit_dir,
)
from protocol import Ack, AckState, Codec, Deframer, Frame, MsgType
from protocol.keys import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent
HEAP = DEFAULT_HEAPSIZE
ROMFS_HEAP_TARGET = 40 * 1024  # the 64-bit ROMFS unit's heap after boot (issue 18)

_ENCODE = """
import sys, time
sys.path.insert(0, %r)
import proto
enc = proto.Codec(257, bytes(range(32)))
out = []
for b in range(21):
    t0 = time.ticks_us()
    for i in range(100):
        enc.frame(1, 7, i, 0, 1, 1, 57920)
    out.append(time.ticks_diff(time.ticks_us(), t0) / 100)
out.sort()
print(out[10])
"""


def encode_us_median() -> float:
    res = subprocess.run(
        [find_micropython(), "-X", "heapsize=64K", "-c", _ENCODE % str(FIRMWARE_DIR)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(res.stdout.strip())


class Gateway:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.codec = Codec({257: TEST_KEY}, gateway=True)
        self.deframer = Deframer()
        self.first_byte: float | None = None
        self.frames: list[Frame] = []
        self.event = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            return
        if data and self.first_byte is None:
            self.first_byte = time.perf_counter()
        for raw in self.deframer.feed(data):
            frame = self.codec.decode(raw)
            self.frames.append(frame)
            if frame.type in (MsgType.ALARM, MsgType.CANCEL):
                os.write(
                    self.fd,
                    self.codec.encode(
                        Frame(
                            257, 1, len(self.frames), Ack(frame.epoch, frame.seq, AckState.RECEIVED)
                        )
                    ),
                )
        self.event.set()

    async def wait(self, pred: Any, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.event.clear()
                await self.event.wait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def unit_figures(presses: int, romfs: bool, exe: str | None = None) -> dict[str, Any]:
    """Heap and press latency of one unit; ``exe``: an interpreter with the firmware
    frozen in (``make firmware32``), the unit folder then holds only main.py."""
    cfg = load_config(ROOT / "boards.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        folder = prepare_unit_dir(
            Path(tmp) / "shop-fruit",
            cfg.units["shop-fruit"],
            TEST_KEY,
            overrides={"heartbeat_ms": 60000, "incident_window_ms": 200},
            compiled=True,
            cache=Path(tmp),
            romfs=romfs,
            frozen=exe is not None,
        )
        vu = VirtualUnit(folder, heapsize=HEAP, romfs=romfs, micropython=exe)
        gw = Gateway(vu.link_path)
        try:
            await vu.start()
            await gw.wait(lambda: len(gw.frames) >= 1)  # boot heartbeat

            await asyncio.sleep(0.3)  # let the boot's one-off work finish
            heap_boot, _, code = await vu.mem()
            lat: list[float] = []
            alarms = 0
            for i in range(max(presses, 100)):
                n = len([f for f in gw.frames if f.type == MsgType.ALARM])
                gw.first_byte = None
                t0 = time.perf_counter()
                await vu.press()
                await gw.wait(
                    lambda n=n: len([f for f in gw.frames if f.type == MsgType.ALARM]) > n
                )
                if gw.first_byte is not None and i < presses:
                    lat.append((gw.first_byte - t0) * 1000)
                await vu.release()
                alarms += 1
                # up for longer than the button's 20 ms poll + 5 ms debounce, with room for
                # a loaded host: a shorter gap is no release at all to the unit
                await asyncio.sleep(0.06)
            await asyncio.sleep(0.5)
            heap_100, _, _ = await vu.mem()
        finally:
            gw.close()
            await vu.stop()
    lat.sort()
    return {
        "heap_after_boot_bytes": heap_boot,
        "heap_after_boot_code_bytes": code,
        "heap_after_boot_data_bytes": heap_boot - code,
        "heap_after_100_alarms_bytes": heap_100,
        "alarms": alarms,
        "press_to_first_byte_ms": {
            "p50": round(statistics.median(lat), 2),
            "max": round(max(lat), 2),
            "n": len(lat),
        },
        "heapsize": HEAP,
    }


_FLOOR_PROBE = """
import gc
gc.collect()
bare = gc.mem_alloc()
import asyncio
gc.collect()
aio = gc.mem_alloc()
asyncio.Event
gc.collect()
print(bare, aio - bare, gc.mem_alloc() - aio)
"""


def interpreter_heap() -> dict[str, int]:
    """The heap a bare unix port holds, then what asyncio and asyncio.event add."""
    res = subprocess.run(
        [find_micropython(), "-X", f"heapsize={HEAP}", "-c", _FLOOR_PROBE],
        capture_output=True,
        text=True,
        check=True,
    )
    bare, aio, event = (int(x) for x in res.stdout.split())
    return {"bare": bare, "asyncio": aio, "asyncio_event": event, "total": bare + aio + event}


_QSTR_PROBE = """
import gc, micropython
gc.collect()
micropython.qstr_info()
import board.virtual
import app
gc.collect()
micropython.qstr_info()
print("from", app.__file__)
"""


def romfs_qstr() -> tuple[int, int, int]:
    """qstr pool bytes made by importing the firmware (as main.py does) from its ROMFS
    image, mapped and mounted at /rom by gateway/sim/romlaunch.py; the number of qstrs in
    the pools after them; and the image's size."""
    with tempfile.TemporaryDirectory() as tmp:
        image = romfs_image(Path(tmp))
        probe = Path(tmp) / "probe.py"
        probe.write_text(_QSTR_PROBE)
        res = subprocess.run(
            [sys.executable, str(ROMLAUNCH), str(image), "-X", "heapsize=256K", str(probe)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
        )
        size = image.stat().st_size
    info = [line for line in res.stdout.splitlines() if "n_total_bytes=" in line]
    pools = [int(line.split("n_total_bytes=")[1].split(",")[0]) for line in info]
    count = int(info[-1].split("n_qstr=")[1].split(",")[0])
    where = next(ln for ln in res.stdout.splitlines() if ln.startswith("from")).split()[1]
    if not where.startswith("/rom/"):
        raise RuntimeError(f"app was imported from {where}, not from the ROMFS image")
    return pools[1] - pools[0], count, size


def mpy_sizes() -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = compiled_tree(Path(tmp))
        return {
            p.relative_to(tree).as_posix(): p.stat().st_size
            for p in sorted(tree.rglob("*"))
            if p.is_file()
        }


def frozen32_figures(presses: int) -> dict[str, Any]:
    """The unit on the 32-bit build with asyncio and the firmware frozen in (``make
    firmware32``, built here if needed); None with one line on stderr without a source."""
    keys = ("heap_after_boot_bytes", "heap_after_boot_code_bytes", "heap_after_boot_data_bytes")
    keys += ("heap_after_100_alarms_bytes", "press_to_first_byte_ms")
    try:
        exe = str(frozen32.ensure())
    except frozen32.Frozen32BuildError as exc:
        print(exc, file=sys.stderr)
        return {"frozen32_" + k: None for k in keys}
    got = asyncio.run(unit_figures(presses, romfs=False, exe=exe))
    return {"frozen32_" + k: got[k] for k in keys}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--presses", type=int, default=30, help="presses timed for latency")
    args = ap.parse_args()
    figures: dict[str, Any] = {"encode_us_median": encode_us_median()}
    figures.update(asyncio.run(unit_figures(args.presses, romfs=True)))
    figures["heap_after_boot_target_bytes"] = ROMFS_HEAP_TARGET
    figures["heap_after_boot_ok"] = figures["heap_after_boot_bytes"] <= ROMFS_HEAP_TARGET
    fs = asyncio.run(unit_figures(args.presses, romfs=False))
    for k in (
        "heap_after_boot_bytes",
        "heap_after_boot_code_bytes",
        "heap_after_boot_data_bytes",
        "heap_after_100_alarms_bytes",
        "press_to_first_byte_ms",
    ):
        figures["fs_mpy_" + k] = fs[k]
    qstr, count, image = romfs_qstr()
    figures["romfs_qstr_bytes"] = qstr
    figures["romfs_qstr_count"] = count
    figures["heap_after_boot_frozen_estimate_bytes"] = figures["heap_after_boot_bytes"] - qstr
    floor = interpreter_heap()
    figures["interpreter_heap_bytes"] = floor
    figures["heap_after_boot_firmware_bytes"] = figures["heap_after_boot_bytes"] - floor["total"]
    sizes = mpy_sizes()
    figures["mpy_sizes"] = sizes
    figures["mpy_total_bytes"] = sum(sizes.values())
    figures["romfs_image_bytes"] = image
    figures.update(frozen32_figures(args.presses))
    if args.json:
        print(json.dumps(figures))
        return 0
    p = figures["press_to_first_byte_ms"]
    print(f"encode (ALARM, MicroPython):   {figures['encode_us_median']:.1f} us/frame median")
    print(
        f"heap after boot (ROMFS):       {figures['heap_after_boot_bytes']} bytes "
        f"(code {figures['heap_after_boot_code_bytes']}, of which qstrs "
        f"{figures['romfs_qstr_bytes']}; data {figures['heap_after_boot_data_bytes']}; "
        f"heapsize {figures['heapsize']})"
    )
    print(
        f"  target: <= {ROMFS_HEAP_TARGET} bytes: "
        f"{'ok' if figures['heap_after_boot_ok'] else 'MISSED'}"
    )
    print(f"heap after 100 alarms (ROMFS): {figures['heap_after_100_alarms_bytes']} bytes")
    print(
        f"  .mpy on the filesystem:      {figures['fs_mpy_heap_after_boot_bytes']} bytes "
        f"(code {figures['fs_mpy_heap_after_boot_code_bytes']}), after 100 alarms "
        f"{figures['fs_mpy_heap_after_100_alarms_bytes']}"
    )
    print(
        f"  frozen (estimate):           {figures['heap_after_boot_frozen_estimate_bytes']} bytes"
    )
    print(
        f"  before any firmware module:  {floor['total']} bytes (interpreter {floor['bare']}, "
        f"asyncio {floor['asyncio']}, asyncio.event {floor['asyncio_event']}); the "
        f"firmware's own: {figures['heap_after_boot_firmware_bytes']} bytes, "
        f"{figures['romfs_qstr_count']} qstrs in the pools"
    )
    if figures["frozen32_heap_after_boot_bytes"] is not None:
        print(
            f"32-bit, frozen (firmware32):   {figures['frozen32_heap_after_boot_bytes']} bytes "
            f"(code {figures['frozen32_heap_after_boot_code_bytes']}), after 100 alarms "
            f"{figures['frozen32_heap_after_100_alarms_bytes']}"
        )
    print(f"press -> first byte:           p50 {p['p50']} ms, max {p['max']} ms (n={p['n']})")
    print(
        f"firmware on flash:             {figures['mpy_total_bytes']} bytes in {len(sizes)} "
        f"files; ROMFS image {figures['romfs_image_bytes']} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
