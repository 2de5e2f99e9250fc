# The virtual board: the real firmware on the MicroPython unix port.
#
#   micropython -X heapsize=80K main.py --uart PTY --ctl PTY     (cwd = the unit folder)
#
# UART: a pty opened in raw mode with VMIN=0/VTIME=0 (else a read blocks the loop).
# Control channel: a second pty carrying text lines (firmware/README.md):
#   in:  button 0|1, checkin 0|1, tamper 0|1 (1 = case open), mains 0|1 (0 = lost),
#        battery MV, sounder 0|1 (0 = the self-test finds it broken), test (installer's
#        TEST), mem, files, link, hang
#   out: ready EPOCH RELOADED, led NAME, buzzer NAME, log TEXT, wdt, mem ALLOC FREE CODE,
#        link RTO_MS SRTT_MS RETRIES NEEDLESS (the outbox's learnt retransmission timeout),
#        files NAME=PATH... (where each loaded module came from: /rom/... from ROMFS)
# Storage: files in the unit folder. Watchdog: a thread that, if the main loop stops
# feeding it, records "wdt" as the reset cause and kills the whole process (SIGKILL, as
# abrupt as a real reset; the host driver reports it as exit code 3).
import _thread  # host-only: the watchdog thread (the ESP32 has a hardware WDT)
import asyncio
import gc
import os
import sys
import termios  # host-only: raw mode on the ptys
import time
from micropython import const


_VMIN = const(6)  # Linux c_cc indexes (MicroPython's termios has no names for them)
_VTIME = const(5)
_CAUSE_FILE = const("reset.cause")


def _open_raw(path):
    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    attr = termios.tcgetattr(fd)
    attr[6][_VMIN] = 0
    attr[6][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attr)
    return f


class Input(asyncio.Event):
    """A simulated input pin: value() is 1 while active; `flag` (the input itself) is set
    on every edge by the control task, which drives `level`. It has ThreadSafeFlag's
    interface (set(); wait() returns once set, and clears it) on an asyncio.Event: the
    unix port's ThreadSafeFlag is no file descriptor, and while a task waits on one,
    asyncio's poll() cannot block: it wakes every 1 ms, even in an idle unit."""

    def __init__(self, level=0):
        super().__init__()
        self.flag = self
        self.level = level

    async def wait(self):  # type: ignore[override]
        await asyncio.Event.wait(self)
        self.clear()

    def value(self):
        return self.level


