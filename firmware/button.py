# A push button: debounced leading edge, long press, stuck detection.
#
# The board hands over an input whose value() is 1 while pressed and whose ThreadSafeFlag
# `flag` its pin interrupt sets on every edge (the IRQ handler does nothing else). The
# press is reported on the LEADING edge, once the level has stayed pressed for
# debounce_ms: nothing waits for a release or a click window. While held, the level is
# sampled every poll_ms for the long-press and stuck deadlines.
#
# Callbacks (synchronous, run in the button task):
#   on_press(t_ms)           leading edge (t_ms = ticks_ms of the first edge)
#   on_long(t_ms)            still held at long_ms
#   on_release(t_ms, held_ms, was_long)
#   stuck(True)              still held at stuck_ms (a fault, not a press)
#   stuck(False)             released after stuck(True)
import asyncio
import time
from micropython import const

_POLL_MS = const(20)
_STUCK_POLL_MS = const(100)


class Button:
    def __init__(self, inp, handler, debounce_ms=5, long_ms=3000, stuck_ms=30000):
        self.inp = inp
        self.handler = handler
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.stuck_ms = stuck_ms
        self.pressed = False
        self.stuck = False

    async def run(self):
        """The layer's task (App starts it, watches it and cancels it)."""
        inp = self.inp
        h = self.handler
        first = True
        while True:
            # a button already held at start counts as a press (someone holding the
            # panic button while the unit restarts must still get through)
            if not (first and inp.value()):
                await inp.flag.wait()
            first = False
            t0 = time.ticks_ms()
            if not inp.value():
                continue  # a release edge or a glitch
            await asyncio.sleep_ms(self.debounce_ms)
            if not inp.value():
                continue  # bounce or noise shorter than debounce_ms
            self.pressed = True
            h.on_press(t0)
            was_long = False
            held = 0
            while True:
                await asyncio.sleep_ms(_STUCK_POLL_MS if self.stuck else _POLL_MS)
                held = time.ticks_diff(time.ticks_ms(), t0)
                if not inp.value():
                    await asyncio.sleep_ms(self.debounce_ms)
                    if not inp.value():
                        break
                if not was_long and held >= self.long_ms:
                    was_long = True
                    h.on_long(t0)
                if not self.stuck and held >= self.stuck_ms:
                    self.stuck = True
                    h.stuck(True)
            self.pressed = False
            h.on_release(t0, held, was_long)
            if self.stuck:
                self.stuck = False
                h.stuck(False)
