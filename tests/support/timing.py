"""How long a test may wait on this machine: one factor, and the one polling ``until``.

A CI runner or a developer's machine shared with other work runs the gateway and the
MicroPython units slower than an idle one. Every *wait for something that must happen*
(a frame, an LED, a journal row, a process exit) is multiplied by :data:`TIME_SCALE`:
waiting longer costs nothing when the thing comes, and a busy machine no longer fails a
test whose behaviour is right. Windows in which *nothing may happen* are not scaled (a
longer window only makes a test slower) and say in their test why they are as long as
they are. Timings that the unit or the gateway are configured with are not scaled either,
except the virtual watchdog's (a starved process must not be reset by it mid-test).

``CAMPUSGUARD_TIME_SCALE=4 make test`` sets the factor; without it the factor is read off
the machine's load when the session starts: 1 + the 1-minute load average per core,
between 1.5 and 10 (1.5 on an idle machine; two busy processes beside the suite on two
cores give about 3); each wait (:func:`scaled`) takes the load's factor at its start if
that is larger.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

ENV = "CAMPUSGUARD_TIME_SCALE"
MIN_SCALE = 1.5
MAX_SCALE = 10.0


def _from_load() -> float:
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average (not Linux/BSD): assume a busy machine
        return MAX_SCALE
    per_core = load / (os.cpu_count() or 1)
    return min(MAX_SCALE, max(MIN_SCALE, 1.0 + per_core))


def _scale() -> tuple[float, str]:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return _from_load(), f"from the load ({ENV} unset)"
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"{ENV}={text!r}: not a number (e.g. {ENV}=3)") from None
    if not value >= 1.0:
        raise SystemExit(f"{ENV}={text!r}: must be 1 or more")
    return value, f"from {ENV}"


TIME_SCALE, TIME_SCALE_SOURCE = _scale()
"""The factor every wait for an expected event is multiplied by (>= 1)."""


def scaled(seconds: float) -> float:
    """``seconds`` of patience on an idle machine, on this one.

    Without ``CAMPUSGUARD_TIME_SCALE``, the factor is the larger of the session's and the
    load's now: work that starts beside the suite (CI machines are shared) lengthens the
    waits that begin after it, not only those of a session that started busy.
    """
    if TIME_SCALE_SOURCE.startswith("from the load"):
        return seconds * max(TIME_SCALE, _from_load())
    return seconds * TIME_SCALE


async def until(
    predicate: Callable[[], bool], timeout: float = 5.0, poll: float = 0.01, what: str = ""
) -> None:
    """For state with no event to wait on (a journal row, a counter): poll it until it
    holds; fail naming ``what`` after ``timeout`` idle-machine seconds (scaled)."""
    limit = scaled(timeout)
    try:
        async with asyncio.timeout(limit):
            while not predicate():
                await asyncio.sleep(poll)
    except TimeoutError:
        raise AssertionError(f"{what or 'condition'} not reached within {limit:.1f} s") from None
