# What the unit shows: named LED and buzzer patterns (the installer's table is in
# README.md). A pattern is a run of durations in units of 10 ms, alternating on/off and
# starting with on; empty is off, one duration is steady on. Repeating patterns loop;
# one-shot patterns (the buzzer's confirmations) end in "off". The board's indicate()
# hook hears every change of state by name (the virtual board reports it on its control
# channel).
#
# The tables are one bytes object per output (a length byte, then the durations), found
# by the name's index in a tuple: no per-pattern objects in RAM.
import time
from micropython import const

from sleeper import Sleeper

_UNIT_MS = const(10)
_HURRY_MS = const(50)  # a show() during a timed step is seen within this (sleeper.py)

_LED_NAMES = const((
    "off", "idle", "sending", "received", "police_ack", "cancelled", "checkin",
    "checkin_ok", "prompt", "locate", "escalated", "no_link", "fault",
))
_LED = const(
    b"\x00"  # off
    b"\x04\x04\x94\x00\x94"  # idle: 40 on, 2960 off (1480 + 0 on + 1480: a byte holds 2550)
    b"\x02\x0a\x0a"  # sending: fast blink, the gateway has not confirmed it yet
    b"\x01\x64"  # received: steady, the gateway has the alarm
    b"\x04\x0f\x0f\x0f\x55"  # police_ack: double blink
    b"\x02\x05\x5f"  # cancelled: 50 ms every second
    b"\x02\x1e\x1e"  # checkin: check-in sent, waiting
    b"\x01\x64"  # checkin_ok: steady (also shown for a duress check-in)
    b"\x02\x32\x32"  # prompt: the gateway asks the guard to check in
    b"\x02\x05\x05"  # locate: installer's locate
    b"\x04\x19\x19\x19\x7d"  # escalated: triple pattern
    b"\x02\x64\x64"  # no_link: 1 s on/off, no ACK from the gateway for a while
    b"\x02\x14\xb4"  # fault: 200 ms every 2 s (tamper, low battery or stuck button)
)
_BUZZER_NAMES = const((
    "off", "chirp", "received", "police_ack", "cancelled", "checkin_ok", "prompt",
    "locate", "escalated",
))
_BUZZER = const(
    b"\x00"  # off
    b"\x01\x06"  # chirp: one short beep, press taken
    b"\x03\x08\x0c\x08"  # received: two beeps
    b"\x05\x08\x0c\x08\x0c\x08"  # police_ack: three beeps
    b"\x01\x28"  # cancelled: long beep
    b"\x01\x06"  # checkin_ok
    b"\x02\x14\x50"  # prompt: repeating until check-in or the prompt ends
    b"\x02\x0a\x28"  # locate
    b"\x02\x14\x14"  # escalated
)
# buzzer patterns from "prompt" on (table offset 17) repeat; LED patterns all repeat
_BUZZER_REPEAT_AT = const(17)


class Feedback:
    """The LED (output 0, every pattern repeats) and the buzzer (output 1, one-shot but
    for prompt/locate/escalated). Per output: the pattern's name, its offset in the
    table, when it started, when a timed one ends and what follows it."""

    def __init__(self, board):
        self._drive = (board.led, board.buzzer)
        self._indicate = board.indicate
        now = time.ticks_ms()
        self.name = ["", ""]
        self._then = ["off", "off"]
        self._at = [0, 0]  # table offset of the pattern's length byte
        self._start = [now, now]
        self._until = [now, now]  # when a timed pattern ends
        self._timed = bytearray(2)
        self.level = bytearray(b"\xff\xff")
        self._sleep = Sleeper()  # the run task sleeps on it (show() wakes it)

    def show(self, led=None, buzzer=None, duration_ms=0, led_then="idle"):
        """Show the named patterns; after duration_ms (0 = no limit) the LED shows
        led_then and the buzzer goes off."""
        if led is not None:
            self._set(0, led, duration_ms, led_then)
        if buzzer is not None:
            self._set(1, buzzer, duration_ms, "off")
        # the task sleeps until the old pattern's next step: recompute
        self._sleep.wake()

    def _set(self, i, name, duration_ms=0, then="off"):
        """Start pattern `name` on output i; returns _update's ms to the next change."""
        if name == self.name[i] and duration_ms == 0:
            return self._update(i, time.ticks_ms())
        table = _BUZZER if i else _LED
        at = 0
        for n in _BUZZER_NAMES if i else _LED_NAMES:
            if n == name:
                break
            at += table[at] + 1
        now = time.ticks_ms()
        self.name[i] = name
        self._then[i] = then
        self._at[i] = at
        self._start[i] = now
        self._until[i] = time.ticks_add(now, duration_ms)
        self._timed[i] = 1 if duration_ms > 0 else 0
        self._indicate("buzzer" if i else "led", name)
        return self._update(i, now)

    def _update(self, i, now):
        """Drive output i's level for `now`; returns the ms until it next changes (the
        next step of the pattern or the end of a timed one), -1 if it never does."""
        if self._timed[i] and time.ticks_diff(now, self._until[i]) >= 0:
            self._timed[i] = 0
            return self._set(i, self._then[i])
        table = _BUZZER if i else _LED
        at = self._at[i]
        n = table[at]
        level = 0
        wait = -1
        if n == 1 and not i:
            level = 1  # steady LED
        elif n:
            total = 0
            for k in range(at + 1, at + 1 + n):
                total += table[k]
            t = time.ticks_diff(now, self._start[i])  # ms into the pattern
            if t >= total * _UNIT_MS:
                if i and at < _BUZZER_REPEAT_AT:
                    return self._set(i, "off")
                t %= total * _UNIT_MS
            k = at + 1
            end = table[k] * _UNIT_MS  # where the k-th duration ends
            while t >= end:
                k += 1
                end += table[k] * _UNIT_MS
            level = (k - at) & 1  # the 1st, 3rd ... durations are "on"
            wait = end - t
        if level != self.level[i]:
            self.level[i] = level
            self._drive[i](level)
        if self._timed[i]:
            left = time.ticks_diff(self._until[i], now)
            if wait < 0 or left < wait:
                wait = left
        return wait

    async def run(self):
        """The layer's task (App starts it, watches it and cancels it). Sleeps until the
        next step of a running pattern; with nothing to step it sleeps until show()
        wakes it (the idle LED's blink is a step every ~1.5 s)."""
        while True:
            now = time.ticks_ms()
            a = self._update(0, now)
            b = self._update(1, now)
            if a < 0 or 0 <= b < a:
                a = b
            # a < 0: nothing to step, until show(); show() drives the new pattern's
            # first level itself, so a step cut into _HURRY_MS pieces only delays its
            # second step, by at most that
            await self._sleep.sleep_ms(a, _HURRY_MS)
