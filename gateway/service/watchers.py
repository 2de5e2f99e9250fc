"""The watchers the service runs beside its pipeline, and their guard.

The watchers: supervision, duty, patrols, clock, test mode. The guard
(:class:`GuardedWatcher`) makes one that keeps raising loud: counted, reported, and
failing the health check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.core.clock import Clock, SystemClock
from gateway.core.config import Config, Unit
from gateway.core.contact_id import NEW, RESTORE, code_of
from gateway.journal.store import Store
from gateway.pipeline.ports import Outlet, Watcher
from gateway.pipeline.testmode import TestModeWatch
from gateway.watch.clockwatch import ClockWatch, kernel_synced
from gateway.watch.duty import DutyWatch
from gateway.watch.patrol import PatrolWatch
from gateway.watch.supervision import Supervisor
from protocol.messages import Frame

log = logging.getLogger(__name__)


def build_watchers(config: Config, outlet: Outlet, store: Store, clock: Clock) -> list[Watcher]:
    """The logic that watches the frame stream (unit supervision, guard duty, patrols).

    Each watcher gets the outlet for events and signals, the store's connection for its
    own tables, and the clock. Build them outside a store transaction: they create tables.
    """
    supervisor = Supervisor(config, outlet, store.conn, clock)
    duty = DutyWatch(
        config, outlet, store.conn, clock, tz=config.timezone, installed=supervisor.is_installed
    )
    patrol = PatrolWatch(
        config, outlet, store.conn, clock, tz=config.timezone, installed=supervisor.is_installed
    )
    # the kernel knows about the system clock only: a scaled or manual one is not it
    kernel = kernel_synced if isinstance(clock, SystemClock) else None
    return [
        supervisor,
        duty,
        patrol,
        ClockWatch(config, outlet, store, kernel=kernel),
        TestModeWatch(config, outlet, store.conn),
    ]


WATCHER_FAILURE_LIMIT = 10
"""Consecutive failed calls of one kind (ticks: 2 s of them) before a watcher is failing."""
LOG_EVERY_S = 60.0
"""While a watcher keeps failing, one log line per this many seconds (not 5 a second)."""


class GuardedWatcher:
    """A watcher whose exceptions are counted, reported and fail the health check.

    Each call the pipeline makes (``on_frame``, ``on_link``, ``on_command``, ``tick``) is
    passed on; an exception is counted, logged with its traceback the first time and then
    once a minute, and never reaches the pipeline. After :data:`WATCHER_FAILURE_LIMIT`
    failures in a row of one kind of call the watcher is :attr:`failing`: a
    ``watcher_failed`` event (Contact ID 300, qualifier 1) goes to the journal and the
    police, and the service's health check fails until it recovers (after
    ``WATCHDOG_FAILURES`` checks the service exits and systemd restarts it). A watcher
    that works again gets the restore (qualifier 3).
    """

    def __init__(
        self,
        inner: Watcher,
        outlet: Outlet,
        site: str,
        *,
        limit: int = WATCHER_FAILURE_LIMIT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``inner`` is the watcher; events about it go through ``outlet`` for ``site``."""
        self.inner = inner
        self.name = type(inner).__name__
        self.outlet = outlet
        self.site = site
        self.limit = limit
        self.failures = 0
        """Failed calls since the service started."""
        self.last_error = ""
        self.reported = False
        self._in_a_row: dict[str, int] = {}
        self._monotonic = monotonic
        self._logged_at = -LOG_EVERY_S

    @property
    def failing(self) -> bool:
        """True while some kind of call has failed ``limit`` times in a row."""
        return any(n >= self.limit for n in self._in_a_row.values())

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """Pass a fresh authentic frame on."""
        self._call("frame", at, self.inner.on_frame, unit, frame, at)

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Pass a link change on."""
        self._call("link", at, self.inner.on_link, link, up, at)

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """Pass an inbound MQTT message on."""
        self._call("command", at, self.inner.on_command, topic, payload, at)

    def tick(self, now: float) -> None:
        """Pass the clock's tick on."""
        self._call("tick", now, self.inner.tick, now)

    def _call(self, what: str, at: float, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._failed(what, at, exc)
            return
        if self._in_a_row.get(what):
            self._in_a_row[what] = 0
            if self.reported and not self.failing:
                self.reported = False
                log.warning("watcher %s works again after %d failures", self.name, self.failures)
                self._event(at, RESTORE, what)

    def _failed(self, what: str, at: float, exc: Exception) -> None:
        self.failures += 1
        self._in_a_row[what] = self._in_a_row.get(what, 0) + 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = self._monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error(
                "watcher %s failed on %s (%d failures so far; logged once a minute)",
                self.name,
                what,
                self.failures,
                exc_info=exc,
            )
        if self.failing and not self.reported:
            self.reported = True
            self._event(at, NEW, what)

    def _event(self, at: float, qualifier: int, what: str) -> None:
        try:
            self.outlet.event(
                site=self.site,
                kind="watcher_failed",
                at=at,
                code=code_of("watcher_failed"),
                qualifier=qualifier,
                detail={
                    "watcher": self.name,
                    "call": what,
                    "failures": self.failures,
                    "error": self.last_error,
                },
            )
        except Exception:  # the journal itself failing: the health check says so
            log.exception("cannot journal watcher_failed for %s", self.name)