class Board:
    def __init__(self, argv):
        self.root = os.getcwd()
        self._uart_path = None
        ctl = None
        i = 0
        while i + 1 < len(argv):
            if argv[i] == "--uart":
                self._uart_path = argv[i + 1]
            elif argv[i] == "--ctl":
                ctl = argv[i + 1]
            i += 2
        if self._uart_path is None or ctl is None:
            raise SystemExit("usage: micropython main.py --uart PTY --ctl PTY")
        self._ctl = _open_raw(ctl)
        # mains present at power-up
        self._inputs = {"button": Input(), "checkin": Input(), "tamper": Input(), "mains": Input(1)}
        self._battery_mv = 3700
        self._sounder = True
        self._app = None
        self.code_bytes = 0  # heap taken by importing the firmware (main.py measures it)
        self.task = None
        self._wdt_ms = 0
        self._fed = time.ticks_ms()
        self._interrupted = False  # a Ctrl-C the watchdog thread caught, for the main one
        self._wdt_ended = None  # a lock the watchdog thread holds while it runs
        # what the last reset left behind (the ESP32 reads machine.reset_cause())
        try:
            with open(_CAUSE_FILE) as f:
                self._cause = f.read().strip()
            os.remove(_CAUSE_FILE)
        except OSError:
            self._cause = "power"

    # ---- inputs and outputs ----

    def uart(self, baud):
        return _open_raw(self._uart_path)

    def rs485_de(self):
        return None  # the pty needs no direction switching

    def input(self, name):
        return self._inputs.get(name)

    def led(self, level):
        pass  # the host sees the pattern's name (indicate()), not the pin's level

    def buzzer(self, level):
        pass

    def indicate(self, what, name):
        self.log(what + " " + name, "")

    def battery_mv(self):
        return self._battery_mv

    def sounder_ok(self):
        return self._sounder

    def log(self, text, what="log "):
        """A line on the control channel (`log TEXT`, or `what` + TEXT)."""
        self._ctl.write((what + text + "\n").encode())

    def ready(self, epoch, count):
        self.log("ready %d %d" % (epoch, count), "")

    # ---- reset and watchdog ----

    def reset_cause(self):
        return self._cause

    def wdt_start(self, timeout):
        self._wdt_ms = timeout
        self._fed = time.ticks_ms()
        self._wdt_ended = _thread.allocate_lock()
        self._wdt_ended.acquire()
        _thread.start_new_thread(self._wdt_thread, ())

    def _end_wdt(self):
        # The unix port can crash (SIGSEGV) tearing itself down under a thread that still
        # runs: a clean exit ends the watchdog thread first (the ESP32's WDT needs nothing).
        # _wdt_ended stays set: on a loaded host the thread may run its first line only
        # once this waits (a Ctrl-C right after boot); it read the lock cleared then, and
        # took the clean exit for a bite (exit 3)
        done = self._wdt_ended
        if done is not None and self._wdt_ms >= 0:
            self._wdt_ms = -1
            done.acquire()

    def wdt_feed(self):
        if self._interrupted:  # Ctrl-C: the main thread stops for maintenance (main.py)
            self._interrupted = False
            raise KeyboardInterrupt
        self._fed = time.ticks_ms()

    def _wdt_thread(self):
        while True:
            try:
                while time.ticks_diff(time.ticks_ms(), self._fed) <= self._wdt_ms:
                    # the poll, 200 ms (time.sleep: one pselect; sleep_ms spins in a thread)
                    time.sleep(0.2)
                break
            except KeyboardInterrupt:
                # SIGINT may land in this thread (the unix port raises it from the signal
                # handler in whichever thread runs, also in this one's first lines when it
                # starts late): it would end it (no watchdog any more) and the unit would
                # run on; the next feed raises it in the main thread
                self._interrupted = True
        done = self._wdt_ended  # set before this thread started, never cleared
        if self._wdt_ms < 0 and done is not None:  # ended for a clean exit (_end_wdt)
            done.release()
            return
        # bitten: record the cause, then end the process as abruptly as a reset
        with open(_CAUSE_FILE, "wb") as f:
            f.write(b"wdt\n")
        try:
            self._ctl.write(b"wdt\n")
        except OSError:
            pass
        # the unix port has no os._exit; the shell's parent is this process
        os.system("kill -KILL $PPID")
        while True:
            time.sleep_ms(1000)

    def crashed(self, exc):
        sys.print_exception(exc)
        self.log("crash: " + repr(exc))
        # what a crash's reset leaves behind (the ESP32 reads machine.reset_cause())
        with open(_CAUSE_FILE, "wb") as f:
            f.write(b"crash\n")
        self._end_wdt()
        sys.exit(4)

    def unconfigured(self, reason):
        self.log("unconfigured: " + reason)
        self._end_wdt()
        sys.exit(2)

    def maintenance(self):
        self._end_wdt()
        sys.exit(0)

    # ---- the control channel ----

    def start(self, app):
        self._app = app
        self.task = asyncio.create_task(self._control())

    def stop(self):
        self._app = None
        if self.task is not None:
            try:
                self.task.cancel()
            except RuntimeError:  # the task a Ctrl-C interrupted (see App.stop)
                pass
            self.task = None

    async def _control(self):
        ctl = asyncio.StreamReader(self._ctl)
        inputs = self._inputs
        while True:
            line = await ctl.readline()  # commands are short lines, written whole
            if not line:
                await asyncio.sleep_ms(50)
                continue
            words = line.decode().split()
            if not words:
                continue
            cmd = words[0]
            arg = words[1] if len(words) == 2 else None
            inp = inputs.get(cmd)
            if inp is not None and arg is not None:
                level = 1 if arg == "1" else 0
                if level != inp.level:
                    inp.level = level
                    inp.flag.set()
            elif cmd == "battery" and arg is not None:
                self._battery_mv = int(arg)
            elif cmd == "sounder" and arg is not None:
                self._sounder = arg == "1"
            elif cmd == "test":
                # the installer's TEST (kind 1); on a real unit: app.request_test() at the REPL
                app = self._app
                sent = app is not None and app.manual_test()
                self.log("test sent" if sent else "test refused")
            elif cmd == "mem":
                gc.collect()
                self.log("mem %d %d %d" % (gc.mem_alloc(), gc.mem_free(), self.code_bytes), "")
            elif cmd == "link" and self._app is not None:
                ob = self._app.outbox
                self.log(
                    "link %d %d %d %d" % (ob.rto_ms, ob._srtt8 >> 3, ob.retries, ob.needless), ""
                )
            elif cmd == "files":
                out = "files"
                for name, m in sys.modules.items():
                    out += " %s=%s" % (name, getattr(m, "__file__", "-"))
                self.log(out, "")
            elif cmd == "hang":
                # test hook: the main loop stops here for good; only the watchdog ends it.
                # Blocked, not spinning. The unix port has no GIL to hold the watchdog
                # thread back (ports/unix/mpconfigport.mk: MICROPY_PY_THREAD_GIL = 0), but
                # a spinning thread keeps a whole core busy, and on a loaded host the
                # watchdog thread's 200 ms poll then came > 20 s late; the ESP32's
                # hardware WDT needs no CPU time of ours
                while True:
                    time.sleep(1)
            else:
                self.log("unknown command " + " ".join(words))
