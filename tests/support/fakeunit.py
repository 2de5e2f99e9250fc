"""Fake alarm units on a real pty: frames made with the protocol package, no firmware.

    port = FakePort(tmp_path / "ttyBUS0")        # a pty; the gateway opens this path
    unit = FakeUnit(port, addr=257, key=TEST_KEY, epoch=5)
    frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1234))
    await port.wait_ack(frame, AckState.RECEIVED, timeout=2)

``FakePort`` holds the pty master (the units' side of the line) and exposes the slave
through a symlink, as ``socat ... link=PATH`` does, so the line can vanish (``vanish``:
master closed, the gateway's reads fail) and come back on a new pty at the same path
(``restore``). It keeps a second slave descriptor open so that the master does not see
EIO while the gateway is away (restarting, killed). Every downlink frame is decoded with
``protocol.decode(..., uplink=False)`` and kept in ``port.downlinks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import time
import tty
from collections.abc import Callable
from pathlib import Path

from protocol import (
    Ack,
    AckState,
    Deframer,
    Frame,
    Message,
    ProtocolError,
    decode,
    encode,
    to_wire,
)
from tests.support.timing import TIME_SCALE, scaled


class FakePort:
    """The far end of one serial link, shared by any number of fake units."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.keys: dict[int, bytes] = {}
        self.downlinks: list[Frame] = []
        self.arrived: list[float] = []  # time.time() when each downlink frame was read
        self.rejects: list[str] = []
        self._changed = asyncio.Event()
        self._deframer = Deframer()
        self._out = bytearray()
        self._master = -1
        self._slave = -1
        self._writing = False
        self._open()

    # -- the line ---------------------------------------------------------------------

    def _open(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        self._deframer = Deframer()
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    def vanish(self) -> None:
        """The line goes away: the pty is closed and the path removed."""
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def restore(self) -> None:
        """The line comes back (a new pty behind the same path)."""
        if self._master < 0:
            self._open()

    def close(self) -> None:
        """Close everything."""
        self.vanish()

    def _close(self) -> None:
        if self._master < 0:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        if self._writing:
            loop.remove_writer(self._master)
            self._writing = False
        self._out.clear()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def write(self, data: bytes) -> None:
        """Put bytes on the line (never blocks; queued if the pty is full)."""
        if self._master < 0:
            return  # a vanished line swallows what is sent
        if not self._out:
            try:
                n = os.write(self._master, data)
            except BlockingIOError:
                n = 0
            data = data[n:]
            if not data:
                return
        self._out += data
        if not self._writing:
            asyncio.get_running_loop().add_writer(self._master, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        try:
            n = os.write(self._master, self._out)
        except BlockingIOError:
            return
        del self._out[:n]
        if not self._out:
            asyncio.get_running_loop().remove_writer(self._master)
            self._writing = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return
        now = time.time()
        for raw in self._deframer.feed(data):
            try:
                frame = decode(raw, self.keys.get, uplink=False)
            except ProtocolError as exc:
                self.rejects.append(exc.reason.value)
                continue
            self.downlinks.append(frame)
            self.arrived.append(now)
        self._changed.set()

    # -- waiting ----------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds after some downlink frame; TimeoutError if not
        within ``timeout`` seconds of an idle machine (scaled: tests/support/timing.py)."""
        async with asyncio.timeout(scaled(timeout)):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def acks_for(self, frame: Frame, state: AckState | None = None) -> list[Ack]:
        """ACKs received for ``frame``'s counter (of one state, or any)."""
        out = []
        for d in self.downlinks:
            b = d.body
            if (
                isinstance(b, Ack)
                and d.unit == frame.unit
                and (b.ref_epoch, b.ref_seq) == (frame.epoch, frame.seq)
                and (state is None or b.state == state)
            ):
                out.append(b)
        return out

    def first_ack_at(self, frame: Frame, state: AckState = AckState.RECEIVED) -> float | None:
        """When the first ACK of ``frame`` with ``state`` was read off the line."""
        for d, at in zip(self.downlinks, self.arrived, strict=True):
            b = d.body
            if (
                isinstance(b, Ack)
                and d.unit == frame.unit
                and (b.ref_epoch, b.ref_seq, b.state) == (frame.epoch, frame.seq, state)
            ):
                return at
        return None

    async def wait_ack(
        self, frame: Frame, state: AckState = AckState.RECEIVED, timeout: float = 3.0
    ) -> None:
        """Wait for an ACK of ``frame`` with ``state``."""
        await self.wait_for(lambda: bool(self.acks_for(frame, state)), timeout)


class FakeUnit:
    """One unit: its address, key and counter; sends through a FakePort."""

    def __init__(self, port: FakePort, addr: int, key: bytes, epoch: int = 1) -> None:
        self.port = port
        self.addr = addr
        self.key = key
        self.epoch = epoch
        self.seq = 0
        port.keys[addr] = key

    def make(self, body: Message) -> Frame:
        """The next frame with this unit's counter (not sent)."""
        frame = Frame(unit=self.addr, epoch=self.epoch, seq=self.seq, body=body)
        self.seq += 1
        if self.seq > 0xFFFF:
            self.epoch, self.seq = self.epoch + 1, 0
        return frame

    def wire(self, frame: Frame) -> bytes:
        """The frame's bytes on the line."""
        return to_wire(encode(frame, self.key))

    def send(self, body: Message) -> Frame:
        """Make and send the next frame."""
        frame = self.make(body)
        self.port.write(self.wire(frame))
        return frame

    def resend(self, frame: Frame) -> None:
        """Retransmit a frame (same bytes, same counter)."""
        self.port.write(self.wire(frame))

    def reboot(self) -> None:
        """A new boot: the next epoch, seq from 0 (SPEC.md 1.3)."""
        self.epoch += 1
        self.seq = 0

    async def send_until_acked(
        self,
        frame: Frame,
        *,
        state: AckState = AckState.RECEIVED,
        retry_s: float = 0.3,
        timeout: float = 10.0,
    ) -> None:
        """Retransmit ``frame`` every ``retry_s`` until ACKed, as the firmware does."""
        async with asyncio.timeout(scaled(timeout)):
            while not self.port.acks_for(frame, state):
                self.resend(frame)
                with contextlib.suppress(TimeoutError):  # the firmware's retry pace: not scaled
                    await self.port.wait_for(
                        lambda: bool(self.port.acks_for(frame, state)), retry_s / TIME_SCALE
                    )
