# Runs ON MicroPython (the unix port), never on CPython: a stand-in for the ESP32 port's
# `machine` module, so that the real firmware/board/esp32.py runs without an ESP32.
#
#   import esp32_machine
#   sys.modules["machine"] = esp32_machine   # before `import board.esp32`
#
# A test double, not an emulator: only what board/esp32.py uses, with the ESP32 port's
# signatures and constant values (ports/esp32/machine_pin.c, extmod/modmachine.h), and a
# record of what the board did (`pad(n)`, `uarts`, `wdts`, `resets`) for the tests.
# Faithful where a mistake in esp32.py would show: a Pin.OUT pad reads back its pad (the
# ESP32's GPIO_MODE_INPUT_OUTPUT), pulls decide what an undriven input reads, GPIO 34..39
# cannot be outputs, the ADC clips at the attenuation's full scale (0 dB by default), and
# a pad's IRQ handler is called the way the port's ISR does it: micropython.schedule().
import io
import select

import micropython

# machine.reset_cause() values (extmod/modmachine.h)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

cause = PWRON_RESET  # what reset_cause() returns: a test sets it before Board()
resets = 0  # machine.reset() calls
uarts = []  # every UART made, in order (its constructor arguments are `args`)
wdts = []  # every WDT made: the ESP32 has one task watchdog, each WDT() reconfigures it
wire = None  # a test sets a stream: UART() reads and writes it (the far end of a pty)
watched = set()  # GPIOs whose output changes go into `events`, with UART writes and flushes
events = []  # ("pin", gpio, level), ("write", nbytes), ("flush",): in the order they happen
flush_fails = False  # a test sets it: UART.flush() raises OSError (the port's timeout)

_pads = {}
_GPIOS = [n for n in range(40) if n not in (20, 24, 28, 29, 30, 31)]  # the ESP32's GPIOs
_FIRST_INPUT_ONLY = 34  # GPIO 34..39: input only
_MP_STREAM_POLL = 3  # py/stream.h ioctl requests
_MP_STREAM_CLOSE = 4
_MP_STREAM_GET_FILENO = 10
_POLLOUT = 4
# UART(id, baudrate, ...) keywords of the ESP32 port
_UART_KW = "bits parity stop tx rx rts cts txbuf rxbuf timeout timeout_char invert flow".split()


class _Pad:
    """One GPIO pad: how it is configured and what drives it."""

    def __init__(self):
        self.mode = None  # Pin.IN / Pin.OUT, None: never configured
        self.pull = None  # Pin.PULL_UP / Pin.PULL_DOWN, None: none
        self.out = 0  # the output latch (drives the pad in Pin.OUT)
        self.ext = None  # a level forced from outside (a button, a short); None: nothing
        self.uv = 0  # the voltage at the pad, in microvolts (what an ADC sees)
        self.handler = None  # the IRQ handler, called with `pin`
        self.trigger = 0
        self.pin = None

    def level(self):
        if self.ext is not None:
            return self.ext  # stronger than the pad's own driver (a short) or a pull
        if self.mode is not None and self.mode & 2:
            return self.out
        return 1 if self.pull is not None and self.pull & Pin.PULL_UP else 0


def pad(n):
    """The record of GPIO `n` (made on first use)."""
    p = _pads.get(n)
    if p is None:
        p = _pads[n] = _Pad()
    return p


def pads():
    """The GPIO numbers board code configured or read so far."""
    return sorted(_pads)


def drive(n, level):
    """The outside world puts `level` on GPIO `n` (None: lets go of it). On an edge the
    pin's trigger matches, its handler runs as the ESP32 port's ISR runs it: scheduled
    (a soft IRQ) with the Pin as argument. Safe to call from another thread."""
    p = pad(n)
    before = p.level()
    p.ext = level
    after = p.level()
    if p.handler is None or before == after:
        return
    edge = Pin.IRQ_RISING if after else Pin.IRQ_FALLING
    if p.trigger & edge:
        micropython.schedule(p.handler, p.pin)


