# Boot-only code: the unit's configuration (unit.json + unit.key, written by `campusguard
# deploy` or gateway.vboard.prepare_unit_dir), the boot record (epoch + 1 stored before
# anything is sent, the crash-loop count, safe mode), the outbox reload, the boot frames
# and the tasks. app.main() imports it and drops it from sys.modules; once boot() has
# returned nothing refers to this module and its code is freed (README.md, "Memory").
#
# Times in boards.yaml units (heartbeat_s, ...) with optional *_ms overrides for tests
# and benches.
import asyncio
import gc
import json
import os
import struct
import time
from micropython import const

import proto
from app import App, Cfg

_FAULT = const(0x06)
_F_WATCHDOG_RESET = const(5)
_F_SAFE_MODE = const(6)
_F_STORAGE = const(7)
_SAFE = const(1)  # boot record flags: this boot ran in safe mode
_EPOCH_MAX = const(0xFFFFFFFF)
_W = const(28)  # outbox.py: bytes per slot
_STORAGE_RETRY_MAX_MS = const(10000)

# unit.json: name -> default, in ms where a name ends in _ms ("*_s"/"*_h" in
# boards.yaml units are read too: heartbeat_s, cancel_window_s, ...)
_INTS = (
    ("baud", 115200), ("long_press_ms", 3000), ("debounce_ms", 5), ("stuck_ms", 30000),
    ("cancel_presses", 5), ("cancel_gap_ms", 700), ("retry_first_ms", 200),
    ("retry_cap_ms", 30000), ("wdt_ms", 8000), ("low_battery_mv", 3400),
    ("battery_ok_mv", 3550), ("battery_poll_ms", 5000), ("tamper_debounce_ms", 20),
    ("mains_debounce_ms", 5000),
    # the first heartbeat goes out at a random moment within boot_spread_ms
    ("boot_spread_ms", 2000),
    # safe mode: after safe_after boots in a row that crashed before healthy_ms
    ("safe_after", 3),
    # test hook: crash the app this long after boot, unless in safe mode (0: never)
    ("test_crash_ms", 0),
    # test hook: the uptime the unit starts from, in s (press_ms past 2^30, 2^31, 2^32)
    ("test_uptime_s", 0),
)
# name_ms, or name_s / name_h (unit, factor), default in that unit
_TIMES = (
    ("heartbeat_ms", "heartbeat_s", 1000, 60),
    ("cancel_window_ms", "cancel_window_s", 1000, 30),
    ("incident_window_ms", "incident_window_s", 1000, 120),
    ("test_interval_ms", "test_interval_h", 3600000, 24),
    ("healthy_ms", "healthy_s", 1000, 60),
)
_KINDS = {"panic": 0, "silent": 2, "medical": 3, "fire": 4, "other": 5}


def load(root):
    """Read unit.json and unit.key from the unit's root folder into an app.Cfg;
    ValueError/OSError/KeyError/TypeError if either is missing or wrong (TypeError:
    valid JSON of the wrong shape, a list or a null where a number belongs)."""
    with open(root + "unit.json") as f:
        d = json.load(f)
    with open(root + "unit.key") as f:
        text = f.read().strip()
    if len(text) != 64:
        raise ValueError("unit.key: need 64 hex digits")
    key = bytearray(32)
    for i in range(32):
        key[i] = int(text[2 * i : 2 * i + 2], 16)
    c = Cfg()
    c.key = bytes(key)
    c.addr = int(d["addr"])
    if not 1 <= c.addr <= 65534:
        raise ValueError("addr out of range")
    c.role = d.get("role", "shop")
    kind = d.get("kind", "panic")
    if kind not in _KINDS:
        raise ValueError("unknown kind " + kind)
    c.kind = _KINDS[kind]
    c.pins = d.get("pins", {})
    for name, default in _INTS:
        setattr(c, name, int(d.get(name, default)))
    for name, unit_name, factor, default in _TIMES:
        setattr(c, name, int(d[name]) if name in d else int(d.get(unit_name, default)) * factor)
    c.link_lost_ms = int(d.get("link_lost_ms", 3 * c.heartbeat_ms))
    return c


def build(board):
    """The App for this board's unit.json, or None (the board is told) if unconfigured."""
    root = board.root if board.root.endswith("/") else board.root + "/"
    try:
        cfg = load(root)
    except (OSError, ValueError, KeyError, TypeError) as e:
        board.unconfigured(repr(e))
        return None
    gc.collect()  # unit.json's parsed dict (fw_files: long strings) is garbage now: the boot peak
    return App(board, cfg)


