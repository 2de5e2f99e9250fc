# The real unit: ESP32 + MicroPython. The ONLY module that imports machine/esp32.
#
# Wiring (pins from unit.json, i.e. boards.yaml): buttons to GND with the internal
# pull-up (pressed = 0); tamper switch closed to GND while the case is shut (open = 1);
# mains sense (optional) high while mains power is present, with the internal pull-down
# (a broken wire reads as mains lost); LED and an ACTIVE buzzer on GPIO outputs (high =
# on); battery through a divider to an ADC1 pin (battery_divider_x1000, default 2.000);
# UART1 on uart_tx/uart_rx. Never a button or switch on a strapping pin (0, 2, 5, 12, 15):
# the panic button held on GPIO 0 during a reset would leave the chip in its download mode,
# with no firmware and no watchdog (gateway/core/config.py refuses such a boards.yaml).
import asyncio
import sys

import machine
from machine import ADC, UART, WDT, Pin

_ROOT = "/"
_MAINTENANCE_WDT_MS = 2 * 60 * 60 * 1000


class Input:
    """A pin whose IRQ only sets a ThreadSafeFlag; value() is 1 while active."""

    def __init__(self, pin_no, active_low, pull=Pin.PULL_UP):
        self.flag = asyncio.ThreadSafeFlag()
        self._set = self.flag.set  # bound once: the handler allocates nothing
        self._pin = Pin(pin_no, Pin.IN, pull)
        self._invert = 1 if active_low else 0
        self._pin.irq(handler=self._irq, trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING)

    def _irq(self, pin):
        self._set()

    def value(self):
        return self._pin.value() ^ self._invert


class Board:
    def __init__(self, pins=None, divider_x1000=2000):
        import json

        self.root = _ROOT
        if pins is None:
            cfg = {}
            try:
                with open(_ROOT + "unit.json") as f:
                    cfg = json.load(f)
            except (OSError, ValueError):
                pass  # no pins; startup.py finds the same and calls unconfigured()
            if not isinstance(cfg, dict):
                cfg = {}  # valid JSON, but not unit.json: as above
            pins = cfg.get("pins", {})
            if not isinstance(pins, dict):
                pins = {}
            try:
                divider_x1000 = int(cfg.get("battery_divider_x1000", divider_x1000))
            except (TypeError, ValueError):
                pass  # a bad divider costs the battery reading, not the unit its button
        self._pins = pins
        self._divider = divider_x1000
        self._inputs = {}
        if "button" in pins:
            self._inputs["button"] = Input(pins["button"], True)
        if "checkin" in pins:
            self._inputs["checkin"] = Input(pins["checkin"], True)
        if "tamper" in pins:
            self._inputs["tamper"] = Input(pins["tamper"], False)
        if "mains" in pins:
            self._inputs["mains"] = Input(pins["mains"], False, Pin.PULL_DOWN)
        self._led = Pin(pins["led"], Pin.OUT, value=0) if "led" in pins else None
        self._buzzer = Pin(pins["buzzer"], Pin.OUT, value=0) if "buzzer" in pins else None
        self._buzzer_level = 0  # what buzzer() drives (the pad reads otherwise if shorted)
        # RS-485 transceiver's driver enable (DE and /RE tied), where it has no automatic
        # direction control: low (listening) from here on; fit a pull-down on the board
        # so that the driver stays off during the reset and boot before this line runs
        self._de = Pin(pins["rs485_de"], Pin.OUT, value=0) if "rs485_de" in pins else None
        self._adc = None
        if "battery_adc" in pins:
            self._adc = ADC(Pin(pins["battery_adc"]))
            self._adc.atten(ADC.ATTN_11DB)
        self._wdt = None
        self.code_bytes = 0
        # "power": power-on or the reset pin (a power cut is not a crash); "wdt"; any
        # other reset (machine.reset() after a crash, a panic) counts towards safe mode
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            self._cause = "wdt"
        elif cause in (machine.PWRON_RESET, machine.HARD_RESET):
            self._cause = "power"
        else:
            self._cause = "crash"

    def uart(self, baud):
        p = self._pins
        return UART(
            1, baudrate=baud, tx=p.get("uart_tx", 17), rx=p.get("uart_rx", 16),
            rxbuf=512, txbuf=512, timeout=0,
        )

    def rs485_de(self):
        return self._de

    def input(self, name):
        return self._inputs.get(name)

    def led(self, level):
        if self._led is not None:
            self._led.value(level)

    def buzzer(self, level):
        if self._buzzer is not None:
            self._buzzer_level = level
            self._buzzer.value(level)

    def indicate(self, what, name):
        pass  # the pins show it

    def sounder_ok(self):
        """The buzzer's GPIO reads back what is driven (Pin.OUT is input+output on the
        ESP32): catches a line shorted to GND or 3V3. The 1 is driven for a few us,
        far too short to sound. It cannot hear the buzzer itself."""
        p = self._buzzer
        if p is None:
            return False
        p.value(1)
        high = p.value()
        p.value(0)
        low = p.value()
        # back to what buzzer() drives, not to what the pad read: a line shorted high
        # during the check would leave the buzzer on once the short is gone, and
        # Feedback (which drives only changes) would not turn it off
        p.value(self._buzzer_level)
        return high == 1 and low == 0

    def battery_mv(self):
        if self._adc is None:
            return 0
        return self._adc.read_uv() // 1000 * self._divider // 1000

    def log(self, text):
        print(text)

    def ready(self, epoch, count):
        print("campusguard: ready, epoch", epoch, "reloaded", count, "code", self.code_bytes)

    def reset_cause(self):
        return self._cause

    def wdt_start(self, timeout):
        self._wdt = WDT(timeout=timeout)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def start(self, app):
        pass

    def stop(self):
        pass

    def crashed(self, exc):
        sys.print_exception(exc)
        machine.reset()

    def unconfigured(self, reason):
        # no key or config: nothing can be sent. Stay at the REPL for `campusguard deploy`
        print("campusguard: unconfigured:", reason)
        self.led(1)

    def maintenance(self):
        # Ctrl-C from mpremote (deploy): the hardware WDT cannot be stopped, so stretch it
        # to two hours; `mpremote reset` after the deploy starts the unit again
        if self._wdt is not None:
            self._wdt = WDT(timeout=_MAINTENANCE_WDT_MS)
        print("campusguard: stopped for maintenance")
