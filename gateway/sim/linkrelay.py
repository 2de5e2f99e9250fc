"""A serial bus between virtual units and the gateway that can be made as bad as a radio.

Several units share one link, as on an RS-485 bus or a radio channel: every frame a unit
sends goes to the gateway, every frame the gateway sends goes to every unit. Frames are
relayed whole (cut at the 0x00 delimiter, per sender, so two units never interleave
inside a frame) and each can be dropped, duplicated, delayed or hit by a bit flip, with a
seeded random generator so a failing run can be repeated.

With a baud rate the link is one half-duplex line at that speed (8N1: 10 bits a byte):
a frame arrives once its last byte would have, and frames in both directions take turns
on the line, as on an RS-485 pair or a radio channel (a lost frame took its air time too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import termios
import tty
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the link does to each frame; probabilities per frame, delays in seconds."""

    drop: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0
    uplink_only: bool = False
    baud: int = 0  # the line's speed; 0: as fast as the pty (no air time)

    @property
    def clean(self) -> bool:
        """True when the link passes every frame untouched (a baud rate only delays)."""
        return not (self.drop or self.duplicate or self.corrupt or self.delay_s or self.jitter_s)


def _raw_fd(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    with contextlib.suppress(termios.error):
        tty.setraw(fd)
    return fd


class _End:
    """One side of the relay: a file descriptor and the partial frame read from it."""

    def __init__(self, name: str, fd: int, owned: bool = True) -> None:
        self.name = name
        self.fd = fd
        self.owned = owned
        self.buf = bytearray()
        self.out = bytearray()
        self.writing = False


class LinkRelay:
    """Relay frames between unit link paths and one gateway-side pty, with impairments."""

    def __init__(
        self,
        unit_paths: dict[str, str | int],
        impairment: Impairment | None = None,
        seed: int = 0,
        tap: Callable[[str, bytes, bool], None] | None = None,
    ) -> None:
        """``unit_paths`` maps a unit name to its UART's far end: a tty path or an open fd.

        A path is opened (and closed at stop) by the relay; an fd stays the caller's.
        ``tap(sender, frame, paused)`` hears every frame as sent, before the line's
        impairments: what a scanner on the radio channel would record (``sender`` is
        ``"gateway"`` for downlink frames).
        """
        self.tap = tap
        self._unit_paths = dict(unit_paths)
        self.impairment = impairment or Impairment()
        self._rng = random.Random(seed)
        self._units: list[_End] = []
        self._gateway: _End | None = None
        self._gateway_slave: int | None = None
        self.gateway_path = ""
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_due: dict[str, float] = {}
        self._line_free = 0.0  # loop time at which the line is free again (baud rate)
        self.paused = False

    async def start(self) -> str:
        """Open every unit's path and a new pty for the gateway; return the gateway's path."""
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._gateway_slave = slave  # kept open so the master never sees a hang-up
        self.gateway_path = os.ttyname(slave)
        self._gateway = _End("gateway", master)
        loop.add_reader(master, self._readable, self._gateway)
        for name, path in self._unit_paths.items():
            if isinstance(path, int):
                os.set_blocking(path, False)
                end = _End(name, path, owned=False)
            else:
                end = _End(name, _raw_fd(path))
            self._units.append(end)
            loop.add_reader(end.fd, self._readable, end)
        return self.gateway_path

    async def stop(self) -> None:
        """Stop relaying and close everything this relay opened."""
        loop = asyncio.get_running_loop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for end in [*self._units, *([self._gateway] if self._gateway else [])]:
            loop.remove_reader(end.fd)
            loop.remove_writer(end.fd)
            if end.owned:
                os.close(end.fd)
        if self._gateway_slave is not None:
            os.close(self._gateway_slave)
        self._units.clear()
        self._gateway = None
        self._gateway_slave = None

    async def __aenter__(self) -> LinkRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _readable(self, end: _End) -> None:
        try:
            data = os.read(end.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            # the far end of a pty went away (unit process ended): keep the fd, read later
            asyncio.get_running_loop().remove_reader(end.fd)
            asyncio.get_running_loop().call_later(0.05, self._rearm, end)
            return
        if not data:
            return
        end.buf += data
        while True:
            i = end.buf.find(0)
            if i < 0:
                if len(end.buf) > 4096:  # garbage without delimiters: pass it on as is
                    self._route(end, bytes(end.buf))
                    end.buf.clear()
                return
            frame = bytes(end.buf[: i + 1])
            del end.buf[: i + 1]
            self._route(end, frame)

    def _rearm(self, end: _End) -> None:
        if end in self._units or end is self._gateway:
            asyncio.get_running_loop().add_reader(end.fd, self._readable, end)

    def _route(self, src: _End, frame: bytes) -> None:
        if self.tap is not None:
            self.tap(src.name, frame, self.paused)
        uplink = src is not self._gateway
        targets = [self._gateway] if uplink else list(self._units)
        direction = "up" if uplink else "down"
        if self.paused:
            self.stats[f"{direction}_paused"] += 1
            return
        imp = self.impairment
        impaired = uplink or not imp.uplink_only
        on_air = self._on_air(len(frame)) if imp.baud else 0.0
        copies = 1
        if impaired and frame != b"\x00":
            if self._rng.random() < imp.drop:
                self.stats[f"{direction}_dropped"] += 1
                return
            if self._rng.random() < imp.duplicate:
                copies = 2
                self.stats[f"{direction}_duplicated"] += 1
            if self._rng.random() < imp.corrupt and len(frame) > 1:
                b = bytearray(frame)
                pos = self._rng.randrange(len(b) - 1)  # never the delimiter itself
                b[pos] ^= 1 << self._rng.randrange(8)
                frame = bytes(b)
                self.stats[f"{direction}_corrupted"] += 1
        self.stats[f"{direction}_frames"] += 1
        delay = on_air
        if impaired and (imp.delay_s or imp.jitter_s):
            delay += imp.delay_s + self._rng.random() * imp.jitter_s
        for target in targets:
            if target is None:
                continue
            for _ in range(copies):
                if delay:
                    self._later(target, frame, delay)
                else:
                    self._write(target, frame)

    def _on_air(self, length: int) -> float:
        """Seconds until a frame of ``length`` bytes, offered now, has been received whole.

        It waits for the line, then takes 10 bits a byte at the baud rate.
        """
        now = asyncio.get_running_loop().time()
        start = max(now, self._line_free)
        self._line_free = start + length * 10 / self.impairment.baud
        self.stats["air_us"] += round(length * 10_000_000 / self.impairment.baud)
        return self._line_free - now

    def _later(self, target: _End, frame: bytes, delay: float) -> None:
        loop = asyncio.get_running_loop()
        # frames on one wire keep their order, however the delay is drawn
        due = max(loop.time() + delay, self._next_due.get(target.name, 0.0))
        self._next_due[target.name] = due
        loop.call_at(due, self._write, target, frame)

    def _write(self, target: _End, frame: bytes) -> None:
        if target not in self._units and target is not self._gateway:
            return
        target.out += frame
        self._flush(target)

    def _flush(self, target: _End) -> None:
        loop = asyncio.get_running_loop()
        while target.out:
            try:
                n = os.write(target.fd, target.out)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("write to %s failed: %s", target.name, exc)
                target.out.clear()
                break
            del target.out[:n]
        if target.out and not target.writing:
            target.writing = True
            loop.add_writer(target.fd, self._writable, target)
        elif not target.out and target.writing:
            target.writing = False
            loop.remove_writer(target.fd)

    def _writable(self, target: _End) -> None:
        self._flush(target)
