"""The firmware on the 32-bit unix port with asyncio and the firmware frozen in (``make
firmware32``): the ESP32 image's shape. Its heap after boot, and uptime past 2^30, 2^31
and 2^32 ms, where a 32-bit MicroPython's small ints (31 bits) end."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from protocol import MsgType
from tests.firmware.conftest import GatewayEnd, UnitFactory
from tests.support.mpjob import job_result

pytestmark = pytest.mark.frozen32_only

HEAP_AFTER_BOOT_MAX = 20 * 1024
"""The issue's target for the unit's heap after boot, on the ESP32's shape."""
TRANSIENT_MAX = 512
"""Heap that may differ between two idle moments without being growth (an idle task's
Event.wait() generator comes and goes, sleeper.py): below the 1 600 bytes one leaked block
per alarm would make."""


async def ack_every_alarm(gw: GatewayEnd) -> None:
    """The gateway's part: ACK every ALARM as it arrives, resent copies too (a pty drops
    what a unit too slow to read leaves in it: an ACK can be lost under load)."""
    done = 0
    while True:
        await gw.wait(lambda frames, seen=done: len(frames) > seen, timeout=3600)
        for a in gw.frames[done:]:
            if a.frame.type == MsgType.ALARM:
                gw.ack(a.frame)
        done = len(gw.frames)


