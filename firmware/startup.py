# Boot-only code: the unit's configuration (unit.json + unit.key, written by `campusguard
# deploy` or gateway.sim.vboard.prepare_unit_dir), the boot record (epoch + 1 stored before
# anything is sent, the crash-loop count, safe mode), the outbox reload, the boot frames
# and the tasks. main.py imports it and drops it from sys.modules; once boot() has
# returned nothing refers to this module and its code is freed (README.md, "Memory").
#
# Times in boards.yaml units (heartbeat_s, ...) with optional *_ms overrides for tests
# and benches.
import asyncio
import gc
import json
import os
from array import array
from micropython import const

from app import App

_FAULT = const(0x06)
_F_WATCHDOG_RESET = const(5)
_F_SAFE_MODE = const(6)
_F_STORAGE = const(7)
_STORAGE_RETRY_MAX_MS = const(10000)

# unit.json -> the settings array App reads (app.py's _C_* indexes, in this order:
# _INTS, then _TIMES, then link_lost_ms, addr, kind, role, mains;
# tests/firmware/test_consts.py checks that the two files agree). The names stay in
# these const tables, which go with this module after boot: an attribute per setting
# cost a qstr for its name (never freed) and a map entry each for the unit's life.
# Ms where a name ends in _ms ("*_s"/"*_h" in boards.yaml units are read too:
# heartbeat_s, cancel_window_s, ...).
_INTS = const((
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
))
# name_ms, or name_s / name_h (unit, factor), default in that unit
_TIMES = const((
    ("heartbeat_ms", "heartbeat_s", 1000, 60),
    ("cancel_window_ms", "cancel_window_s", 1000, 30),
    ("incident_window_ms", "incident_window_s", 1000, 120),
    ("test_interval_ms", "test_interval_h", 3600000, 24),
    ("healthy_ms", "healthy_s", 1000, 60),
))
_C_WDT_MS = const(8)
_C_SAFE_AFTER = const(15)
_C_HEARTBEAT_MS = const(18)
_C_ROLE = const(26)
_SMALL_MAX = const(0x3FFFFFFF)  # a 32-bit port's largest small int, 2^30 - 1
_ROLE_CHECKPOINT = const(2)
# ALARM kinds by unit.json's name (index = wire kind; 1, duress, is a gesture) and the
# roles app.py tells apart (0: any other)
_KINDS = const(("panic", "", "silent", "medical", "fire", "other"))
_ROLES = const(("", "guard_post", "checkpoint"))


def load(root):
    """Read unit.json and unit.key from the unit's root folder: (settings, key), the
    settings an array in app.py's _C_* order. ValueError/OSError/KeyError/TypeError if
    either is missing or wrong (TypeError: valid JSON of the wrong shape, a list or a
    null where a number belongs; ValueError: a number at or beyond 2^30)."""
    with open(root + "unit.json") as f:
        d = json.load(f)
    with open(root + "unit.key") as f:
        text = f.read().strip()
    if len(text) != 64:
        raise ValueError("unit.key: need 64 hex digits")
    key = bytearray(32)
    for i in range(32):
        key[i] = int(text[2 * i : 2 * i + 2], 16)
    addr = int(d["addr"])
    if not 1 <= addr <= 65534:
        raise ValueError("addr out of range")
    kind = d.get("kind", _KINDS[0])
    if not kind or kind not in _KINDS:
        raise ValueError("unknown kind " + kind)
    role = d.get("role")  # shop, home, campus: 0
    # only whether there is a mains sense: the board reads the pins itself, and the dict
    # (with its non-qstr names) would stay on the heap for the unit's life
    pins = d.get("pins", {})
    names = [row[0] for row in _INTS + _TIMES]
    v = [int(d.get(name, default)) for name, default in _INTS]
    for name, unit_name, factor, default in _TIMES:
        v.append(int(d[name]) if name in d else int(d.get(unit_name, default)) * factor)
    v.append(int(d.get("link_lost_ms", 3 * v[_C_HEARTBEAT_MS])))
    names.append("link_lost_ms")
    for i in range(len(v)):
        # small ints on a 32-bit port (no big int in the periodic work), and an
        # array("i") would wrap anything beyond 32 bits without a word
        if not -_SMALL_MAX <= v[i] <= _SMALL_MAX:
            raise ValueError(names[i] + " out of range")
    v.append(addr)
    v.append(_KINDS.index(kind))
    v.append(_ROLES.index(role) if role in _ROLES else 0)
    v.append(1 if isinstance(pins, dict) and "mains" in pins else 0)
    return array("i", v), bytes(key)


def build(board):
    """The App for this board's unit.json, or None (the board is told) if unconfigured."""
    root = board.root if board.root.endswith("/") else board.root + "/"
    try:
        cfg, key = load(root)
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as e:
        board.unconfigured(repr(e))
        return None
    gc.collect()  # unit.json's parsed dict (fw_files: long strings) is garbage now: the boot peak
    return App(board, cfg, key)


async def boot(app):
    """Store the epoch (and count this boot) before anything is sent (SPEC.md 1.3), send
    what happened while the unit was down, start the tasks. Returns the number of
    frames reloaded from flash."""
    board = app.board
    cfg = app.cfg
    board.wdt_start(cfg[_C_WDT_MS])
    app.start(app.feedback.run())
    app.feedback.show(led="idle", buzzer="off")
    crashed = board.reset_cause() != "power"
    delay = 100
    while not app.counter.begin(crashed, cfg[_C_SAFE_AFTER]):
        app.storage_fault = True
        board.log("storage: cannot store the epoch; nothing is sent until it is")
        board.wdt_feed()
        await asyncio.sleep_ms(delay)
        delay = min(delay * 2, _STORAGE_RETRY_MAX_MS)
    counter = app.counter
    safe = app.safe = counter.safe
    # frames pending before the reboot go out again first, byte for byte
    reloaded = app.outbox.reload()
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
    if cfg[_C_ROLE] != _ROLE_CHECKPOINT:
        # a patrol checkpoint has no alarm button: nothing it does may send ALARM
        app.start(app.button.run())
    app.start(app.heartbeat())
    return reloaded  # app.run() starts the check-in button and tells the board
