"""What the supervision and duty logic may ask of the pipeline, as narrow interfaces.

The pipeline implements :class:`Outlet`; the supervisor and duty watch receive it in their
constructor and never reach around it to the relay or the links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.config import Unit
from protocol.messages import Frame, SignalPattern


@dataclass(frozen=True, slots=True)
class JournalledEvent:
    """An event as the pipeline journalled it, for hooks in the same transaction."""

    event: str  # '<gateway id>-<journal id>'
    site: str
    kind: str
    at: float
    unit: str | None
    post: str | None
    qualifier: int | None
    detail: Mapping[str, Any]
    route: str | None = None  # a patrol event's route


class Outlet(Protocol):
    """Durable output: events to the journal and the police, signals to units."""

    def event(
        self,
        *,
        site: str,
        kind: str,
        at: float,
        unit: str | None = None,
        post: str | None = None,
        code: int | None = None,
        qualifier: int | None = None,
        detail: Mapping[str, Any] | None = None,
        topic: str = "event",
        route: str | None = None,
    ) -> None:
        """Journal an event (table ``events``) and queue it for the police.

        ``topic`` is ``event`` (published on ``<prefix>/<site>/event/<unit>``), ``duty``
        (published on ``<prefix>/<site>/duty/<post>``) or ``patrol`` (published on
        ``<prefix>/<site>/patrol/<route>``). Committed before this returns.
        """
        ...

    def signal(self, unit: str, pattern: SignalPattern, duration_s: int) -> None:
        """Send a SIGNAL frame to ``unit`` (best effort: a unit's link may be down)."""
        ...

    def retain(self, *, site: str, topic: str, payload: Mapping[str, Any], at: float) -> None:
        """Queue a retained state message on ``<prefix>/<site>/<topic>`` for the police.

        ``topic`` is ``unit/<unit>/state``, ``post/<post>/state`` or
        ``patrol/<route>/state``: the latest state of a unit, a post or a patrol route,
        which a duty-room client receives at once when it (re)connects. Committed with the
        caller's transaction (or at once), in order with the events.
        """
        ...


class Watcher(Protocol):
    """Logic that watches the stream of frames (unit supervision, guard duty).

    The pipeline calls ``on_frame`` for every fresh, authentic uplink frame after it is
    journalled; ``on_link`` when a serial link goes down or comes back; ``on_command`` for
    every verified MQTT ack on ``<prefix>/<site>/duty/+/ack`` and
    ``<prefix>/<site>/patrol/+/ack``; and ``tick`` at least
    five times a second (real time) with the clock's time, so deadlines are met within
    a second even on a scaled clock.
    """

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        """A fresh authentic frame from ``unit`` arrived at ``at``."""
        ...

    def on_link(self, link: str, up: bool, at: float) -> None:
        """Serial link ``link`` went down (``up=False``) or came back."""
        ...

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        """An inbound MQTT message for this watcher arrived."""
        ...

    def tick(self, now: float) -> None:
        """Check deadlines against the clock's ``now``."""
        ...
