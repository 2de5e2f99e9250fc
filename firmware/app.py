# The unit: what a press, a hold, a tamper switch, mains or a battery reading turns into
# on the wire, and what the unit shows. README.md explains the gestures.
#
# Each layer is handed the next in its constructor: board -> Link (framing) -> Outbox
# (delivery) -> App (this file). App owns every task it starts and cancels them in stop().
# A guard post's check-in button lives in checkin.py, imported only where there is one.
#
# Safe mode (README.md): after `safe_after` boots in a row that crashed before running
# healthy for healthy_ms, the unit runs only what an alarm needs: the alarm button,
# delivery until ACK, heartbeats (flag SAFE_MODE), FAULT safe_mode. Everything optional
# (tests, SIGNAL display, check-in, tamper/battery/mains supervision) stays off.
import asyncio
import gc
import random
import time
from micropython import const

import proto
from button import Button
from counter import Counter
from feedback import Feedback
from link import Link
from outbox import Outbox
from storage import Store
from uptime import Uptime

# wire numbers (SPEC.md 2; tests/firmware/test_consts.py checks them against protocol/)
_ALARM = const(0x01)
_CANCEL = const(0x02)
_CHECKIN = const(0x03)
_HEARTBEAT = const(0x04)
_TEST = const(0x05)
_FAULT = const(0x06)
_ACK = const(0x81)
_SIGNAL = const(0x82)
_KIND_DURESS = const(1)
_KIND_SILENT = const(2)
_F_TAMPER = const(1)
_F_BUTTON_STUCK = const(2)
_F_LOW_BATTERY = const(3)
_F_MAINS_LOST = const(4)
_F_WATCHDOG_RESET = const(5)
_F_SAFE_MODE = const(6)
_F_STORAGE = const(7)
_F_LINK_LOST = const(8)
_HB_TAMPER = const(0x01)
_HB_LOW_BATTERY = const(0x02)
_HB_MAINS_LOST = const(0x04)
_HB_BUTTON_STUCK = const(0x08)
_HB_SAFE_MODE = const(0x10)
_HB_ALARM_PENDING = const(0x20)
_ACK_POLICE = const(2)
_ACK_CANCELLED = const(3)
_SIG_STOP = const(0)
_SIG_PROMPT = const(1)
_SIG_LOCATE = const(2)
_SIG_ESCALATED = const(3)
_R_REPLAYED = const(8)
_TEST_PERIODIC = const(0)
_TEST_MANUAL = const(1)
# TEST result bits (SPEC.md 2.5)
_T_BATTERY = const(1)
_T_BUTTON = const(2)
_T_STORAGE = const(4)
_T_SOUNDER = const(8)
# outbox priorities (outbox.py)
_PRIO_KEEP = const(0)
_PRIO_FOLD = const(1)
_PRIO_INFO = const(2)

_FW_MAJOR = const(1)  # the firmware version: HEARTBEAT `fw` = major << 8 | minor
_FW_MINOR = const(1)
_FW = const((_FW_MAJOR << 8) | _FW_MINOR)
_SUPERVISE_MS = const(100)
_GC_EVERY_MS = const(5000)
_CANCELLED_SHOW_MS = const(5000)
_STORAGE_RETRY_MAX_MS = const(10000)
_TEST_STEP_MS = const(60000)  # long waits in steps: asyncio's ticks reach 2^29 ms only
_MAINS_POLL_MS = const(250)
_LBT_WAIT_MAX_MS = const(100)
_INSTALL_TEST = "install.test"  # written by deploy; removed once the TEST is ACKed
_SELFTEST = "selftest"

_app = None  # the running App (for request_test())


def _rand(n):
    """A random int in [0, n) (n < 2^22; 8 bits of randomness are enough for spacing)."""
    return (n * random.getrandbits(8)) >> 8


