"""A GSM modem on a serial port, driven by AT commands (3GPP TS 27.005/27.007), PDU mode.

The serial side is :class:`gateway.link.link.SerialLink` (raw mode, reopened for ever if the
USB modem goes away). Lines from the modem are either the answer to the one command in
flight (ending in ``OK``, ``ERROR``, ``+CMS ERROR: n`` or ``+CME ERROR: n``) or
unsolicited: ``+CDS: <len>`` and the next line, a status report, goes to ``on_report``.
AT+CMGS waits for the ``> `` prompt before the PDU and Ctrl-Z. What the modem sends is
untrusted: lines are capped, and garbage is counted and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.core.errors import ModemError, PduError
from gateway.link.link import SerialLink
from gateway.notify.pdu import StatusReport, Submit, decode_status_report

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 60.0  # AT+CMGS: the network can take tens of seconds
MAX_LINE = 1024
PROMPT = ">"  # stands for the "> " prompt in the line queue
INIT = ("ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,1,0")


class Modem:
    """One GSM modem; :meth:`run` keeps the port open, :meth:`send` sends one SMS part."""

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        *,
        on_report: Callable[[StatusReport], None] = lambda r: None,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        """``on_report`` hears every status report (``+CDS``)."""
        self.link = SerialLink("modem", port, baud, self)
        self.on_report = on_report
        self._command_timeout = command_timeout_s
        self._send_timeout = send_timeout_s
        self._buf = bytearray()
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._cds_next = False
        self.ready = False  # initialised since the port last opened
        self.garbage = 0

    async def run(self) -> None:
        """Keep the port open (for ever, until cancelled)."""
        await self.link.run()

    # -- LinkSink -----------------------------------------------------------------------

    def on_link(self, link: str, up: bool) -> None:
        """The port opened or went away: it must be initialised again."""
        self.ready = False

    def on_bytes(self, link: str, data: bytes) -> None:
        """Split the modem's output into lines; catch the ``> `` prompt."""
        self._buf += data
        if len(self._buf) > 4 * MAX_LINE:
            self.garbage += 1
            del self._buf[:-MAX_LINE]
        while True:
            stripped = self._buf.lstrip(b"\r\n")
            if stripped.startswith(b"> ") or stripped == b">":
                self._buf = bytearray(stripped[2:])
                self._lines.put_nowait(PROMPT)
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                return
            raw = bytes(self._buf[:end]).strip(b"\r\n ")
            del self._buf[: end + 1]
            if not raw:
                continue
            self._line(raw[:MAX_LINE].decode("ascii", "replace"))

    def _line(self, line: str) -> None:
        if self._cds_next:
            self._cds_next = False
            try:
                report = decode_status_report(line)
            except PduError as exc:
                self.garbage += 1
                log.warning("modem: unreadable status report: %s", exc)
                return
            try:
                self.on_report(report)
            except Exception:  # it runs in the port's read callback: never break the port
                log.exception("modem: status report for %d not recorded", report.mr)
            return
        if line.startswith("+CDS:"):
            self._cds_next = True
            return
        if line.startswith(("+CMTI:", "RING", "+CREG:", "^")):  # not ours to act on
            return
        self._lines.put_nowait(line)

    # -- commands -----------------------------------------------------------------------

    async def command(self, cmd: str, timeout_s: float | None = None) -> list[str]:
        """Send ``cmd``; its answer lines before ``OK``; :class:`ModemError` otherwise."""
        async with self._lock:
            return await self._command(cmd, timeout_s or self._command_timeout)

    async def _command(self, cmd: str, timeout_s: float) -> list[str]:
        self._drain()
        if not self.link.write(cmd.encode() + b"\r"):
            raise ModemError(f"modem port {self.link.port} is not open")
        return await self._answer(cmd, timeout_s)

    async def _answer(self, cmd: str, timeout_s: float) -> list[str]:
        out: list[str] = []
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    line = await self._lines.get()
                    if line == "OK":
                        return out
                    if line == "ERROR" or line.startswith(("+CMS ERROR", "+CME ERROR")):
                        raise ModemError(f"{cmd.split('=')[0]}: {line}")
                    if line != cmd:  # an echo, before ATE0 took effect
                        out.append(line)
        except TimeoutError:
            raise ModemError(f"{cmd.split('=')[0]}: no answer within {timeout_s:g} s") from None

    def _drain(self) -> None:
        while not self._lines.empty():
            self._lines.get_nowait()

    async def initialise(self) -> None:
        """Echo off, numeric errors, PDU mode, status reports as ``+CDS``."""
        for cmd in INIT:
            await self.command(cmd)
        self.ready = True

    async def send(self, part: Submit) -> int:
        """Send one SMS-SUBMIT; return the message reference the network gave it."""
        async with self._lock:
            if not self.ready:
                for cmd in INIT:
                    await self._command(cmd, self._command_timeout)
                self.ready = True
            self._drain()
            if not self.link.write(f"AT+CMGS={part.tpdu_len}\r".encode()):
                raise ModemError(f"modem port {self.link.port} is not open")
            try:
                async with asyncio.timeout(self._command_timeout):
                    while (got := await self._lines.get()) != PROMPT:
                        if got == "ERROR" or got.startswith(("+CMS ERROR", "+CME ERROR")):
                            raise ModemError(f"AT+CMGS: {got}")
            except TimeoutError:
                self.link.write(b"\x1b")  # leave the prompt: ESC cancels the message
                raise ModemError("AT+CMGS: no prompt") from None
            self.link.write(part.hex.encode() + b"\x1a")
            lines = await self._answer("AT+CMGS", self._send_timeout)
        for line in lines:
            if line.startswith("+CMGS:"):
                try:
                    return int(line.split(":", 1)[1].split(",")[0])
                except ValueError:
                    break
        raise ModemError(f"AT+CMGS: no message reference in {lines!r}")
