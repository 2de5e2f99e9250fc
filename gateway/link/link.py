"""One serial link (UART, RS-485 bus, radio modem) as a byte stream on the event loop.

pyserial opens and configures the port (raw mode, baud rate, an exclusive lock); the
loop then reads and writes the file descriptor directly, non-blocking, through
``loop.add_reader``/``add_writer``. A port that cannot be opened, or that goes away (a USB
adapter unplugged, a pty whose other side closed), is reopened with capped backoff for
ever; the sink hears of every change of state.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any, Protocol

import serial

log = logging.getLogger(__name__)

READ_CHUNK = 4096
# downlink frames are best effort: past this many unsent bytes the oldest are dropped
MAX_PENDING_WRITE = 8192


class LinkSink(Protocol):
    """The next layer up: hears bytes and changes of link state."""

    def on_bytes(self, link: str, data: bytes) -> None:
        """Bytes arrived on ``link``."""
        ...

    def on_link(self, link: str, up: bool) -> None:
        """``link`` went down, or came back after being down."""
        ...


class SerialLink:
    """A serial port kept open: reads go to ``sink``, :meth:`write` sends."""

    def __init__(
        self,
        link_id: str,
        port: str,
        baud: int,
        sink: LinkSink,
        *,
        reopen_min_s: float = 0.05,
        reopen_max_s: float = 2.0,
    ) -> None:
        """``port`` is a device path; reopening backs off from ``reopen_min_s`` to the max."""
        self.id = link_id
        self.port = port
        self.baud = baud
        self._sink = sink
        self._min = reopen_min_s
        self._max = reopen_max_s
        self._serial: Any = None
        self._fd = -1
        self._lost: asyncio.Future[str] | None = None
        self._out = bytearray()
        self._writing = False
        self.up: bool | None = None  # None until the first attempt
        self.opened = asyncio.Event()
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped_out = 0
        self.opens = 0

    async def run(self) -> None:
        """Open, serve, reopen, for ever (until cancelled)."""
        loop = asyncio.get_running_loop()
        delay = self._min
        try:
            while True:
                try:
                    self._open()
                except (OSError, serial.SerialException, ValueError) as exc:
                    if self.up is not False:
                        log.error("link %s: cannot open %s: %s", self.id, self.port, exc)
                        self._set_state(False)
                    await asyncio.sleep(delay)
                    delay = min(self._max, delay * 2)
                    continue
                delay = self._min
                self._lost = loop.create_future()
                loop.add_reader(self._fd, self._on_readable)
                log.info("link %s: %s open at %d baud", self.id, self.port, self.baud)
                self._set_state(True)
                self.opened.set()
                reason = await self._lost
                log.error("link %s: %s lost: %s", self.id, self.port, reason)
                self._close()
                self._set_state(False)
        finally:
            self._close()

    def write(self, data: bytes) -> bool:
        """Queue bytes for the line; False if the link is down (nothing is queued)."""
        if self._fd < 0:
            return False
        if self._out:
            self._queue(data)
            return True
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(f"write: {exc}")
            return False
        self.bytes_out += n
        if n < len(data):
            self._queue(data[n:])
        return True

    # -- internals ----------------------------------------------------------------------

    def _open(self) -> None:
        ser = serial.Serial()
        ser.port = self.port
        ser.baudrate = self.baud
        ser.timeout = 0
        ser.write_timeout = 0
        ser.exclusive = True
        # O_NONBLOCK, raw mode. pyserial 3.5's open() flushes the input: what a unit sent
        # before the port was open is lost (its outbox sends it again until ACKed)
        ser.open()
        self._serial = ser
        self._fd = ser.fileno()
        self.opens += 1

    def _close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            if self._writing:
                loop.remove_writer(self._fd)
        self._writing = False
        self._out.clear()
        self._fd = -1
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, serial.SerialException):
                pass
            self._serial = None
        self.opened.clear()

    def _set_state(self, up: bool) -> None:
        before, self.up = self.up, up
        if before is None and up:
            return  # the first open at start is not news
        if before != up:
            self._sink.on_link(self.id, up)

    def _fail(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
            loop = asyncio.get_running_loop()
            if self._fd >= 0:
                loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: the other side of a pty closed, or the USB adapter went away
            self._fail(f"read: {errno.errorcode.get(exc.errno or 0, exc)}")
            return
        if not data:
            self._fail("end of file")
            return
        self.bytes_in += len(data)
        try:
            self._sink.on_bytes(self.id, data)
        except Exception:
            # the receiver never dies on bad input; a bug above must not kill the link
            log.exception("link %s: receiver failed on %d bytes", self.id, len(data))

    def _queue(self, data: bytes) -> None:
        self._out += data
        excess = len(self._out) - MAX_PENDING_WRITE
        if excess > 0:
            del self._out[:excess]
            self.dropped_out += excess
            log.warning("link %s: output backlog, dropped %d bytes", self.id, excess)
        if not self._writing:
            asyncio.get_running_loop().add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"write: {exc}")
            return
        self.bytes_out += n
        del self._out[:n]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._fd)
            self._writing = False