class Pin:
    IN = 1  # GPIO_MODE_INPUT
    OUT = 3  # GPIO_MODE_INPUT_OUTPUT: reads back the pad, not the latch
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=None, pull=-1, *, value=None):
        if id not in _GPIOS:
            raise ValueError("invalid pin")
        if mode is not None and mode & 2 and id >= _FIRST_INPUT_ONLY:
            raise ValueError("pin can only be input")
        self.id = id
        p = pad(id)
        if value is not None:
            p.out = 1 if value else 0  # set before the mode, as the port does
        if mode is not None:
            p.mode = mode
        if pull != -1:
            p.pull = pull

    def value(self, v=None):
        p = pad(self.id)
        if v is None:
            return p.level()
        p.out = 1 if v else 0
        if self.id in watched:
            events.append(("pin", self.id, p.out))
        return None

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        p = pad(self.id)
        p.handler = handler
        p.trigger = trigger if handler is not None else 0
        p.pin = self


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    _FULL_SCALE_UV = (950000, 1250000, 1750000, 2450000)  # ESP32, per attenuation

    def __init__(self, pin, *, atten=ATTN_0DB):
        self.gpio = pin.id if isinstance(pin, Pin) else pin
        self.attenuation = atten

    def atten(self, a):
        self.attenuation = a

    def read_uv(self):
        return min(pad(self.gpio).uv, self._FULL_SCALE_UV[self.attenuation])


class UART(io.IOBase):
    """Records the arguments it was given (`args`: what the port's defaults would fill
    in is not there); reads and writes `wire` if a test set one (asyncio polls the
    wire's file descriptor: ioctl GET_FILENO), else keeps what was written in `sent`
    and never has bytes to read."""

    def __init__(self, id, baudrate=None, **kw):
        if id not in (0, 1, 2):
            raise ValueError(f"UART({id}) doesn't exist")
        for k in kw:
            if k not in _UART_KW:
                raise TypeError(f"unexpected keyword argument '{k}'")
        self.args = {"id": id}
        if baudrate is not None:
            self.args["baudrate"] = baudrate
        self.args.update(kw)
        self.sent = bytearray()
        self._wire = wire
        self._poll = None
        if wire is not None:
            self._poll = select.poll()
            self._poll.register(wire, select.POLLIN)
        uarts.append(self)

    def ioctl(self, req, arg):
        if req == _MP_STREAM_GET_FILENO and self._wire is not None:
            return self._wire.fileno()
        if req == _MP_STREAM_POLL:
            return arg & _POLLOUT  # no wire: nothing ever arrives
        if req == _MP_STREAM_CLOSE:
            return 0
        return -1

    def write(self, buf, *off_n):
        # a stream's write(buf[, max_len]) / write(buf, off, max_len)
        if len(off_n) == 2:
            off, n = off_n
        else:
            off, n = 0, off_n[0] if off_n else len(buf)
        data = memoryview(buf)[off : off + n]
        self.sent.extend(data)
        if watched:
            events.append(("write", len(data)))
        if self._wire is not None:
            return self._wire.write(data)
        return len(data)

    def flush(self):
        # the port waits until the last byte's stop bit has left (uart_wait_tx_done)
        if watched:
            events.append(("flush",))
        if flush_fails:
            raise OSError(116)  # ETIMEDOUT
        if self._wire is not None:
            self._wire.flush()

    def readinto(self, buf):
        if self._wire is None:
            return None  # timeout=0 and nothing waiting
        return self._wire.readinto(buf)

    def any(self):
        return 1 if self._poll is not None and self._poll.poll(0) else 0


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self):
        self.feeds += 1


def reset_cause():
    return cause


def reset():
    """Never returns, as on the board: counted, then the script ends."""
    global resets
    resets += 1
    raise SystemExit(99)