async def test_frozen_unit_runs_its_frozen_modules(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit()
    files = await vu.module_files()
    assert sorted(p for p in vu.unit_dir.iterdir() if p.suffix in (".py", ".mpy")) == [
        vu.unit_dir / "main.py"
    ]
    for name in ("app", "proto", "outbox", "link", "board.virtual", "asyncio.core"):
        assert name in files, files
        # frozen: named as in the manifest (app.py), with no such file anywhere here
        assert files[name].endswith(".py"), (name, files[name])
        assert not (vu.unit_dir / files[name]).exists(), (name, files[name])
    await vu.press()
    await gw.next(MsgType.ALARM)


async def test_heap_under_20k_after_boot_and_flat_over_100_alarms(make_unit: UnitFactory) -> None:
    # each press is let go once its ALARM is ACKed: however slow that is under load, not
    # a duress hold nor a stuck button
    vu, gw = await make_unit(incident_window_ms=200, long_press_ms=60000, stuck_ms=90000)
    await gw.next(MsgType.HEARTBEAT, after=0)  # the boot's frames are out
    after_boot, _, code = await vu.mem()
    assert after_boot < HEAP_AFTER_BOOT_MAX, (after_boot, code)
    seen: set[int] = set()
    acker = asyncio.create_task(ack_every_alarm(gw))
    for _ in range(100):
        start = len(gw.frames)
        await vu.press()
        # this press's ALARM (under load a late ACK lets the last one be resent)
        alarm = await gw.next(MsgType.ALARM, after=start, pred=lambda f: f.seq not in seen)
        seen.add(alarm.frame.seq)
        await vu.wait_buzzer("off")  # the last release's chirp is over: this one shows
        chirps = vu.buzzer_history.count("chirp")
        await vu.release()
        # the unit has taken the release (its chirp) before the next press
        await vu.wait_until(lambda c=chirps: vu.buzzer_history.count("chirp") > c, 3, "chirp")
    await vu.wait_led("idle")  # the series closed: nothing left pending
    acker.cancel()
    after_100, _, _ = await vu.mem()
    # a leak of one 16-byte GC block per alarm would be 1 600 bytes by now; what moves
    # less is transient (a sleeping task's timer Task and coroutine alive or not)
    assert after_100 <= after_boot + TRANSIENT_MAX, (after_boot, after_100)


@pytest.mark.parametrize("boundary", [2**30, 2**31, 2**32], ids=["2^30", "2^31", "2^32"])
async def test_press_ms_right_across_uptime_boundary(make_unit: UnitFactory, boundary: int) -> None:
    """The unit boots 1.3-1.9 s short of the boundary (in whole seconds); a press before
    it and one after it carry the uptime at their first edge, modulo 2^32."""
    start_s = boundary // 1000 - 1
    t_start = time.monotonic()
    vu, gw = await make_unit(
        test_uptime_s=start_s, incident_window_ms=200, long_press_ms=60000, stuck_ms=90000
    )
    t_ready = time.monotonic()
    crossing = (boundary - start_s * 1000) / 1000

    acker = asyncio.create_task(ack_every_alarm(gw))

    async def press_ms() -> tuple[int, float, float]:
        at = len(gw.frames)
        t_press = time.monotonic()
        await vu.press()
        alarm = await gw.next(MsgType.ALARM, after=at)
        await vu.release()
        await vu.wait_led("idle")  # series closed: the next press opens a new one
        return alarm.frame.body.press_ms, t_press, alarm.at

    for _ in range(2):
        got, t_press, t_arrival = await press_ms()
        # the first edge came after the host's press and after the unit was ready (its
        # uptime started before), and before the ALARM arrived (uptime started after
        # the process did); 5 ms for tick granularity
        since = (got - start_s * 1000) % 2**32
        assert (t_press - t_ready) * 1000 - 5 <= since <= (t_arrival - t_start) * 1000 + 5
        if since > crossing * 1000:
            break
        # the user presses again once the unit's uptime is past the boundary (stimulus
        # timing: uptime >= time since ready)
        await asyncio.sleep(max(0.0, crossing + 0.1 - (time.monotonic() - t_ready)))
    acker.cancel()
    assert since > crossing * 1000, "no press after the boundary"
    assert got == (start_s * 1000 + since) % 2**32


STAMP_JOB = """
import json, micropython, sys, time
import app

class Bare(app.App):  # App's uptime state only (no board)
    def __init__(self):
        self._up_last = time.ticks_ms()
        self._up_s = 0
        self._up_ms = 0
        self.up_hi = 0
        self.up_lo = 0

def locked(f, arg):
    micropython.heap_lock()
    try:
        f(arg)
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

def old_ms32(a):  # what app.py did before
    a.uptime()
    a.up_hi = (a._up_s * 1000 + a._up_ms) & 0xFFFFFFFF

out = {"maxsize": sys.maxsize, "cases": []}
a = Bare()
for s, ms, back in CASES:
    a._up_s = s
    a._up_ms = ms
    a._up_last = t0 = time.ticks_ms()
    ok = locked(a.stamp, back)
    late = time.ticks_diff(time.ticks_ms(), t0)  # real ms that uptime() may have added
    hi, lo = a.up_hi, a.up_lo
    a._up_s = s
    a._up_ms = ms
    a._up_last = time.ticks_ms()
    out["cases"].append([ok, hi, lo, locked(old_ms32, a), late])
print("RESULT", json.dumps(out))
"""


def test_stamp_allocates_nothing_past_2_30_2_31_2_32(tmp_path: Path, frozen32_binary: Path) -> None:
    """App.stamp(), the uptime part of the alarm path, under micropython.heap_lock() at
    uptimes across each boundary (and the debounce's step back across it)."""
    cases: list[tuple[int, int, int]] = [(0, 0, 0), (0, 3, 5)]
    for b in (2**30, 2**31, 2**32):
        s, ms = divmod(b, 1000)
        cases += [(s, ms, 0), (s, ms, 1), (s, ms + 1, 0), (s + 1, 0, 0), (s + 86400, 123, 7)]
    script = tmp_path / "stamp.py"
    script.write_text(textwrap.dedent(STAMP_JOB).replace("CASES", repr(cases)))
    out: dict[str, Any] = job_result([str(frozen32_binary), "-X", "heapsize=64K", str(script)])
    assert out["maxsize"] == 2**31 - 1  # a 32-bit build: small ints end at 2^30
    for (s, ms, back), (ok, hi, lo, old_ok, late) in zip(cases, out["cases"], strict=True):
        want = (s * 1000 + ms - back) % 2**32
        assert ok, f"stamp allocated at uptime {s * 1000 + ms} ms"
        # uptime() counts the real ms since the case was set: on a busy machine one or
        # two may pass before stamp() reads the clock, never more than measured after it
        assert 0 <= ((hi << 16 | lo) - want) % 2**32 <= late, (s, ms, back, hi, lo, late)
        # the lock does catch what the old arithmetic allocated: on a 32-bit build the
        # 0xFFFFFFFF mask itself is a big int, so it allocated on every alarm
        assert not old_ok, (s, ms)


ALLOC_JOB = """
import gc, json, micropython
import proto

enc = proto.Codec(257, bytes(range(32)))
buf = bytearray(80)
out = {}

def locked(f, arg):
    micropython.heap_lock()
    try:
        f(arg)
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

def crc(n):
    proto.crc16(enc.wire, n)

def cobs(n):
    proto.encode_into(enc.wire, n, buf)

def decode(n):
    proto.decode_inplace(buf, n)

def allocated(f, *args):
    f(*args)  # once before: first-call effects are not per frame
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for i in range(50):
        f(*args)
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) // 50

n = enc.frame(1, 7, 3, 0, 1, 1, 2)
out["crc16"] = locked(crc, 20)
out["encode_into"] = locked(cobs, 20)
m = proto.encode_into(enc.wire, 20, buf) - 1
out["decode_inplace"] = locked(decode, m)
out["frame"] = allocated(enc.frame, 1, 7, 3, 0, 1, 1, 2)
out["mac"] = allocated(enc._mac._digest, enc._signed[2])
print("RESULT", json.dumps(out))
"""


def test_allocates_nothing_claims_hold(tmp_path: Path, frozen32_binary: Path) -> None:
    """proto.py's "allocates nothing" (CRC, COBS both ways) under heap_lock on the frozen
    32-bit build; a frame allocates exactly what its MAC does (hashlib), as it says."""
    script = tmp_path / "alloc.py"
    script.write_text(ALLOC_JOB)
    out = job_result([str(frozen32_binary), "-X", "heapsize=64K", str(script)])
    assert out["crc16"] and out["encode_into"] and out["decode_inplace"], out
    assert out["frame"] == out["mac"] > 0, out


OUTBOX_JOB = """
import json, micropython, time
import outbox

class Line:  # the link as the outbox sees it: busy(), send() and poll()
    def busy(self):
        return False
    def send(self, buf, n, off=0):
        pass
    def poll(self):
        pass

ob = outbox.Outbox(Line(), None, 200, 30000, 9600)
wire = bytearray(28)
out = {}

def locked(f):  # f takes no arguments: a call with *args would allocate its own
    micropython.heap_lock()
    try:
        f()
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

out["sample"] = locked(lambda: ob._sample(40))  # a 40 ms round trip
ob.remember(4, 7, 4, True)  # a heartbeat, timed
out["heartbeat_ack"] = locked(lambda: ob.recent_type(7, 4))
ob.add(1, 7, 3, wire, 28, 2, False)  # a FAULT-like frame: RAM only, sent once
out["ack"] = locked(lambda: ob.ack(7, 3))  # timed too
ob.add(1, 7, 5, wire, 28, 2, False)
out["resend"] = locked(lambda: ob._send(0, time.ticks_ms()))  # back-off and jitter
out["resent_ack"] = locked(lambda: ob.ack(7, 5))  # either copy's: no sample
out["second_ack"] = locked(lambda: ob.recent_type(7, 5))  # both arrived: the copy was needless
out["rto"] = ob.rto_ms
out["needless"] = ob.needless
out["retries"] = ob.retries
print("RESULT", json.dumps(out))
"""


def test_retransmission_timing_allocates_nothing(tmp_path: Path, frozen32_binary: Path) -> None:
    """The outbox's learnt timeout on the 32-bit frozen build: round-trip samples (an ACK
    of a heartbeat, of a frame sent once), a retransmission's back-off and jitter, and
    the needless-copy check (a second ACK of a frame sent twice), each under
    micropython.heap_lock()."""
    script = tmp_path / "outbox_job.py"
    script.write_text(textwrap.dedent(OUTBOX_JOB))
    out: dict[str, Any] = job_result([str(frozen32_binary), "-X", "heapsize=64K", str(script)])
    for step in ("sample", "heartbeat_ack", "ack", "resend", "resent_ack", "second_ack"):
        assert out[step], f"{step} allocated: {out}"
    # learnt below the 200 ms ceiling, never below 9600 baud's frame + ACK air time
    assert (57 * 10 * 1000 + 9599) // 9600 + 2 <= out["rto"] < 200, out
    assert (out["retries"], out["needless"]) == (1, 1), out


WAKE_JOB = """
import asyncio, gc, json
from feedback import Feedback
from outbox import Outbox

class B:  # the board as the feedback sees it
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

fb = Feedback(B())
ob = Outbox(Line(), None)
wire = bytearray(28)
out = {"feedback": [], "outbox": []}

async def main():
    tasks = (asyncio.create_task(fb.run()), asyncio.create_task(ob.run()))
    for i in range(12):
        fb.show(led="received")  # steady: the task goes idle (sleeps untimed)
        await asyncio.sleep_ms(120)
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        fb.show(led="sending")  # a press: blink, which wakes it to time the next step
        await asyncio.sleep_ms(2)
        out["feedback"].append(gc.mem_alloc() - a)
        a = gc.mem_alloc()
        ob.add(1, 7, 10 + i, wire, 28, 2, False)  # sent at once; wakes the idle task
        await asyncio.sleep_ms(2)
        out["outbox"].append(gc.mem_alloc() - a)
        gc.enable()
        ob.ack(7, 10 + i)
        await asyncio.sleep_ms(ob.rto_ms + 20)  # nothing pending: idle again
    for t in tasks:
        t.cancel()
    print("RESULT", json.dumps(out))

asyncio.run(main())
"""


def test_a_wake_up_from_idle_allocates_nothing(tmp_path: Path, frozen32_binary: Path) -> None:
    """A press wakes two sleeping tasks: the feedback's (a new pattern to step) and the
    outbox's (a frame to time the retry of). On the 32-bit frozen build neither wake-up,
    nor the timed sleep that follows it, allocates (gc.mem_alloc() with gc disabled).
    sleeper.py's timer task and the CancelledError of an early wake cost 208 bytes each."""
    script = tmp_path / "wake_job.py"
    script.write_text(textwrap.dedent(WAKE_JOB))
    out: dict[str, list[int]] = job_result(
        [str(frozen32_binary), "-X", "heapsize=64K", str(script)], timeout=60
    )
    # the first round may still meet a one-off (a dict or a queue growing once)
    assert out["feedback"][1:] == [0] * 11, out
    assert out["outbox"][1:] == [0] * 11, out
