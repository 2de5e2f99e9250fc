# The unit: what a press, a hold, a tamper switch, mains or a battery reading turns into
# on the wire, and what the unit shows. README.md explains the gestures.
#
# Each layer is handed the next in its constructor: board -> Link (framing) -> Outbox
# (delivery) -> App (this file). Each layer's task is its run(); App starts every task
# (start()), the supervisor watches them, stop() cancels them.
# A guard post's check-in button lives in checkin.py, imported only where there is one.
# A patrol checkpoint (role "checkpoint") has only that button: startup never runs the
# alarm button there, so a checkpoint never sends ALARM (a long press is a duress CHECKIN).
# The boot sequence (config, epoch, outbox reload, boot frames, tasks) is startup.py,
# which main.py wires to App and drops once the unit runs: its code does not stay in
# RAM. App never imports startup (startup imports App: no import circle).
#
# Safe mode (README.md): after `safe_after` boots in a row that crashed before running
# healthy for healthy_ms, the unit runs only what an alarm needs: the alarm button,
# delivery until ACK, heartbeats (flag SAFE_MODE), FAULT safe_mode. Everything optional
# (tests, SIGNAL display, check-in, tamper/battery/mains supervision) stays off.
#
# RAM: every function costs ~100 bytes beyond its bytecode and every attribute a map
# entry, so the periodic work (battery, mains, periodic TEST, link lost, the cancel
# gesture's end, uptime) runs in the supervisor's 100 ms tick rather than in tasks.
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
_SUPERVISE_MS = const(100)  # the supervisor's tick while something is timed (a series, ...)
_IDLE_SUPERVISE_MS = const(500)  # ... and with nothing going on
_GC_EVERY_MS = const(5000)
_CANCELLED_SHOW_MS = const(5000)
_LBT_WAIT_MAX_MS = const(100)
_INSTALL_TEST = const("install.test")  # written by deploy; removed once the TEST is ACKed

# unit.json's settings: one array("i") that startup.load() fills, indexed by these (its
# tables' order; tests/firmware/test_consts.py checks the two files agree). An attribute
# per setting cost a qstr (never freed) and a map entry each.
_C_BAUD = const(0)
_C_LONG_PRESS_MS = const(1)
_C_DEBOUNCE_MS = const(2)
_C_STUCK_MS = const(3)
_C_CANCEL_PRESSES = const(4)
_C_CANCEL_GAP_MS = const(5)
_C_RETRY_FIRST_MS = const(6)
_C_RETRY_CAP_MS = const(7)
_C_LOW_BATTERY_MV = const(9)
_C_BATTERY_OK_MV = const(10)
_C_BATTERY_POLL_MS = const(11)
_C_TAMPER_DEBOUNCE_MS = const(12)
_C_MAINS_DEBOUNCE_MS = const(13)
_C_BOOT_SPREAD_MS = const(14)
_C_TEST_CRASH_MS = const(16)
_C_TEST_UPTIME_S = const(17)
_C_HEARTBEAT_MS = const(18)
_C_CANCEL_WINDOW_MS = const(19)
_C_INCIDENT_WINDOW_MS = const(20)
_C_TEST_INTERVAL_MS = const(21)
_C_HEALTHY_MS = const(22)
_C_LINK_LOST_MS = const(23)
_C_ADDR = const(24)
_C_KIND = const(25)
_C_ROLE = const(26)  # 0, or one of:
_ROLE_GUARD_POST = const(1)
_ROLE_CHECKPOINT = const(2)
_C_MAINS = const(27)  # 1: unit.json's pins has a mains sense (the board reads the pins)

_app = None  # the running App (for request_test())


def _rand(n):
    """A random int in [0, n) (n < 2^22; 8 bits of randomness are enough for spacing)."""
    return (n * random.getrandbits(8)) >> 8


