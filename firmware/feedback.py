# What the unit shows: named LED and buzzer patterns (the installer's table is in
# README.md). A pattern is a tuple of durations in ms, alternating on/off and starting
# with on; () is off, (x,) is steady on. Repeating patterns loop; one-shot patterns (the
# buzzer's confirmations) end in "off". The board's indicate() hook hears every change of
# state by name (the virtual board reports it on its control channel).
import asyncio
import time
from micropython import const

_TICK_MS = const(20)

LED = {
    "off": (),
    "idle": (40, 2960),  # healthy: a short blink every 3 s
    "sending": (100, 100),  # alarm sent, the gateway has not confirmed it yet
    "received": (1000,),  # steady: the gateway has the alarm
    "police_ack": (150, 150, 150, 850),  # double blink: police have acknowledged
    "cancelled": (50, 950),  # cancel recorded
    "checkin": (300, 300),  # check-in sent, waiting
    "checkin_ok": (1000,),  # check-in recorded (also shown for a duress check-in)
    "prompt": (500, 500),  # the gateway asks the guard to check in
    "locate": (50, 50),  # installer's locate
    "escalated": (250, 250, 250, 1250),
    "no_link": (1000, 1000),  # no ACK from the gateway for a while
    "fault": (200, 1800),  # tamper, low battery or stuck button
}
BUZZER = {
    "off": (),
    "chirp": (60,),  # one short beep: press taken
    "received": (80, 120, 80),  # two beeps: gateway has it
    "police_ack": (80, 120, 80, 120, 80),  # three beeps: police acknowledged
    "cancelled": (400,),
    "checkin_ok": (60,),
    "prompt": (200, 800),  # repeating until check-in or the prompt ends
    "locate": (100, 400),
    "escalated": (200, 200),
}
_REPEAT = ("prompt", "locate", "escalated")


class _Output:
    def __init__(self, what, table, drive, indicate, repeat_all):
        self.what = what
        self._table = table
        self._drive = drive
        self._indicate = indicate
        self._repeat_all = repeat_all
        self.name = ""
        self._p = ()
        self._start = time.ticks_ms()
        self._level = -1
        self._until = time.ticks_ms()  # when a timed pattern ends
        self._timed = False
        self._then = "off"

    def set(self, name, duration_ms=0, then="off"):
        """Show pattern `name`; after duration_ms (0 = no limit) show `then`."""
        if name == self.name and duration_ms == 0:
            return
        self.name = name
        self._then = then
        self._p = self._table[name]
        self._start = time.ticks_ms()
        self._until = time.ticks_add(self._start, duration_ms)
        self._timed = duration_ms > 0
        self._indicate(self.what, name)
        self.update(self._start)

    def _write(self, level):
        if level != self._level:
            self._level = level
            self._drive(level)

    def update(self, now):
        p = self._p
        if self._timed and time.ticks_diff(now, self._until) >= 0:
            self._timed = False
            self.set(self._then)
            return
        if not p:
            self._write(0)
            return
        if len(p) == 1 and self._repeat_all:
            self._write(1)
            return
        total = 0
        for d in p:
            total += d
        t = time.ticks_diff(now, self._start)
        if t >= total:
            if not (self._repeat_all or self.name in _REPEAT):
                self.set("off")
                return
            t %= total
        i = 0
        for d in p:
            if t < d:
                break
            t -= d
            i += 1
        self._write(0 if i & 1 else 1)


class Feedback:
    def __init__(self, board):
        self.led = _Output("led", LED, board.led, board.indicate, True)
        self.buzzer = _Output("buzzer", BUZZER, board.buzzer, board.indicate, False)
        self._task = None

    def show(self, led=None, buzzer=None, duration_ms=0, led_then="idle"):
        if led is not None:
            self.led.set(led, duration_ms, led_then)
        if buzzer is not None:
            self.buzzer.set(buzzer, duration_ms)

    def start(self):
        self._task = asyncio.create_task(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            now = time.ticks_ms()
            self.led.update(now)
            self.buzzer.update(now)
