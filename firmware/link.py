# The serial link: writes frames to the UART and reads downlink frames from it.
#
# TX: uart.write() straight from the caller (no task hop: a press reaches the line in the
# same call that saw it). A single 0x00 goes first after boot or after more than a second
# of silence (SPEC.md 1.1), so the receiver drops any noise it holds at once.
# RX: bytes -> 0x00-delimited pieces in a bounded buffer -> COBS-decoded in place ->
# proto.Decoder -> on_frame(decoder). Never raises on line bytes; resyncs at a delimiter.
import asyncio
import time
from micropython import const

import cobs
from proto import MAX_ENCODED, R_CORRUPT, R_OVERSIZE

_SILENCE_MS = const(1000)
_DELIM = b"\x00"


class Link:
    def __init__(self, uart, decoder, on_frame):
        self._uart = uart
        self._dec = decoder
        self._on_frame = on_frame
        self._last_tx = time.ticks_ms()
        self._fresh = True
        self._rx = bytearray(64)
        self._piece = bytearray(MAX_ENCODED)
        self._piece_mv = memoryview(self._piece)
        self._n = 0
        self._discarding = False
        self._task = None
        self.tx_bytes = 0
        self.rx_frames = 0

    def send(self, buf, n):
        """Write buf[0:n] to the line now."""
        now = time.ticks_ms()
        if self._fresh or time.ticks_diff(now, self._last_tx) > _SILENCE_MS:
            self._uart.write(_DELIM)
            self._fresh = False
        # stream write(buf, max_len): no slice, no allocation (UART and files alike)
        self._uart.write(buf, n)
        self._last_tx = now
        self.tx_bytes += n

    # ---- receive ----

    def feed(self, data, count):
        """Take count line bytes from data; hand each complete frame to on_frame."""
        piece = self._piece
        for i in range(count):
            b = data[i]
            if b == 0:
                n = self._n
                self._n = 0
                if self._discarding:
                    self._discarding = False
                    continue
                if n == 0:
                    continue
                m = cobs.decode_inplace(piece, n)
                if m < 0:
                    self._dec.rejects[R_CORRUPT] += 1
                    continue
                self.rx_frames += 1
                t = self._dec.decode(piece, m, self._piece_mv)
                if t > 0:
                    self._on_frame(self._dec)
                continue
            if self._discarding:
                continue
            if self._n >= MAX_ENCODED:
                self._discarding = True
                self._n = 0
                self._dec.rejects[R_OVERSIZE] += 1
                continue
            piece[self._n] = b
            self._n += 1

    def start(self):
        self._task = asyncio.create_task(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        reader = asyncio.StreamReader(self._uart)
        rx = self._rx
        while True:
            n = await reader.readinto(rx)
            if n:
                self.feed(rx, n)
            else:
                # nothing after a readable poll: the far end hung up (pty) or a UART
                # returned None; do not spin
                await asyncio.sleep_ms(50)