class App:
    def __init__(self, board, cfg, key):
        self.board = board
        self.cfg = cfg
        self.store = Store(board.root)
        self.counter = Counter(self.store)
        self.codec = proto.Codec(cfg[_C_ADDR], key)  # one key setup for both directions
        self.link = Link(board.uart(cfg[_C_BAUD]), self.codec, self.on_frame, board.rs485_de())
        self.outbox = Outbox(
            self.link, self.store, cfg[_C_RETRY_FIRST_MS], cfg[_C_RETRY_CAP_MS], cfg[_C_BAUD]
        )
        self.feedback = Feedback(board)
        self.button = Button(
            board.input("button"), self,
            cfg[_C_DEBOUNCE_MS], cfg[_C_LONG_PRESS_MS], cfg[_C_STUCK_MS],
        )
        self.checkin = None  # checkin.Checkin on a guard post (not in safe mode), a checkpoint
        self.tasks = []
        self.safe = False
        # uptime beyond the 2^30 ms wrap of ticks_ms (folded every supervisor tick)
        self._up_last = time.ticks_ms()
        self._up_s = cfg[_C_TEST_UPTIME_S]  # test hook (unit.json): boot as if up that long
        self._up_ms = 0
        self.up_hi = 0  # stamp(): press_ms in 16-bit halves
        self.up_lo = 0
        # the open alarm series
        self._open = False
        self._kind = cfg[_C_KIND]
        self._quiet = False
        self._presses = 0
        self._first_hi = 0  # the series' press_ms, in 16-bit halves (stamp())
        self._first_lo = 0
        self._first_epoch = 0
        self._first_seq = 0
        self._opened = 0
        self._last_press = 0
        self._burst = 0  # presses in the current cancel burst; -1: not eligible
        self._ack_state = 0
        self._alarm_owed = False
        # conditions
        # tamper open, low battery, mains lost, button stuck: as the heartbeat's flag bits
        self.flags = 0
        self.battery_mv = 0
        self.storage_fault = False
        self._last_ack = self._up_last
        self._link_lost = False
        self._signal = False
        self._dl_epoch = 0
        self._dl_seq = 0
        # the manual TEST awaiting its ACK (-1: none)
        self._mtest_epoch = 0
        self._mtest_seq = -1

    # ---------------------------------------------------------------- uptime

    def uptime(self):
        """Fold the ticks elapsed into seconds and ms (called at least every 500 ms by the
        supervisor: ticks wrap at 2^30 ms)."""
        now = time.ticks_ms()
        ms = self._up_ms + time.ticks_diff(now, self._up_last)
        self._up_last = now
        if ms >= 1000:
            q = ms // 1000
            self._up_s += q
            ms -= q * 1000
        self._up_ms = ms

    def stamp(self, ms=0):
        """Uptime minus ms, in ms modulo 2^32 (the wire's press_ms), into up_hi and
        up_lo, its 16-bit halves. On a 32-bit port small ints end at 2^30 (12.4 days of
        uptime in ms): every value here stays below that ((s & 0xFFFF) * 1000 < 2^26), so
        this makes no big int and allocates nothing."""
        self.uptime()
        s = self._up_s
        lo = (s & 0xFFFF) * 1000 + self._up_ms - ms
        # s * 1000 = (s >> 16) * 1000 * 2^16 + (s & 0xFFFF) * 1000; a negative lo
        # borrows from hi (>> floors), and & 0xFFFF wraps both modulo 2^16
        self.up_hi = ((s >> 16) * 1000 + (lo >> 16)) & 0xFFFF
        self.up_lo = lo & 0xFFFF

    # ---------------------------------------------------------------- sending

    def send(self, mtype, a=0, b=0, c=0, d=0, prio=_PRIO_INFO, persist=False, reliable=True):
        """Sign and send one frame now; reliable frames go through the outbox (retried
        until ACKed, alarm-class ones stored first). Returns its seq (its epoch is
        counter.epoch), or -1 if no counter was available."""
        seq = self.counter.next()
        if seq < 0:
            self.storage_fault = True
            return -1
        epoch = self.counter.epoch
        enc = self.codec
        n = enc.frame(mtype, epoch, seq, a, b, c, d)
        if reliable:
            if not self.outbox.add(mtype, epoch, seq, enc.wire, n, prio, persist):
                self.storage_fault = True
        else:
            self.link.send(enc.wire, n)
            self.outbox.remember(mtype, epoch, seq, True)  # sent once: its ACK is timed
        return seq

    def fault(self, code, value, arg=0):
        """FAULT `code` begins (value true) or ends; arg: its detail field."""
        self.send(_FAULT, code, 1 if value else 0, arg & 0xFFFF)

    # ---------------------------------------------------------------- the alarm button

    def _send_alarm(self, prio):
        seq = self.send(
            _ALARM, self._kind, self._presses, self._first_hi, self._first_lo,
            prio=prio, persist=True,
        )
        self._alarm_owed = seq < 0
        return seq

    def on_press(self, t):
        now = time.ticks_ms()
        self.stop_signal()
        if not self._open:
            self._open = True
            self._kind = self.cfg[_C_KIND]
            self._quiet = self._kind == _KIND_SILENT
            self._presses = 1
            # press_ms: uptime at the first edge, not after the debounce
            self.stamp(time.ticks_diff(now, t))
            self._first_hi = self.up_hi
            self._first_lo = self.up_lo
            self._opened = t
            self._burst = -1  # presses run together with the opening one never cancel
            self._ack_state = 0
            seq = self._send_alarm(_PRIO_KEEP)
            if seq >= 0:
                self._first_epoch = self.counter.epoch
                self._first_seq = seq
        else:
            if self._presses < 255:
                self._presses += 1
            if time.ticks_diff(t, self._last_press) > self.cfg[_C_CANCEL_GAP_MS]:
                self._burst = 1
            elif self._burst > 0:
                self._burst += 1
            self._send_alarm(_PRIO_FOLD)
        self._last_press = t
        # nothing is shown yet: this press may become a silent duress hold

    def on_long(self, t):
        self._burst = -1
        if self._open and self._kind != _KIND_DURESS:
            # the panic went out on the leading edge; the hold upgrades it: a separate
            # ALARM kind=duress of the same series (same press_ms) that the gateway folds
            self._kind = _KIND_DURESS
            self._quiet = True
            self._send_alarm(_PRIO_KEEP)
            self.feedback.show(led=self._base_led(), buzzer="off")

    def on_release(self, t, held_ms, was_long):
        if was_long or self._quiet or not self._open:
            return
        self.feedback.show(led=self._series_led(), buzzer="chirp")

    def stuck(self, value):
        """The button (alarm or check-in) is held for stuck_ms (True) / released (False)."""
        if value != bool(self.flags & _HB_BUTTON_STUCK):
            self.flags ^= _HB_BUTTON_STUCK
            self.fault(_F_BUTTON_STUCK, value)
            self.show_base()

    def _series_led(self):
        s = self._ack_state
        return "police_ack" if s == 2 else "received" if s == 1 else "sending"

    def _maybe_cancel(self, now):
        """A burst of exactly cancel_presses quick presses, ended by a pause, after a
        pause from the opening press and within cancel_window: CANCEL."""
        cfg = self.cfg
        if self._burst <= 0 or self.button.pressed:
            return
        if time.ticks_diff(now, self._last_press) <= cfg[_C_CANCEL_GAP_MS]:
            return
        burst = self._burst
        self._burst = 0
        if burst != cfg[_C_CANCEL_PRESSES]:
            return
        if time.ticks_diff(self._last_press, self._opened) > cfg[_C_CANCEL_WINDOW_MS]:
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

    def on_frame(self, codec):
        """A good downlink frame (ACK or SIGNAL) from the link."""
        if codec.mtype == _SIGNAL:
            if self.safe:
                return
            # a counter at or below the last SIGNAL's is a replay (the gateway's
            # epochs start at 1: the first SIGNAL is above (0, 0))
            e = codec.epoch
            if e < self._dl_epoch or (e == self._dl_epoch and codec.seq <= self._dl_seq):
                codec.rejects[_R_REPLAYED] += 1
                return
            self._dl_epoch = e
            self._dl_seq = codec.seq
            pattern = codec.pattern
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
            self.feedback.show(led=name, buzzer=name, duration_ms=codec.duration_s * 1000,
                               led_then=self._base_led())
            return
        if codec.mtype != _ACK:
            return
        epoch = codec.ref_epoch
        seq = codec.ref_seq
        state = codec.state
        mtype = self.outbox.ack(epoch, seq)
        if mtype == 0:
            mtype = self.outbox.recent_type(epoch, seq, state)
            if mtype == 0:
                return  # not a counter we sent (lately): ignored
        now = time.ticks_ms()
        if self._link_lost:
            self._link_lost = False
            self.fault(_F_LINK_LOST, False, time.ticks_diff(now, self._last_ack) // 1000)
            self.show_base()
        self._last_ack = now
        first = self._first_epoch
        if mtype == _ALARM and self._open and (
            epoch > first or (epoch == first and seq >= self._first_seq)
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

    def stop_signal(self):
        if self._signal:
            self._signal = False
            self.feedback.show(led=self._base_led(), buzzer="off")

    # ---------------------------------------------------------------- what is shown

    def _base_led(self):
        if self._link_lost:
            return "no_link"
        if self.flags:
            return "fault"
        return "idle"

    def show_base(self):
        if not self._open and not self._signal:
            self.feedback.show(led=self._base_led())

    # ---------------------------------------------------------------- tests

    def self_test(self):
        """TEST `result`: 0 = all passed; bit 0 battery low, 1 button stuck, 2 storage
        (a record cannot be written and read back), 3 sounder (board check)."""
        r = 0
        if self.flags & _HB_LOW_BATTERY:
            r |= _T_BATTERY
        if self.flags & _HB_BUTTON_STUCK:
            r |= _T_BUTTON
        mark = bytes((self.counter.epoch & 0xFF, self.counter.seq & 0xFF))
        store = self.store
        if (
            self.storage_fault
            or not store.write("selftest", mark)
            or store.read("selftest") != mark
        ):
            r |= _T_STORAGE
        if not self.board.sounder_ok():
            r |= _T_SOUNDER
        return r

    def manual_test(self):
        """Send TEST kind 1 (Contact ID 601, the installer's test) now. Not in safe mode."""
        if self.safe or not self.counter.ready:
            return False
        seq = self.send(_TEST, _TEST_MANUAL, self.self_test(), self.battery_mv)
        if seq >= 0:
            self._mtest_epoch = self.counter.epoch
            self._mtest_seq = seq
            return True
        return False

    # ---------------------------------------------------------------- supervision

    async def tamper(self):
        """The tamper switch's task (normal mode, units with a tamper input)."""
        inp = self.board.input("tamper")
        while True:
            await inp.flag.wait()
            await asyncio.sleep_ms(self.cfg[_C_TAMPER_DEBOUNCE_MS])
            self.check_tamper()

    def check_tamper(self):
        v = bool(self.board.input("tamper").value())
        if v != bool(self.flags & _HB_TAMPER):
            self.flags ^= _HB_TAMPER
            self.fault(_F_TAMPER, v)
            self.show_base()

    def check_battery(self):
        mv = self.board.battery_mv()
        self.battery_mv = mv
        cfg = self.cfg
        low = self.flags & _HB_LOW_BATTERY
        if mv and not low and mv < cfg[_C_LOW_BATTERY_MV]:
            self.flags |= _HB_LOW_BATTERY
            self.fault(_F_LOW_BATTERY, True, mv)
            self.show_base()
        elif low and (mv == 0 or mv >= cfg[_C_BATTERY_OK_MV]):
            self.flags &= ~_HB_LOW_BATTERY
            self.fault(_F_LOW_BATTERY, False, mv)
            self.show_base()

    async def heartbeat(self):
        # units on one bus or radio channel powered up together must not send their
        # heartbeats together for ever: a random offset at boot, then +-10 % each time
        spread = self.cfg[_C_BOOT_SPREAD_MS]
        if spread > 0:
            await asyncio.sleep_ms(_rand(spread))
        while True:
            waited = 0
            while self.link.busy() and waited < _LBT_WAIT_MAX_MS:
                d = 2 + _rand(8)  # listen before talk: someone else is sending
                await asyncio.sleep_ms(d)
                waited += d
            f = self.flags
            if self.outbox.pending(_ALARM):
                f |= _HB_ALARM_PENDING
            if self.safe:
                f |= _HB_SAFE_MODE
            self.uptime()
            self.send(_HEARTBEAT, self.battery_mv, self._up_s, _FW, f, reliable=False)
            hb = self.cfg[_C_HEARTBEAT_MS]
            await asyncio.sleep_ms(hb - hb // 10 + _rand(hb // 5))

    async def run(self, boot):
        """boot(app): startup.boot, the boot sequence (epoch stored before anything is
        sent); then the supervisor, every 100 ms (500 ms idle): feeds the watchdog while every task is
        alive, and does the periodic work."""
        global _app
        _app = self
        reloaded = await boot(self)
        boot = None  # startup's code can go before the check-in module comes in
        gc.collect()
        board = self.board
        cfg = self.cfg
        safe = self.safe
        # a checkpoint's check-in is its only button (its duress is its alarm): it runs
        # in safe mode too; a guard post's is optional, off in safe mode
        role = cfg[_C_ROLE]
        if (role == _ROLE_CHECKPOINT or (not safe and role == _ROLE_GUARD_POST)) and board.input(
            "checkin"
        ) is not None:
            from checkin import Checkin

            self.checkin = Checkin(self, board.input("checkin"))
            self.start(self.checkin.button.run())
        board.start(self)
        board.ready(self.counter.epoch, reloaded)
        mains = None if safe or not cfg[_C_MAINS] else board.input("mains")
        battery_left = cfg[_C_BATTERY_POLL_MS]
        test_left = cfg[_C_TEST_INTERVAL_MS]  # counted down: 168 h in ticks would overflow
        healthy_stored = False
        mains_changed = False  # mains sense differs from the flag, first seen at:
        booted = last = last_gc = mains_since = time.ticks_ms()
        ms = _SUPERVISE_MS
        while True:
            await asyncio.sleep_ms(ms)
            now = time.ticks_ms()
            dt = time.ticks_diff(now, last)
            last = now
            self.uptime()
            self._maybe_cancel(now)
            if self.checkin is not None:
                self.checkin.supervise(now)
            if self._alarm_owed and self.counter.ready:
                self._send_alarm(_PRIO_KEEP)
            if (
                self._open
                and not self.button.pressed
                and self.outbox.pending(_ALARM) == 0
                and time.ticks_diff(now, self._last_press) > cfg[_C_INCIDENT_WINDOW_MS]
            ):
                self._open = False
                self.feedback.show(led=self._base_led(), buzzer="off")
            lost_ms = cfg[_C_LINK_LOST_MS]
            if not self._link_lost and time.ticks_diff(now, self._last_ack) > lost_ms:
                self._link_lost = True
                self.fault(_F_LINK_LOST, True, time.ticks_diff(now, self._last_ack) // 1000)
                self.show_base()
            if not safe:
                battery_left -= dt
                if battery_left <= 0:
                    battery_left = cfg[_C_BATTERY_POLL_MS]
                    self.check_battery()
                if mains is not None:
                    # mains sense (high while present): a change counts once the new
                    # level has held for mains_debounce_ms since it was first seen (a
                    # flicker is not a mains loss)
                    lost = not mains.value()
                    if lost == bool(self.flags & _HB_MAINS_LOST):
                        mains_changed = False
                    elif not mains_changed:
                        mains_changed = True
                        mains_since = now
                    elif time.ticks_diff(now, mains_since) >= cfg[_C_MAINS_DEBOUNCE_MS]:
                        mains_changed = False
                        self.flags ^= _HB_MAINS_LOST
                        self.fault(_F_MAINS_LOST, lost)
                        self.show_base()
                test_left -= dt
                if test_left <= 0:
                    test_left += cfg[_C_TEST_INTERVAL_MS]
                    if test_left <= 0:
                        test_left = cfg[_C_TEST_INTERVAL_MS]
                    self.send(_TEST, _TEST_PERIODIC, self.self_test(), self.battery_mv)
            # healthy: every task of every layer still running (else: no feed, and the
            # watchdog resets the unit)
            ok = True
            for t in self.tasks:
                if t.done():
                    ok = False
            if ok:
                board.wdt_feed()
                if not healthy_stored and time.ticks_diff(now, booted) >= cfg[_C_HEALTHY_MS]:
                    # the crash-loop count starts again; the next boot is a normal one
                    healthy_stored = self.counter.healthy()
                    board.log("healthy: crash-loop count cleared")
            crash_ms = cfg[_C_TEST_CRASH_MS]
            if crash_ms and not safe and time.ticks_diff(now, booted) >= crash_ms:
                raise RuntimeError("test_crash_ms")  # test hook (unit.json): a crash loop
            if time.ticks_diff(now, last_gc) > _GC_EVERY_MS:
                last_gc = now
                gc.collect()
            # idle: a slower tick (fewer wakeups: power on a battery unit). Anything with
            # a deadline of its own (an open series, a cancel burst, a button down, a
            # check-in awaiting its ACK or display, a mains change being debounced) keeps
            # the 100 ms tick from the first tick that sees it
            # the supervisor's own deadlines (periodic TEST, battery poll, link lost,
            # healthy, the crash hook) are met on the same 100 ms grid as before
            ms = _SUPERVISE_MS
            if not (
                self._open or self._burst > 0 or self.button.pressed or mains_changed
                or (self.checkin is not None and self.checkin.busy())
            ):
                ms = _IDLE_SUPERVISE_MS
                if not safe:
                    ms = min(ms, test_left, battery_left)
                if not self._link_lost:
                    ms = min(ms, cfg[_C_LINK_LOST_MS] - time.ticks_diff(now, self._last_ack))
                if not healthy_stored:
                    ms = min(ms, cfg[_C_HEALTHY_MS] - time.ticks_diff(now, booted))
                if cfg[_C_TEST_CRASH_MS] and not safe:
                    ms = min(ms, cfg[_C_TEST_CRASH_MS] - time.ticks_diff(now, booted))
                if ms < _SUPERVISE_MS:
                    ms = _SUPERVISE_MS

    def start(self, coro):
        """Run coro as one of the unit's tasks (watched by the supervisor)."""
        self.tasks.append(asyncio.create_task(coro))

    def stop(self):
        global _app
        _app = None
        for t in self.tasks:
            try:
                t.cancel()
            except RuntimeError:  # "can't cancel self": after a Ctrl-C ended asyncio.run
                pass  # the last task that ran still counts as current; it never runs again
        self.tasks = []
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
    Store(root).write(_INSTALL_TEST, b"repl")
    return False
