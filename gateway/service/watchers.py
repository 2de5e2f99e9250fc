"""The watchers the gateway service runs beside its pipeline: supervision, duty, clock, tests."""

from __future__ import annotations

from gateway.core.clock import Clock, SystemClock
from gateway.core.config import Config
from gateway.journal.store import Store
from gateway.pipeline.ports import Outlet, Watcher
from gateway.pipeline.testmode import TestModeWatch
from gateway.watch.clockwatch import ClockWatch, kernel_synced
from gateway.watch.duty import DutyWatch
from gateway.watch.supervision import Supervisor


def build_watchers(config: Config, outlet: Outlet, store: Store, clock: Clock) -> list[Watcher]:
    """The logic that watches the frame stream (unit supervision, guard duty).

    Each watcher gets the outlet for events and signals, the store's connection for its
    own tables, and the clock. Build them outside a store transaction: they create tables.
    """
    supervisor = Supervisor(config, outlet, store.conn, clock)
    duty = DutyWatch(
        config, outlet, store.conn, clock, tz=config.timezone, installed=supervisor.is_installed
    )
    # the kernel knows about the system clock only: a scaled or manual one is not it
    kernel = kernel_synced if isinstance(clock, SystemClock) else None
    return [
        supervisor,
        duty,
        ClockWatch(config, outlet, store, kernel=kernel),
        TestModeWatch(config, outlet, store.conn),
    ]