def _epoch(counter, store, crashed, safe_after):
    """Take the next epoch and store it with this boot counted as not yet healthy.

    The boot record's larger valid epoch wins. `crashed`: the previous boot ended in a
    crash or a watchdog reset (not a power cut): only then does it count towards safe
    mode. Safe mode when `safe_after` boots in a row did not become healthy. False if
    storage failed: then no frame may be sent until this succeeds (boot() retries).
    """
    e, n, flags = 0, 0, 0
    for name in ("epoch.a", "epoch.b"):
        data = store.read(name)
        if data is None:
            continue
        if len(data) == 6:
            rec = struct.unpack(">IBB", data)
        elif len(data) == 4:
            rec = (struct.unpack(">I", data)[0], 0, 0)  # firmware 1.0: a healthy boot
        else:
            continue
        if rec[0] > e:
            e, n, flags = rec
    e += 1
    if e > _EPOCH_MAX:
        # 2^32 boots: unreachable in service; refuse rather than wrap and reuse
        return False
    counter.unhealthy = n if crashed else 0
    counter.safe = counter.unhealthy >= safe_after
    counter.was_safe = bool(flags & _SAFE)
    counter.count = counter.unhealthy + 1
    if not counter.store(e):
        return False
    counter.epoch = e
    counter.seq = 0
    counter.ready = True
    return True


def _reload(outbox, store):
    """Reload the frames still pending before the reboot (outbox.bin); they are due at
    once. Type and counter are read from each frame's own bytes; nothing is re-signed.
    Returns the number reloaded."""
    data = store.read("outbox.bin")
    if data is None:
        return 0
    tmp = bytearray(_W)
    pos = 0
    count = 0
    now = time.ticks_ms()
    while pos + 2 <= len(data):
        n = data[pos]
        prio = data[pos + 1]
        pos += 2
        if n < 22 or n > _W or pos + n > len(data):
            break
        tmp[: n - 1] = data[pos : pos + n - 1]  # without the 0x00 delimiter
        if proto.decode_inplace(tmp, n - 1) >= 20:
            i = outbox.free_slot()
            outbox.buf[i * _W : i * _W + n] = data[pos : pos + n]
            epoch, seq = struct.unpack_from(">IH", tmp, 4)
            outbox.put(i, tmp[1], epoch, seq, n, prio, True, now)
            count += 1
        pos += n
    return count


async def boot(app):
    """Store the epoch (and count this boot) before anything is sent (SPEC.md 1.3), send
    what happened while the unit was down, start the tasks. Returns the number of
    frames reloaded from flash."""
    board = app.board
    cfg = app.cfg
    board.wdt_start(cfg.wdt_ms)
    app.start(app.feedback.run())
    app.feedback.show(led="idle", buzzer="off")
    crashed = board.reset_cause() != "power"
    delay = 100
    while not _epoch(app.counter, app.store, crashed, cfg.safe_after):
        app.storage_fault = True
        board.log("storage: cannot store the epoch; nothing is sent until it is")
        board.wdt_feed()
        await asyncio.sleep_ms(delay)
        delay = min(delay * 2, _STORAGE_RETRY_MAX_MS)
    counter = app.counter
    safe = app.safe = counter.safe
    # frames pending before the reboot go out again first, byte for byte
    reloaded = _reload(app.outbox, app.store)
    app.start(app.link.run())
    app.outbox.kick()
    app.start(app.outbox.run())
    # what happened while we were down
    if app.storage_fault:
        app.fault(_F_STORAGE, True)
    if board.reset_cause() == "wdt":
        app.fault(_F_WATCHDOG_RESET, True)
    if safe:
        board.log("safe mode after %d crashed boots in a row" % counter.unhealthy)
        app.fault(_F_SAFE_MODE, True, counter.unhealthy)
    elif counter.was_safe:
        app.fault(_F_SAFE_MODE, False)
    app.battery_mv = board.battery_mv()
    if not safe:
        app.check_battery()
        if board.input("tamper") is not None:
            app.check_tamper()
            app.start(app.tamper())
        try:
            os.stat(board.root + "/install.test")
            app.manual_test()  # first boot after a deploy: the installation test
        except OSError:
            pass
    app.start(app.button.run())
    app.start(app.heartbeat())
    return reloaded  # app.run() starts the check-in button and tells the board
