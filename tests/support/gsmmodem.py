"""A GSM modem on a real pty: answers AT commands in PDU mode, fails, delivers late.

The gateway opens the pty's slave by path, as it opens /dev/ttyUSB2; this side reads
commands from the master. Behaviour per destination number (``plan``): ``ok`` (send, then
a delivery report when :meth:`deliver` is called), ``cms`` (``+CMS ERROR: 500`` to every
send), ``fail_report`` (sent, then a permanent failure report), ``silent`` (sent, never a
report).
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

from gateway.notify.pdu import status_report


def _number(pdu_hex: str) -> str:
    data = bytes.fromhex(pdu_hex)
    p = 1 + data[0] + 2
    n = data[p]
    raw = data[p + 2 : p + 2 + (n + 1) // 2]
    digits = "".join(f"{b & 0xF:X}{b >> 4:X}" for b in raw)[:n]
    return ("+" if data[p + 1] == 0x91 else "") + digits


def _text(pdu_hex: str) -> str:
    data = bytes.fromhex(pdu_hex)
    p = 1 + data[0]
    first = data[p]
    n = data[p + 2]
    q = p + 4 + (n + 1) // 2 + 3  # PID, DCS, VP
    ud = data[q + 1 :]
    if first & 0x40:
        ud = ud[ud[0] + 1 :]
    return ud.decode("utf-16-be")


class FakeModem:
    """The modem's side of a pty; ``sent`` lists (number, text, mr) as accepted."""

    def __init__(self, path: Path) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = path
        path.symlink_to(os.ttyname(slave))
        self._slave = slave
        self.plan: dict[str, str] = {}
        self.commands: list[str] = []
        self.sent: list[tuple[str, str, int]] = []
        self.cmgs_tries: dict[str, int] = {}
        self.reported: set[int] = set()
        self._mr = 0
        self._buf = b""
        self._pending_len: int | None = None
        self.changed = asyncio.Event()
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)

    def _write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _readable(self) -> None:
        try:
            self._buf += os.read(self.master, 4096)
        except OSError:
            return
        while True:
            if self._pending_len is not None:
                end = self._buf.find(b"\x1a")
                if end < 0:
                    return
                pdu, self._buf = self._buf[:end].decode(), self._buf[end + 1 :]
                self._pending_len = None
                self._submit(pdu)
                continue
            end = self._buf.find(b"\r")
            if end < 0:
                return
            cmd, self._buf = self._buf[:end].decode().strip(), self._buf[end + 1 :]
            if cmd:
                self._command(cmd)

    def _command(self, cmd: str) -> None:
        self.commands.append(cmd)
        if cmd.startswith("AT+CMGS="):
            self._pending_len = int(cmd.split("=")[1])
            self._write("\r\n> ")
        elif cmd.startswith("AT"):
            self._write("\r\nOK\r\n")
        else:
            self._write("\r\nERROR\r\n")
        self.changed.set()

    def _submit(self, pdu: str) -> None:
        number = _number(pdu)
        self.cmgs_tries[number] = self.cmgs_tries.get(number, 0) + 1
        how = self.plan.get(number, "ok")
        if how == "cms":
            self._write("\r\n+CMS ERROR: 500\r\n")
        else:
            self._mr = (self._mr + 1) % 256
            self.sent.append((number, _text(pdu), self._mr))
            self._write(f"\r\n+CMGS: {self._mr}\r\n\r\nOK\r\n")
            if how == "fail_report":
                self.report(self._mr, number, 0x41)
        self.changed.set()

    def report(self, mr: int, number: str, status: int) -> None:
        """A status report, unsolicited, as ``+CDS``."""
        pdu = status_report(mr, number, status)
        self._write(f"\r\n+CDS: {len(pdu) // 2 - 1}\r\n{pdu}\r\n")

    def deliver(self, number: str) -> None:
        """The phone got what was sent to ``number`` so far (a late delivery report each)."""
        for n, _, mr in self.sent:
            if n == number and mr not in self.reported:
                self.reported.add(mr)
                self.report(mr, number, 0x00)

    def texts(self, number: str) -> str:
        """Everything sent to ``number``, parts joined."""
        return "".join(t for n, t, _ in self.sent if n == number)

    async def wait_for(self, predicate: object, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()
