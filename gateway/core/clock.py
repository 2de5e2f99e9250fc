"""Injectable clocks: every time-based rule (debounce, heartbeats, duty) reads one of these.

``now()`` is wall time in UTC seconds since the epoch (what reports and timestamps use);
``sleep()`` waits in the clock's own time, so a scaled clock runs hours in seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What time-based code needs from a clock."""

    def now(self) -> float:
        """Wall time, UTC seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Wall time from the system."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)


class ScaledClock:
    """Runs ``speed`` times faster than real time (for demos and HIL tests).

    It never tells a time after the real one: what it writes into a journal is history,
    so a report on that journal (durations, "observed until now") stays true. By default
    it starts ``(speed - 1) * horizon_s`` in the past, so it reaches the real time only
    after ``horizon_s`` real seconds; from then on it runs at the real pace.
    """

    def __init__(
        self, speed: float, start: float | None = None, *, horizon_s: float = 3600.0
    ) -> None:
        """``start`` is the clock's wall time now (default: see the class)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._t0 = time.monotonic()
        if start is None:
            start = time.time() - max(0.0, speed - 1.0) * horizon_s
        self._start = start

    def now(self) -> float:
        """Scaled wall time, never after the real time."""
        return min(self._start + (time.monotonic() - self._t0) * self.speed, time.time())

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds / speed`` real seconds."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """A clock that moves only when told (unit tests): ``advance`` wakes due sleepers."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        """``start`` defaults to 2026-01-01T00:00:00Z."""
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        """The set time."""
        return self._now

    def set(self, t: float) -> None:
        """Jump to ``t`` (never backwards) and wake sleepers that are due."""
        if t < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = t
        due = [(w, f) for w, f in self._sleepers if w <= t]
        self._sleepers = [(w, f) for w, f in self._sleepers if w > t]
        for _, f in due:
            if not f.done():
                f.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move forward ``seconds``."""
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced past now + ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut
