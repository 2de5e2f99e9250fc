# The unit: what a press, a hold, a check-in, a tamper switch or a battery reading turns
# into on the wire, and what the unit shows. README.md explains the gestures.
#
# Each layer is handed the next in its constructor: board -> Link (framing) -> Outbox
# (delivery) -> App (this file). App owns every task it starts and cancels them in stop().
import asyncio
import gc
import sys
import time
from micropython import const

import proto
from button import Button
from counter import Counter
from feedback import Feedback
from link import Link
from outbox import PRIO_FOLD, PRIO_INFO, PRIO_KEEP, Outbox
from proto import (
    ACK,
    ALARM,
    CANCEL,
    CHECKIN,
    FAULT,
    HEARTBEAT,
    KIND_DURESS,
    KIND_SILENT,
    SIGNAL,
    TEST,
)
from storage import Store
from uptime import Uptime
from version import FW

_SUPERVISE_MS = const(100)
_GC_EVERY_MS = const(5000)
_CANCELLED_SHOW_MS = const(5000)
_STORAGE_RETRY_MAX_MS = const(10000)
_CHECKIN_SHOW_MS = const(300)


class _CheckinButton:
    """The guard post's second button: CHECKIN on release; held to long_press_ms it is a
    duress check-in, sent at once, and shown exactly like a normal one."""

    def __init__(self, app):
        self._app = app

    def on_press(self, t0):
        self._app.stop_signal()

    def on_long(self, t0):
        self._app.checkin(duress=True)

    def on_release(self, t0, held_ms, was_long):
        app = self._app
        if not was_long:
            app.checkin(duress=False)
        app.checkin_released()

    def on_stuck(self, held_ms):
        self._app.stuck(True)

    def on_unstuck(self, held_ms):
        self._app.stuck(False)


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
        ci = board.input("checkin") if cfg.role == "guard_post" else None
        self.checkin_button = (
            Button(ci, _CheckinButton(self), cfg.debounce_ms, cfg.long_press_ms, cfg.stuck_ms)
            if ci is not None
            else None
        )
        self.tamper_in = board.input("tamper")
        self._tasks = []
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
        # check-in
        self._ci_pending = False
        self._ci_held = False
        self._ci_acked = False
        self._ci_released = time.ticks_ms()
        # conditions
        self.tamper_open = False
        self.low_battery = False
        self.button_stuck = False
        self.battery_mv = 0
        self.storage_fault = False
        self._last_ack = time.ticks_ms()
        self._link_lost = False
        self._signal = False
        self._dl_epoch = 0
        self._dl_seq = 0
        self._dl_any = False
        self.last_epoch = 0
        self.last_seq = 0
        self.heartbeats = 0

    # ---------------------------------------------------------------- sending

    def send(self, mtype, a=0, b=0, c=0, d=0, prio=PRIO_INFO, persist=False, reliable=True):
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
        self.send(FAULT, code, 1 if active else 0, detail & 0xFFFF)

    def heartbeat_flags(self):
        f = 0
        if self.tamper_open:
            f |= proto.HB_TAMPER
        if self.low_battery:
            f |= proto.HB_LOW_BATTERY
        if self.button_stuck:
            f |= proto.HB_BUTTON_STUCK
        if self.outbox.pending(ALARM):
            f |= proto.HB_ALARM_PENDING
        return f

    # ---------------------------------------------------------------- the alarm button

    def _send_alarm(self, prio):
        ok = self.send(ALARM, self._kind, self._presses, self._first_ms, prio=prio, persist=True)
        self._alarm_owed = not ok
        return ok

    def on_press(self, t0):
        now = time.ticks_ms()
        self.stop_signal()
        if not self._open:
            self._open = True
            self._kind = self.cfg.kind
            self._quiet = self._kind == KIND_SILENT
            self._presses = 1
            # press_ms: uptime at the first edge, not after the debounce
            self._first_ms = (self.uptime.ms32() - time.ticks_diff(now, t0)) & 0xFFFFFFFF
            self._opened = t0
            self._burst = -1  # presses run together with the opening one never cancel
            self._ack_state = 0
            if self._send_alarm(PRIO_KEEP):
                self._first_epoch = self.last_epoch
                self._first_seq = self.last_seq
        else:
            if self._presses < 255:
                self._presses += 1
            if time.ticks_diff(t0, self._last_press) > self.cfg.cancel_gap_ms:
                self._burst = 1
            elif self._burst > 0:
                self._burst += 1
            self._send_alarm(PRIO_FOLD)
        self._last_press = t0
        # nothing is shown yet: this press may become a silent duress hold

    def on_long(self, t0):
        self._burst = -1
        if self._open and self._kind != KIND_DURESS:
            # the panic went out on the leading edge; the hold upgrades it: a separate
            # ALARM kind=duress of the same series (same press_ms) that the gateway folds
            self._kind = KIND_DURESS
            self._quiet = True
            self._send_alarm(PRIO_KEEP)
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
            self.fault(proto.F_BUTTON_STUCK, active)
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
        if self._kind == KIND_DURESS:
            # a coerced cancel is what an attacker would demand: never sent for duress
            return
        self.send(
            CANCEL, self._first_epoch, self._first_seq, prio=PRIO_KEEP, persist=True
        )
        self._open = False
        if not self._quiet:
            self.feedback.show(
                led="cancelled", buzzer="cancelled", duration_ms=_CANCELLED_SHOW_MS,
                led_then=self._base_led(),
            )

    # ---------------------------------------------------------------- check-in

    def checkin(self, duress):
        self._ci_pending = True
        self._ci_acked = False
        self._ci_held = duress  # a duress check-in is sent while the button is still held
        self.send(
            CHECKIN, 1 if duress else 0, self.uptime.ms32(),
            prio=PRIO_KEEP if duress else PRIO_FOLD, persist=True,
        )

    def checkin_released(self):
        self._ci_held = False
        self._ci_released = time.ticks_ms()
        if self._ci_pending or self._ci_acked:
            self.feedback.show(led="checkin")

    def _checkin_feedback(self, now):
        """Show "checkin_ok" once the gateway has it AND the button has been up for
        _CHECKIN_SHOW_MS: the same sequence, with the same timing, for a normal and a
        duress check-in (the duress one is ACKed while the guard still holds the button)."""
        if (
            self._ci_acked
            and not self._ci_held
            and time.ticks_diff(now, self._ci_released) >= _CHECKIN_SHOW_MS
        ):
            self._ci_acked = False
            self.feedback.show(led="checkin_ok", buzzer="checkin_ok", duration_ms=3000,
                               led_then=self._base_led())

    # ---------------------------------------------------------------- downlink

    def on_frame(self, dec):
        if dec.mtype == ACK:
            self._on_ack(dec.ref_epoch, dec.ref_seq, dec.state)
        elif dec.mtype == SIGNAL:
            if self._dl_any and not proto.counter_above(
                dec.epoch, dec.seq, self._dl_epoch, self._dl_seq
            ):
                dec.rejects[proto.R_REPLAYED] += 1
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
            self.fault(proto.F_LINK_LOST, False, time.ticks_diff(now, self._last_ack) // 1000)
            self._show_base()
        self._last_ack = now
        if mtype == ALARM and self._open and not proto.counter_above(
            self._first_epoch, self._first_seq, epoch, seq
        ):
            if state > self._ack_state:
                self._ack_state = state
                if not self._quiet and not self.button.pressed:
                    self.feedback.show(
                        led=self._series_led(),
                        buzzer="police_ack" if state == 2 else "received",
                    )
        elif mtype == CANCEL and state == proto.ACK_CANCELLED and not self._quiet:
            self.feedback.show(led="cancelled", duration_ms=_CANCELLED_SHOW_MS,
                               led_then=self._base_led())
        elif mtype == CHECKIN:
            self._ci_pending = False
            self._ci_acked = True
            self._checkin_feedback(now)

    def _on_signal(self, pattern, duration_s):
        if pattern == proto.SIG_STOP:
            self.stop_signal()
            return
        if self._open:
            return  # an alarm in progress keeps the unit's outputs (and duress its silence)
        name = (
            "prompt" if pattern == proto.SIG_PROMPT
            else "locate" if pattern == proto.SIG_LOCATE
            else "escalated" if pattern == proto.SIG_ESCALATED
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
        if self.tamper_open or self.low_battery or self.button_stuck:
            return "fault"
        return "idle"

    def _show_base(self):
        if not self._open and not self._signal:
            self.feedback.show(led=self._base_led())

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
            self.fault(proto.F_TAMPER, v)
            self._show_base()

    def _check_battery(self):
        mv = self.board.battery_mv()
        self.battery_mv = mv
        cfg = self.cfg
        if mv and not self.low_battery and mv < cfg.low_battery_mv:
            self.low_battery = True
            self.fault(proto.F_LOW_BATTERY, True, mv)
            self._show_base()
        elif self.low_battery and (mv == 0 or mv >= cfg.battery_ok_mv):
            self.low_battery = False
            self.fault(proto.F_LOW_BATTERY, False, mv)
            self._show_base()

    async def _battery(self):
        while True:
            await asyncio.sleep_ms(self.cfg.battery_poll_ms)
            self._check_battery()

    def send_heartbeat(self):
        self.heartbeats += 1
        self.send(
            HEARTBEAT, self.battery_mv, self.uptime.s(), FW, self.heartbeat_flags(),
            reliable=False,
        )

    async def _heartbeat(self):
        while True:
            self.send_heartbeat()
            await asyncio.sleep_ms(self.cfg.heartbeat_ms)

    def self_test(self):
        r = 0
        if self.low_battery:
            r |= 1
        if self.button_stuck:
            r |= 2
        if self.storage_fault or self.store.errors:
            r |= 4
        return r

    async def _test(self):
        while True:
            await asyncio.sleep_ms(self.cfg.test_interval_ms)
            self.send(TEST, 0, self.self_test(), self.battery_mv)

    def _supervise(self, now):
        cfg = self.cfg
        self.uptime.fold()
        self._maybe_cancel(now)
        self._checkin_feedback(now)
        if self._alarm_owed and self.counter.ready:
            self._send_alarm(PRIO_KEEP)
        if (
            self._open
            and not self.button.pressed
            and self.outbox.pending(ALARM) == 0
            and time.ticks_diff(now, self._last_press) > cfg.incident_window_ms
        ):
            self._open = False
            self.feedback.show(led=self._base_led(), buzzer="off")
        if not self._link_lost and time.ticks_diff(now, self._last_ack) > cfg.link_lost_ms:
            self._link_lost = True
            self.fault(proto.F_LINK_LOST, True, time.ticks_diff(now, self._last_ack) // 1000)
            self._show_base()

    def _healthy(self):
        """True while every task of every layer is still running (else: no feed, and the
        watchdog resets the unit)."""
        for t in self._tasks:
            if t.done():
                return False
        for part in (self.button, self.checkin_button, self.outbox, self.link, self.feedback):
            if part is not None and (part._task is None or part._task.done()):
                return False
        return True

    async def run(self):
        board = self.board
        cfg = self.cfg
        board.wdt_start(cfg.wdt_ms)
        self.feedback.start()
        self.feedback.show(led="idle", buzzer="off")
        # 1. the epoch is stored before anything is sent (SPEC.md 1.3)
        delay = 100
        while not self.counter.boot():
            self.storage_fault = True
            board.log("storage: cannot store the epoch; nothing is sent until it is")
            board.wdt_feed()
            await asyncio.sleep_ms(delay)
            delay = min(delay * 2, _STORAGE_RETRY_MAX_MS)
        # 2. frames pending before the reboot go out again first, byte for byte
        reloaded = self.outbox.load()
        self.link.start()
        self.outbox.kick()
        self.outbox.start()
        # 3. what happened while we were down
        if self.storage_fault:
            self.fault(proto.F_STORAGE, True)
        if board.reset_cause() == "wdt":
            self.fault(proto.F_WATCHDOG_RESET, True)
        self.battery_mv = board.battery_mv()
        self._check_battery()
        if self.tamper_in is not None:
            self._check_tamper()
            self._start(self._tamper())
        self.button.start()
        if self.checkin_button is not None:
            self.checkin_button.start()
        self._start(self._battery())
        self._start(self._heartbeat())
        self._start(self._test())
        board.start()
        board.ready(self.counter.epoch, reloaded)
        last_gc = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(_SUPERVISE_MS)
            now = time.ticks_ms()
            self._supervise(now)
            if self._healthy():
                board.wdt_feed()
            if time.ticks_diff(now, last_gc) > _GC_EVERY_MS:
                last_gc = now
                gc.collect()

    def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self.button.stop()
        if self.checkin_button is not None:
            self.checkin_button.stop()
        self.outbox.stop()
        self.link.stop()
        self.feedback.stop()
        self.board.stop()


def main(board):
    """Load the unit's config and run it; a crash resets the board (the watchdog would)."""
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
