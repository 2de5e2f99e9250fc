"""The gateway's own life in its journal: starts, stops and broker outages.

Nothing else records when the gateway itself was away, so without this its downtime
would be invisible in the monthly report. :class:`Lifecycle` is a
:class:`gateway.pipeline.ports.Watcher` (events on the ``event`` topic, unit = the gateway id):

- ``gateway_start`` when the service starts, with ``down_s`` and ``down_since``: the time
  since the previous run ended. A run that ended with ``gateway_stop`` ended then; one
  that did not (a crash, a power cut, a watchdog kill: ``clean: false``) ended at its last
  sign of life in the journal (its last event, frame, queued message or status snapshot).
- ``gateway_stop`` when the service stops cleanly (SIGTERM, SIGINT), with the run's length.
- ``broker_lost`` / ``broker_back`` when the MQTT connection goes and comes back (``outage_s``
  on the way back); also when the broker could not be reached within
  ``BROKER_GRACE_S`` of the start. These are journalled at once and reach the police
  when the broker does, in order (the outbox).

The report (:mod:`gateway.dutyroom.report`) adds the downtimes up per month and lists every gateway
absence longer than ``MAJOR_DOWN_S`` among the major situations.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from gateway.core.clock import Clock
from gateway.core.config import Config, Unit
from gateway.pipeline.ports import Outlet
from protocol.messages import Frame

log = logging.getLogger(__name__)

BROKER_GRACE_S = 10.0
"""Not connected this long after the start: the broker outage began at the start."""
MAJOR_DOWN_S = 600.0
"""A gateway away longer than this (10 min) is a major situation in the report."""


def last_sign_of_life(conn: sqlite3.Connection) -> float | None:
    """The latest time the journal shows the gateway at work (before this run)."""
    times: list[float] = []
    for sql in (
        "SELECT max(at) FROM events",
        "SELECT max(at) FROM frames",
        "SELECT max(created_at) FROM outbox",
    ):
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.Error:
            continue  # a table this journal does not have
        if row and row[0] is not None:
            times.append(float(row[0]))
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        if row:
            written = json.loads(row[0]).get("written_at")
            if isinstance(written, int | float):
                times.append(float(written))
    except (sqlite3.Error, ValueError, AttributeError):
        pass
    return max(times, default=None)


class Lifecycle:
    """Journals the gateway's start, stop and broker outages; a Watcher."""

    def __init__(
        self,
        config: Config,
        outlet: Outlet,
        conn: sqlite3.Connection,
        clock: Clock,
        *,
        connected: Callable[[], bool],
    ) -> None:
        """``connected`` tells whether the MQTT connection is up (the relay's)."""
        self.config = config
        self.outlet = outlet
        self.conn = conn
        self.clock = clock
        self.connected = connected
        self.started_at: float | None = None
        self._up = False
        self._lost_at: float | None = None

    def _event(self, kind: str, at: float, detail: dict[str, Any]) -> None:
        log.info("gateway: %s at %.3f", kind, at)
        self.outlet.event(
            site=self.config.site,
            kind=kind,
            at=at,
            unit=self.config.gateway_id,
            detail={k: v for k, v in detail.items() if v is not None},
        )

    def start(self) -> None:
        """Journal this run's start (call once, before anything else is journalled)."""
        at = self.clock.now()
        self.started_at = at
        last = self.conn.execute(
            "SELECT kind, at, detail FROM events WHERE kind IN ('gateway_start', 'gateway_stop')"
            " AND unit = ? ORDER BY at DESC, id DESC LIMIT 1",
            (self.config.gateway_id,),
        ).fetchone()
        clean: bool | None = None
        since: float | None = None
        if last is not None and last[0] == "gateway_stop":
            clean, since = True, float(last[1])
        elif last is not None:  # started, never stopped: it ended at its last sign of life
            clean, since = False, last_sign_of_life(self.conn)
        else:
            since = last_sign_of_life(self.conn)  # a journal from before this record
        down = at - since if since is not None and since <= at else None
        self._event(
            "gateway_start",
            at,
            {
                "down_since": since,
                "down_s": None if down is None else round(down, 3),
                "clean": clean,
            },
        )

    def stop(self) -> None:
        """Journal a clean stop."""
        at = self.clock.now()
        if self._lost_at is not None:
            self._event(
                "broker_back", at, {"outage_s": round(at - self._lost_at, 3), "at_stop": True}
            )
            self._lost_at = None
        run = at - self.started_at if self.started_at is not None else None
        self._event("gateway_stop", at, {"run_s": None if run is None else round(run, 3)})

    # -- Watcher -------------------------------------------------------------------------

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """Frames do not concern the gateway's own life."""

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Links are journalled by the pipeline."""

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """No commands."""

    def tick(self, now: float) -> None:
        """Follow the broker connection."""
        up = self.connected()
        if up and not self._up:
            self._up = True
            if self._lost_at is not None:
                self._event("broker_back", now, {"outage_s": round(now - self._lost_at, 3)})
                self._lost_at = None
        elif not up and self._up:
            self._up = False
            self._lost_at = now
            self._event("broker_lost", now, {})
        elif (
            not up
            and self._lost_at is None
            and self.started_at is not None
            and now - self.started_at >= BROKER_GRACE_S
        ):
            self._lost_at = self.started_at  # never reached since the start
            self._event("broker_lost", self.started_at, {"since_start": True})
