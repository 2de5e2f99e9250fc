# A guard post's check-in button (role guard_post, pin `checkin`): CHECKIN on release;
# held to long_press_ms it is a duress check-in, sent at once, and shown exactly like a
# normal one. Imported by app.py only on a guard post (never in safe mode) and on a
# patrol checkpoint (role checkpoint: a scan; also in safe mode, it is its only button).
import time
from micropython import const

from button import Button

_CHECKIN = const(0x03)
_PRIO_KEEP = const(0)
_PRIO_FOLD = const(1)
_SHOW_MS = const(300)
_OK_MS = const(3000)
# app.py's settings indexes (tests/firmware/test_consts.py)
_C_LONG_PRESS_MS = const(1)
_C_DEBOUNCE_MS = const(2)
_C_STUCK_MS = const(3)


class Checkin:
    def __init__(self, app, inp):
        cfg = app.cfg
        self._app = app
        self.button = Button(
            inp, self, cfg[_C_DEBOUNCE_MS], cfg[_C_LONG_PRESS_MS], cfg[_C_STUCK_MS]
        )
        self._pending = False
        self._held = False
        self._acked = False
        self._released = time.ticks_ms()

    def send(self, duress):
        app = self._app
        self._pending = True
        self._acked = False
        self._held = duress  # a duress check-in is sent while the button is still held
        app.stamp()
        app.send(
            _CHECKIN, 1 if duress else 0, app.up_hi, app.up_lo,
            prio=_PRIO_KEEP if duress else _PRIO_FOLD, persist=True,
        )

    # ---- the button's callbacks ----

    def on_press(self, t):
        self._app.stop_signal()

    def busy(self):
        """Something for supervise() to do soon (the supervisor keeps its 100 ms tick)."""
        return self._pending or self._acked or self.button.pressed

    def on_long(self, t):
        self.send(True)

    def on_release(self, t, held_ms, was_long):
        if not was_long:
            self.send(False)
        self._held = False
        self._released = time.ticks_ms()
        if self._pending or self._acked:
            self._app.feedback.show(led="checkin")

    def stuck(self, value):
        self._app.stuck(value)

    # ---- from the app ----

    def acked(self, now):
        self._pending = False
        self._acked = True
        self.supervise(now)

    def supervise(self, now):
        """Show "checkin_ok" once the gateway has it AND the button has been up for
        _SHOW_MS: the same sequence, with the same timing, for a normal and a duress
        check-in (the duress one is ACKed while the guard still holds the button)."""
        if self._acked and not self._held and time.ticks_diff(now, self._released) >= _SHOW_MS:
            self._acked = False
            app = self._app
            app.feedback.show(led="checkin_ok", buzzer="checkin_ok", duration_ms=_OK_MS,
                              led_then=app._base_led())
