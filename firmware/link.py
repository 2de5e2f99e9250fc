# The serial link: writes frames to the UART and reads downlink frames from it.
#
# TX: uart.write() straight from the caller (no task hop: a press reaches the line in the
# same call that saw it). A single 0x00 goes first after boot or after more than a second
# of silence (SPEC.md 1.1), so the receiver drops any noise it holds at once.
# RX: bytes -> 0x00-delimited pieces in a bounded buffer -> COBS-decoded in place ->
# proto.Codec.decode() -> on_frame(codec). Never raises on line bytes; resyncs at a delimiter.
# Listen before talk (a shared RS-485 bus or radio channel): busy() is True while bytes
# are arriving (UART.any() where the UART has it, else bytes read in the last 5 ms);
# the outbox and the heartbeat hold a frame back a few random ms while it is.
# RS-485 driver enable (`de`, a pin, where the transceiver has no automatic direction
# control): high while a frame is written, low once UART.flush() has seen its last stop
# bit leave (~2.5 ms for a frame at 115200; the loop waits that long). A unit that kept
# its driver on would hold the whole bus.
import asyncio
import time
from micropython import const

import proto

_SILENCE_MS = const(1000)
_MAX_ENCODED = const(80)  # proto.py: the longest frame, COBS-encoded
_R_OVERSIZE = const(0)  # proto.REASONS indexes
_R_CORRUPT = const(1)
_QUIET_MS = const(5)  # the line counts as busy this long after the last byte in
_DELIM = const(b"\x00")


class Link:
    def __init__(self, uart, codec, on_frame, de=None):
        self.uart = uart
        # asyncio's stream: the public way to wait until the UART has bytes (its
        # readinto() parks the task on asyncio's poller; a generator per call)
        self.stream = asyncio.StreamReader(uart)
        self.de = de
        self.codec = codec
        self.on_frame = on_frame
        now = time.ticks_ms()
        # as if the line had been silent: the first frame goes after a lone 0x00
        self._last_tx = time.ticks_add(now, -2 * _SILENCE_MS)
        self._last_rx = time.ticks_add(now, -_QUIET_MS)
        self.any = getattr(uart, "any", None)  # machine.UART: bytes waiting (no alloc)
        self._rx = bytearray(64)
        self._piece = bytearray(_MAX_ENCODED)
        self._piece_mv = memoryview(self._piece)
        self._n = 0  # bytes of the piece so far; -1: an oversize piece, dropped to its end
        self._polled = False  # poll() took bytes the reader task was woken for

    def send(self, buf, n, off=0):
        """Write buf[off:off+n] to the line now."""
        now = time.ticks_ms()
        uart = self.uart
        de = self.de
        if de is not None:
            de.value(1)
        try:
            if time.ticks_diff(now, self._last_tx) > _SILENCE_MS:
                uart.write(_DELIM)
            # stream write(buf, off, max_len): no slice, no allocation (UART and files alike)
            uart.write(buf, off, n)
            if de is not None:
                uart.flush()
        finally:
            if de is not None:
                de.value(0)  # even if flush() timed out: never left holding the bus
        self._last_tx = now

    def busy(self):
        """True while somebody else is sending (listen before talk)."""
        if self.any is not None and self.any():
            return True
        return time.ticks_diff(time.ticks_ms(), self._last_rx) < _QUIET_MS

    # ---- receive ----

    def poll(self):
        """Take the bytes already waiting on the line now, before a retry: after a stall
        (the loop busy, or the host's scheduler) the ACK may be waiting while the retry is
        due too, and asyncio runs the task whose deadline passed first, not the reader
        (the copy it sent was needless). Allocates nothing."""
        n = self.uart.readinto(self._rx)
        if n:
            self._polled = True
            self._last_rx = time.ticks_ms()
            self.feed(self._rx, n)

    def feed(self, data, count):
        """Take count line bytes from data; hand each complete frame to on_frame."""
        piece = self._piece
        for i in range(count):
            b = data[i]
            if b == 0:
                n = self._n
                self._n = 0
                if n <= 0:  # empty, or the end of an oversize piece
                    continue
                m = proto.decode_inplace(piece, n)
                if m < 0:
                    self.codec.rejects[_R_CORRUPT] += 1
                    continue
                t = self.codec.decode(piece, m, self._piece_mv)
                if t > 0:
                    self.on_frame(self.codec)
                continue
            if self._n < 0:
                continue
            if self._n >= _MAX_ENCODED:
                self._n = -1
                self.codec.rejects[_R_OVERSIZE] += 1
                continue
            piece[self._n] = b
            self._n += 1

    async def run(self):
        """The layer's task (App starts it, watches it and cancels it)."""
        stream = self.stream
        rx = self._rx
        while True:
            n = await stream.readinto(rx)
            if n:
                self._last_rx = time.ticks_ms()
                self.feed(rx, n)
            elif self._polled:
                self._polled = False  # poll() read what woke this task
            else:
                # nothing after a readable poll: the far end hung up (pty) or a UART
                # returned None; do not spin
                await asyncio.sleep_ms(50)
