"""Is the gateway's clock right? The watch that raises ``clock_unsynced``.

A Raspberry Pi has no real-time clock: until time sync succeeds after a boot, it stamps
wrong times on every alarm and event.

:class:`ClockWatch` is a :class:`gateway.pipeline.ports.Watcher` that raises ``clock_unsynced``
(Contact ID 626 "time/date inaccurate", qualifier 1) when

- the kernel says the clock is not synchronised (``adjtimex``: ``STA_UNSYNC``, what
  ``timedatectl``'s ``NTPSynchronized`` and systemd-timesyncd go by), or
- the clock reads earlier than the journal's latest record (it went back: a boot
  without time sync, or a step backwards while running) and the kernel does not say
  it is synchronised,

and its restore (qualifier 3) once neither holds. It only reports: alarms are still
journalled and relayed at once, stamped with the time the gateway has. The state is kept
in the journal's ``meta`` (key ``clock``) for ``campusguard status``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import struct
from collections.abc import Callable
from typing import Any

from gateway.core.config import Config, Unit
from gateway.core.contact_id import NEW, RESTORE, code_of
from gateway.journal.store import Store
from gateway.pipeline.ports import Outlet
from protocol.messages import Frame

log = logging.getLogger(__name__)

CHECK_EVERY_S = 60.0
"""How often (clock seconds) the kernel is asked."""
BEHIND_TOLERANCE_S = 1.0
"""How far before the journal's latest record the clock may read (rounding, not a fault)."""
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5

KernelSynced = Callable[[], bool | None]


def kernel_synced() -> bool | None:
    """The kernel's view (``adjtimex``): True synced, False not, None if it cannot tell."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        libc = ctypes.CDLL(path, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        rc = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if rc < 0:
        return None
    # struct timex: unsigned modes; long offset, freq, maxerror, esterror; int status
    size = ctypes.sizeof(ctypes.c_long)
    (status,) = struct.unpack_from("i", buf.raw, size * 5)
    return rc != _TIME_ERROR and not status & _STA_UNSYNC


class ClockWatch:
    """Watches the gateway's own clock; a :class:`gateway.pipeline.ports.Watcher`."""

    def __init__(
        self,
        config: Config,
        outlet: Outlet,
        store: Store,
        *,
        kernel: KernelSynced | None = kernel_synced,
    ) -> None:
        """Read the journal's latest record now, before anything new is written.

        ``kernel`` tells whether the system clock is synchronised (None: do not ask; a
        scaled or manual clock is not the system's).
        """
        self.config = config
        self.outlet = outlet
        self.store = store
        self.kernel = kernel
        self.high = store.last_record_at()  # no clock time may read earlier than this
        self.unsynced: dict[str, Any] | None = None
        self._next_check = -1e18
        self._behind = False
        saved = store.meta_get("clock")
        if saved:
            try:
                state = json.loads(saved)
            except ValueError:
                state = {}
            if isinstance(state, dict) and state.get("synced") is False:
                self.unsynced = state

    @property
    def synced(self) -> bool:
        """False while ``clock_unsynced`` is raised."""
        return self.unsynced is None

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """Frames say nothing about the clock."""

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links say nothing about the clock."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """The clock takes no commands."""

    def tick(self, now: float) -> None:
        """Check the clock: at once at start, every ``CHECK_EVERY_S``, and on a step back."""
        behind = self.high is not None and now < self.high - BEHIND_TOLERANCE_S
        if now < self._next_check and behind == self._behind:
            return
        self._next_check = now + CHECK_EVERY_S
        self._behind = behind
        kernel = self.kernel() if self.kernel is not None else None
        if kernel is True:
            # a synchronised clock is right: the journal's "latest" was stamped wrong
            behind = False
        reasons: list[str] = []
        if kernel is False:
            reasons.append("kernel: not synchronised (adjtimex STA_UNSYNC)")
        if self.high is not None and behind:
            reasons.append("the clock reads earlier than the journal's latest record")
        else:
            self.high = now if self.high is None else max(self.high, now)
        if reasons and self.unsynced is None:
            detail: dict[str, Any] = {"reasons": reasons, "kernel_synced": kernel}
            if self.high is not None and behind:
                detail["behind_s"] = round(self.high - now, 3)
                detail["journal_latest"] = self.high
            self._raise(detail, now)
        elif not reasons and self.unsynced is not None:
            self._restore(now, kernel)

    def _raise(self, detail: dict[str, Any], now: float) -> None:
        log.error(
            "gateway clock not synchronised (%s): alarms still go out, with this clock's time",
            "; ".join(detail["reasons"]),
        )
        self._event(NEW, now, detail)
        self.unsynced = {"synced": False, "since": now, **detail}
        self.store.meta_set("clock", json.dumps(self.unsynced))

    def _restore(self, now: float, kernel: bool | None) -> None:
        assert self.unsynced is not None
        log.warning("gateway clock synchronised again")
        self._event(RESTORE, now, {"since": self.unsynced.get("since"), "kernel_synced": kernel})
        self.unsynced = None
        self.store.meta_set("clock", json.dumps({"synced": True, "since": now}))

    def _event(self, qualifier: int, now: float, detail: dict[str, Any]) -> None:
        self.outlet.event(
            site=self.config.site,
            kind="clock_unsynced",
            at=now,
            code=code_of("clock_unsynced"),
            qualifier=qualifier,
            detail=detail,
        )
