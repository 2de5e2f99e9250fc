"""What the alarm receiving centre hears: journalled incidents and events as Contact ID.

:meth:`ArcFeed.on_enqueue` runs inside the transaction that journals an incident update
or an event and queues its MQTT message (``Store.on_enqueue``), and adds the matching
Contact ID message to each ARC's queue in that same transaction: nothing reaches the
journal without also reaching the ARC queue. What goes:

- a new incident: its alarm's code (120 panic, 121 duress, 122 silent, 100 medical,
  110 fire, 150 other), qualifier 1; an upgrade to duress: 121;
- every event that has a Contact ID code, with its qualifier (supervision troubles and
  restores, unit cancels 406, link troubles 350, forgeries 461, tests 602, guard duty's
  missed check-in 102 and its restore, and the ARC paths' own 351/352/354).

Group is the site's ``partition``, zone the unit's ``zone`` (a guard post's unit for
duty events, 000 for the gateway's own), account the site's ``account`` or the ARC's
default. Only ``alarm/``, ``event/`` and ``duty/`` messages count: the retained board
copies repeat them. The payloads parsed here are the gateway's own, built a moment earlier.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.arc.queue import ArcQueue
from gateway.core.config import Config
from gateway.core.errors import ConfigError
from gateway.journal.store import OutboxRow

log = logging.getLogger(__name__)

DURESS_CODE = 121


@dataclass(frozen=True, slots=True)
class Addressing:
    """Account, group and zone of every site, unit and post."""

    default_account: str
    accounts: Mapping[str, str]  # site -> account, for sites that have their own
    groups: Mapping[str, int]  # site -> partition
    zones: Mapping[str, int]  # unit -> zone
    post_units: Mapping[str, str]  # post -> its unit
    route_units: Mapping[str, str] = field(default_factory=dict)  # route -> first checkpoint

    @classmethod
    def from_config(cls, config: Config, default_account: str | None) -> Addressing:
        """Take them from boards.yaml; raise :class:`ConfigError` for what an ARC needs."""
        accounts = {s.id: s.account for s in config.sites.values() if s.account}
        for s in config.sites.values():
            if s.id not in accounts and default_account is None:
                raise ConfigError(
                    config.path,
                    f"site {s.id}",
                    "account",
                    "missing: an ARC needs an account for every site (or --arc ACCOUNT@...)",
                )
        zones: dict[str, int] = {}
        for u in config.units.values():
            if u.zone is None:
                raise ConfigError(
                    config.path, f"unit {u.id}", "zone", "missing: an ARC needs 001-999"
                )
            zones[u.id] = u.zone
        return cls(
            default_account=(default_account or "").upper(),
            accounts={k: v.upper() for k, v in accounts.items()},
            groups={s.id: s.partition for s in config.sites.values()},
            zones=zones,
            post_units={p.id: p.unit for p in config.posts.values()},
            route_units={r.id: r.checkpoints[0] for r in config.patrols.values()},
        )

    def account(self, site: str) -> str:
        """The account reporting for ``site``."""
        return self.accounts.get(site) or self.default_account


@dataclass(frozen=True, slots=True)
class Report:
    """One Contact ID report for the ARC."""

    account: str
    qualifier: int
    code: int
    group: int
    zone: int


class ArcFeed:
    """Adds a Contact ID message to each ARC's queue for every report-worthy row."""

    def __init__(
        self,
        queue: ArcQueue,
        arcs: Sequence[str],
        addressing: Addressing,
        *,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_queued`` wakes the transmitters (they run once the transaction commits)."""
        self.queue = queue
        self.arcs = tuple(arcs)
        self.addressing = addressing
        self.on_queued = on_queued
        self.queued = 0
        self.errors = 0

    def report_for(self, payload: Mapping[str, Any]) -> Report | None:
        """The Contact ID report for one outbox payload, or None if the ARC needs none."""
        site = str(payload.get("site") or "")
        if "update" in payload:  # an incident
            if payload["update"] == "new":
                code = int(payload["contact_id"])
            elif payload["update"] == "kind" and payload.get("kind") == "duress":
                code = DURESS_CODE
            else:
                return None
            qualifier = 1
            unit = payload.get("unit")
        elif "event" in payload and "kind" in payload:
            if payload.get("code") is None:
                return None
            code = int(payload["code"])
            qualifier = int(payload.get("qualifier") or 1)
            detail = payload.get("detail")
            # a patrol overdue is at the checkpoint last scanned; else the route's first
            last = detail.get("last_checkpoint") if isinstance(detail, dict) else None
            unit = (
                payload.get("unit")
                or self.addressing.post_units.get(str(payload.get("post") or ""))
                or (last if isinstance(last, str) and last in self.addressing.zones else None)
                or self.addressing.route_units.get(str(payload.get("route") or ""))
            )
        else:
            return None
        a = self.addressing
        return Report(
            account=a.account(site),
            qualifier=qualifier,
            code=code,
            group=a.groups.get(site, 1),
            zone=a.zones.get(str(unit), 0) if unit else 0,
        )

    def on_enqueue(self, row: OutboxRow, at: float) -> None:
        """Called by the store inside the transaction that queues ``row`` for MQTT."""
        parts = row.topic.split("/")
        # alarm/<unit>, event/<unit>, duty/<post>, patrol/<route>; never the retained
        # board copies (open/<incident>, unit/<id>/state, ...), which repeat them
        if row.retain or len(parts) < 2 or parts[-2] not in ("alarm", "event", "duty", "patrol"):
            return
        try:
            payload = json.loads(row.payload)
            report = self.report_for(payload) if isinstance(payload, dict) else None
        except (ValueError, TypeError, KeyError) as exc:
            # a bug of ours: log it, but never undo the journal entry it rides with
            self.errors += 1
            log.error("ARC feed: cannot read outbox message %d: %s", row.id, exc)
            return
        if report is None:
            return
        for arc in self.arcs:
            self.queue.add(
                arc=arc,
                at=at,
                account=report.account,
                qualifier=report.qualifier,
                code=report.code,
                grp=report.group,
                zone=report.zone,
                incident=row.incident,
                event=payload.get("event") if isinstance(payload.get("event"), int) else None,
            )
            self.queued += 1
        self.on_queued()