class App:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.store = Store(board.root)
        self.counter = Counter(self.store)
        self.uptime = Uptime()
        self.enc = proto.Encoder(cfg.addr, cfg.key)
        self.dec = proto.Decoder(cfg.addr, cfg.key)
        self.link = Link(board.uart(cfg.baud), self.dec, self.on_frame)
        self.outbox = Outbox(self.link, self.store, cfg.retry_first_ms, cfg.retry_cap_ms)
        self.feedback = Feedback(board)
        self.button = Button(
            board.input("button"), self, cfg.debounce_ms, cfg.long_press_ms, cfg.stuck_ms
        )
        self.checkin = None  # checkin.Checkin on a guard post (not in safe mode)
        self.tamper_in = board.input("tamper")
        self.mains_in = board.input("mains") if "mains" in cfg.pins else None
        self._tasks = []
        self.safe = False
        # the open alarm series
        self._open = False
        self._kind = cfg.kind
        self._quiet = False
        self._presses = 0
        self._first_ms = 0
        self._first_epoch = 0
        self._first_seq = 0
        self._opened = 0
        self._last_press = 0
        self._burst = 0  # presses in the current cancel burst; -1: not eligible
        self._ack_state = 0
        self._alarm_owed = False
        # conditions
        self.tamper_open = False
        self.low_battery = False
        self.button_stuck = False
        self.mains_lost = False
        self.battery_mv = 0
        self.storage_fault = False
        self._last_ack = time.ticks_ms()
        self._link_lost = False
        self._signal = False
        self._dl_epoch = 0
        self._dl_seq = 0
        self._dl_any = False
        self._healthy_stored = False
        # the manual TEST awaiting its ACK (-1: none)
        self._mtest_epoch = 0
        self._mtest_seq = -1
        self.last_epoch = 0
        self.last_seq = 0
        self.heartbeats = 0

    # ---------------------------------------------------------------- sending

    def send(self, mtype, a=0, b=0, c=0, d=0, prio=_PRIO_INFO, persist=False, reliable=True):
        """Sign and send one frame now; reliable frames go through the outbox (retried
        until ACKed, alarm-class ones stored first). False if no counter was available."""
        seq = self.counter.next()
        if seq < 0:
            self.storage_fault = True
            return False
        epoch = self.counter.epoch
        n = self.enc.frame(mtype, epoch, seq, a, b, c, d)
        self.last_epoch = epoch
        self.last_seq = seq
        if reliable:
            if not self.outbox.add(mtype, epoch, seq, self.enc.wire, n, prio, persist):
                self.storage_fault = True
        else:
            self.link.send(self.enc.wire, n)
            self.outbox.remember(mtype, epoch, seq)
        return True

    def fault(self, code, active, detail=0):
        self.send(_FAULT, code, 1 if active else 0, detail & 0xFFFF)

    def heartbeat_flags(self):
        f = 0
        if self.tamper_open:
            f |= _HB_TAMPER
        if self.low_battery:
            f |= _HB_LOW_BATTERY
        if self.mains_lost:
            f |= _HB_MAINS_LOST
        if self.button_stuck:
            f |= _HB_BUTTON_STUCK
        if self.safe:
            f |= _HB_SAFE_MODE
        if self.outbox.pending(_ALARM):
            f |= _HB_ALARM_PENDING
        return f

    # ---------------------------------------------------------------- the alarm button

    def _send_alarm(self, prio):
        ok = self.send(_ALARM, self._kind, self._presses, self._first_ms, prio=prio, persist=True)
        self._alarm_owed = not ok
        return ok

    def on_press(self, t0):
        now = time.ticks_ms()
        self.stop_signal()
        if not self._open:
            self._open = True
            self._kind = self.cfg.kind
            self._quiet = self._kind == _KIND_SILENT
            self._presses = 1
            # press_ms: uptime at the first edge, not after the debounce
            self._first_ms = (self.uptime.ms32() - time.ticks_diff(now, t0)) & 0xFFFFFFFF
            self._opened = t0
            self._burst = -1  # presses run together with the opening one never cancel
            self._ack_state = 0
            if self._send_alarm(_PRIO_KEEP):
                self._first_epoch = self.last_epoch
                self._first_seq = self.last_seq
        else:
            if self._presses < 255:
                self._presses += 1
            if time.ticks_diff(t0, self._last_press) > self.cfg.cancel_gap_ms:
                self._burst = 1
            elif self._burst > 0:
                self._burst += 1
            self._send_alarm(_PRIO_FOLD)
        self._last_press = t0
        # nothing is shown yet: this press may become a silent duress hold

    def on_long(self, t0):
        self._burst = -1
        if self._open and self._kind != _KIND_DURESS:
            # the panic went out on the leading edge; the hold upgrades it: a separate
            # ALARM kind=duress of the same series (same press_ms) that the gateway folds
            self._kind = _KIND_DURESS
            self._quiet = True
            self._send_alarm(_PRIO_KEEP)
            self.feedback.show(led=self._base_led(), buzzer="off")

    def on_release(self, t0, held_ms, was_long):
        if was_long or self._quiet or not self._open:
            return
        self.feedback.show(led=self._series_led(), buzzer="chirp")

    def on_stuck(self, held_ms):
        self.stuck(True)

    def on_unstuck(self, held_ms):
        self.stuck(False)

    def stuck(self, active):
        if active != self.button_stuck:
            self.button_stuck = active
            self.fault(_F_BUTTON_STUCK, active)
            self._show_base()

    def _series_led(self):
        s = self._ack_state
        return "police_ack" if s == 2 else "received" if s == 1 else "sending"

    def _maybe_cancel(self, now):
        """A burst of exactly cancel_presses quick presses, ended by a pause, after a
        pause from the opening press and within cancel_window: CANCEL."""
        cfg = self.cfg
        if self._burst <= 0 or self.button.pressed:
            return
        if time.ticks_diff(now, self._last_press) <= cfg.cancel_gap_ms:
            return
        burst = self._burst
        self._burst = 0
        if burst != cfg.cancel_presses:
            return
        if time.ticks_diff(self._last_press, self._opened) > cfg.cancel_window_ms:
            return
        if self._kind == _KIND_DURESS:
            # a coerced cancel is what an attacker would demand: never sent for duress
            return
        self.send(_CANCEL, self._first_epoch, self._first_seq, prio=_PRIO_KEEP, persist=True)
        self._open = False
        if not self._quiet:
            self.feedback.show(
                led="cancelled", buzzer="cancelled", duration_ms=_CANCELLED_SHOW_MS,
                led_then=self._base_led(),
            )

    # ---------------------------------------------------------------- downlink

    def on_frame(self, dec):
        if dec.mtype == _ACK:
            self._on_ack(dec.ref_epoch, dec.ref_seq, dec.state)
        elif dec.mtype == _SIGNAL and not self.safe:
            if self._dl_any and not proto.counter_above(
                dec.epoch, dec.seq, self._dl_epoch, self._dl_seq
            ):
                dec.rejects[_R_REPLAYED] += 1
                return
            self._dl_any = True
            self._dl_epoch = dec.epoch
            self._dl_seq = dec.seq
            self._on_signal(dec.pattern, dec.duration_s)

    def _on_ack(self, epoch, seq, state):
        mtype = self.outbox.ack(epoch, seq)
        if mtype == 0:
            mtype = self.outbox.recent_type(epoch, seq)
            if mtype == 0:
                return  # not a counter we sent (lately): ignored
        now = time.ticks_ms()
        if self._link_lost:
            self._link_lost = False
            self.fault(_F_LINK_LOST, False, time.ticks_diff(now, self._last_ack) // 1000)
            self._show_base()
        self._last_ack = now
        if mtype == _ALARM and self._open and not proto.counter_above(
            self._first_epoch, self._first_seq, epoch, seq
        ):
            if state > self._ack_state:
                self._ack_state = state
                if not self._quiet and not self.button.pressed:
                    self.feedback.show(
                        led=self._series_led(),
                        buzzer="police_ack" if state == _ACK_POLICE else "received",
                    )
        elif mtype == _CANCEL and state == _ACK_CANCELLED and not self._quiet:
            self.feedback.show(led="cancelled", duration_ms=_CANCELLED_SHOW_MS,
                               led_then=self._base_led())
        elif mtype == _CHECKIN and self.checkin is not None:
            self.checkin.acked(now)
        elif mtype == _TEST and epoch == self._mtest_epoch and seq == self._mtest_seq:
            # the installation test is in the gateway's journal: done until asked again
            self._mtest_seq = -1
            self.store.remove(_INSTALL_TEST)
            self.board.log("test acked")

    def _on_signal(self, pattern, duration_s):
        if pattern == _SIG_STOP:
            self.stop_signal()
            return
        if self._open:
            return  # an alarm in progress keeps the unit's outputs (and duress its silence)
        name = (
            "prompt" if pattern == _SIG_PROMPT
            else "locate" if pattern == _SIG_LOCATE
            else "escalated" if pattern == _SIG_ESCALATED
            else None
        )
        if name is None:
            return
        self._signal = True
        self.feedback.show(led=name, buzzer=name, duration_ms=duration_s * 1000,
                           led_then=self._base_led())

    def stop_signal(self):
        if self._signal:
            self._signal = False
            self.feedback.show(led=self._base_led(), buzzer="off")

    # ---------------------------------------------------------------- what is shown

    def _base_led(self):
        if self._link_lost:
            return "no_link"
        if self.tamper_open or self.low_battery or self.button_stuck or self.mains_lost:
            return "fault"
        return "idle"

    def _show_base(self):
        if not self._open and not self._signal:
            self.feedback.show(led=self._base_led())

    # ---------------------------------------------------------------- tests

    def self_test(self):
        """TEST `result`: 0 = all passed; bit 0 battery low, 1 button stuck, 2 storage
        (a record cannot be written and read back), 3 sounder (board check)."""
        r = 0
        if self.low_battery:
            r |= _T_BATTERY
        if self.button_stuck:
            r |= _T_BUTTON
        if self.storage_fault or not self._storage_ok():
            r |= _T_STORAGE
        if not self.board.sounder_ok():
            r |= _T_SOUNDER
        return r

    def _storage_ok(self):
        mark = bytes((self.counter.epoch & 0xFF, self.last_seq & 0xFF))
        return self.store.write(_SELFTEST, mark) and self.store.read(_SELFTEST) == mark

    def manual_test(self):
        """Send TEST kind 1 (Contact ID 601, the installer's test) now. Not in safe mode."""
        if self.safe or not self.counter.ready:
            return False
        if self.send(_TEST, _TEST_MANUAL, self.self_test(), self.battery_mv):
            self._mtest_epoch = self.last_epoch
            self._mtest_seq = self.last_seq
            return True
        return False

    async def _test(self):
        """Periodic TEST (kind 0) every test_interval_ms of uptime, in steps of at most a
        minute (a single sleep of 168 h would overflow asyncio's ticks on the ESP32)."""
        left = self.cfg.test_interval_ms
        while True:
            t0 = time.ticks_ms()
            await asyncio.sleep_ms(left if left < _TEST_STEP_MS else _TEST_STEP_MS)
            left -= time.ticks_diff(time.ticks_ms(), t0)
            if left <= 0:
                left += self.cfg.test_interval_ms
                if left <= 0:
                    left = self.cfg.test_interval_ms
                self.send(_TEST, _TEST_PERIODIC, self.self_test(), self.battery_mv)

    # ---------------------------------------------------------------- tasks

    def _start(self, coro):
        t = asyncio.create_task(coro)
        self._tasks.append(t)
        return t

    async def _tamper(self):
        inp = self.tamper_in
        while True:
            await inp.flag.wait()
            await asyncio.sleep_ms(self.cfg.tamper_debounce_ms)
            self._check_tamper()

    def _check_tamper(self):
        v = bool(self.tamper_in.value())
        if v != self.tamper_open:
            self.tamper_open = v
            self.fault(_F_TAMPER, v)
            self._show_base()

    def _check_battery(self):
        mv = self.board.battery_mv()
        self.battery_mv = mv
        cfg = self.cfg
        if mv and not self.low_battery and mv < cfg.low_battery_mv:
            self.low_battery = True
            self.fault(_F_LOW_BATTERY, True, mv)
            self._show_base()
        elif self.low_battery and (mv == 0 or mv >= cfg.battery_ok_mv):
            self.low_battery = False
            self.fault(_F_LOW_BATTERY, False, mv)
            self._show_base()

    async def _battery(self):
        while True:
            await asyncio.sleep_ms(self.cfg.battery_poll_ms)
            self._check_battery()

    async def _mains(self, inp):
        """Mains sense (high while present), sampled every 250 ms; a change counts once
        the new level has held for mains_debounce_ms (a flicker is not a mains loss)."""
        since = time.ticks_ms()
        while True:
            lost = not inp.value()
            now = time.ticks_ms()
            if lost == self.mains_lost:
                since = now
            elif time.ticks_diff(now, since) >= self.cfg.mains_debounce_ms:
                self.mains_lost = lost
                self.fault(_F_MAINS_LOST, lost)
                self._show_base()
            await asyncio.sleep_ms(_MAINS_POLL_MS)

    def send_heartbeat(self):
        self.heartbeats += 1
        self.send(
            _HEARTBEAT, self.battery_mv, self.uptime.s(), _FW, self.heartbeat_flags(),
            reliable=False,
        )

    async def _heartbeat(self):
        # units on one bus or radio channel powered up together must not send their
        # heartbeats together for ever: a random offset at boot, then +-10 % each time
        spread = self.cfg.boot_spread_ms
        if spread > 0:
            await asyncio.sleep_ms(_rand(spread))
        while True:
            waited = 0
            while self.link.busy() and waited < _LBT_WAIT_MAX_MS:
                d = 2 + _rand(8)  # listen before talk: someone else is sending
                await asyncio.sleep_ms(d)
                waited += d
            self.send_heartbeat()
            hb = self.cfg.heartbeat_ms
            await asyncio.sleep_ms(hb - hb // 10 + _rand(hb // 5))

    def _supervise(self, now):
        cfg = self.cfg
        self.uptime.fold()
        self._maybe_cancel(now)
        if self.checkin is not None:
            self.checkin.supervise(now)
        if self._alarm_owed and self.counter.ready:
            self._send_alarm(_PRIO_KEEP)
        if (
            self._open
            and not self.button.pressed
            and self.outbox.pending(_ALARM) == 0
            and time.ticks_diff(now, self._last_press) > cfg.incident_window_ms
        ):
            self._open = False
            self.feedback.show(led=self._base_led(), buzzer="off")
        if not self._link_lost and time.ticks_diff(now, self._last_ack) > cfg.link_lost_ms:
            self._link_lost = True
            self.fault(_F_LINK_LOST, True, time.ticks_diff(now, self._last_ack) // 1000)
            self._show_base()

    def _healthy(self):
        """True while every task of every layer is still running (else: no feed, and the
        watchdog resets the unit)."""
        for t in self._tasks:
            if t.done():
                return False
        for part in (self.button, self.outbox, self.link, self.feedback):
            if part._task is None or part._task.done():
                return False
        return self.checkin is None or self.checkin.alive()

    async def _boot(self):
        """Store the epoch (and count this boot) before anything is sent (SPEC.md 1.3)."""
        board = self.board
        cfg = self.cfg
        crashed = board.reset_cause() != "power"
        delay = 100
        while not self.counter.boot(crashed, cfg.safe_after):
            self.storage_fault = True
            board.log("storage: cannot store the epoch; nothing is sent until it is")
            board.wdt_feed()
            await asyncio.sleep_ms(delay)
            delay = min(delay * 2, _STORAGE_RETRY_MAX_MS)
        self.safe = self.counter.safe

    async def run(self):
        global _app
        _app = self
        board = self.board
        cfg = self.cfg
        board.wdt_start(cfg.wdt_ms)
        self.feedback.start()
        self.feedback.show(led="idle", buzzer="off")
        await self._boot()
        safe = self.safe
        # frames pending before the reboot go out again first, byte for byte
        reloaded = self.outbox.load()
        self.link.start()
        self.outbox.kick()
        self.outbox.start()
        # what happened while we were down
        if self.storage_fault:
            self.fault(_F_STORAGE, True)
        if board.reset_cause() == "wdt":
            self.fault(_F_WATCHDOG_RESET, True)
        if safe:
            board.log("safe mode after %d crashed boots in a row" % self.counter.unhealthy)
            self.fault(_F_SAFE_MODE, True, self.counter.unhealthy)
        elif self.counter.was_safe:
            self.fault(_F_SAFE_MODE, False)
        self.battery_mv = board.battery_mv()
        if not safe:
            self._check_battery()
            if self.tamper_in is not None:
                self._check_tamper()
                self._start(self._tamper())
            if self.mains_in is not None:
                self._start(self._mains(self.mains_in))
            if cfg.role == "guard_post" and board.input("checkin") is not None:
                from checkin import Checkin

                self.checkin = Checkin(self, board.input("checkin"))
                self.checkin.start()
            self._start(self._battery())
            self._start(self._test())
            if self.store.exists(_INSTALL_TEST):
                self.manual_test()  # first boot after a deploy: the installation test
        self.button.start()
        self._start(self._heartbeat())
        board.start(self)
        board.ready(self.counter.epoch, reloaded)
        booted = last_gc = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(_SUPERVISE_MS)
            now = time.ticks_ms()
            self._supervise(now)
            if self._healthy():
                board.wdt_feed()
                if not self._healthy_stored and time.ticks_diff(now, booted) >= cfg.healthy_ms:
                    # the crash-loop count starts again; the next boot is a normal one
                    self._healthy_stored = self.counter.healthy()
                    board.log("healthy: crash-loop count cleared")
            if cfg.test_crash_ms and not safe and time.ticks_diff(now, booted) >= cfg.test_crash_ms:
                raise RuntimeError("test_crash_ms")  # test hook (unit.json): a crash loop
            if time.ticks_diff(now, last_gc) > _GC_EVERY_MS:
                last_gc = now
                gc.collect()

    def stop(self):
        global _app
        _app = None
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self.button.stop()
        if self.checkin is not None:
            self.checkin.stop()
        self.outbox.stop()
        self.link.stop()
        self.feedback.stop()
        self.board.stop()


def request_test(root="/"):
    """The installer's test: TEST kind 1 (Contact ID 601).

    On a running unit (the virtual board's `test` command) it goes out now. At the REPL
    (the unit stopped by mpremote) it is marked in flash and goes out at the next boot:
        mpremote exec "import app; app.request_test()" + reset
    Returns True if sent now, False if marked for the next boot.
    """
    if _app is not None and _app.manual_test():
        return True
    s = Store(root)
    s.write(_INSTALL_TEST, b"repl")
    return False


def main(board):
    """Load the unit's config and run it; a crash resets the board (the watchdog would)."""
    import sys

    import unitcfg

    try:
        cfg = unitcfg.load(board.root)
    except (OSError, ValueError, KeyError) as e:
        board.unconfigured(repr(e))
        return
    # the loader's code is needed once: free it before the unit starts
    del unitcfg
    sys.modules.pop("unitcfg", None)
    gc.collect()
    app = App(board, cfg)
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        app.stop()
        board.maintenance()
    except Exception as e:  # any bug: log it and restart clean, as the watchdog would
        board.crashed(e)
