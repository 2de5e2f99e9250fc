"""Who is texted, and for what: each site's ladder of people, and the events that need one.

A site's ladder is its ``security_lead`` then its ``deputies`` (boards.yaml), in order:
the sender tries the next when one cannot be reached. :meth:`SitePager.on_event` runs in
the transaction that journals an event (``Pipeline.event_hooks``), so the event and the
SMS it calls for are committed together:

- ``escalation`` on a guard post's ``security_lead`` rung; ``patrol_escalation`` on a
  patrol route's ``remind_leader`` rung (its leader first, then the site's ladder) and
  ``security_lead`` rung (the site's ladder);
- ``tamper`` and ``low_battery`` as they begin, ``not_installed``;
- ``offline``: queued for ``offline_after_h`` later and withdrawn if the unit is heard
  again before then (``online``), so a unit offline for hours reaches a person and a
  short outage does not.

Texts are Chinese first (UCS2 on the air), with the ids in Latin letters for the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway.core.config import Config, SmsSettings
from gateway.core.contact_id import NEW
from gateway.notify.pdu import normalise_number
from gateway.notify.queue import Person, SmsQueue
from gateway.pipeline.ports import JournalledEvent

log = logging.getLogger(__name__)

TAG = "[CampusGuard]"


class SitePager:
    """Queues SMS for the people of a site's ladder."""

    def __init__(
        self,
        config: Config,
        queue: SmsQueue,
        settings: SmsSettings,
        *,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """``wake`` tells the sender that something was queued."""
        self._config = config
        self._queue = queue
        self._settings = settings
        self._wake = wake
        self.queued = 0

    def people(self, site: str) -> list[Person]:
        """The site's ladder: its security lead, then its deputies (bad numbers skipped)."""
        s = self._config.sites.get(site)
        if s is None:
            return []
        out: list[Person] = []
        for entry in (s.security_lead, *s.deputies):
            name, phone = entry.get("name", "?"), entry.get("phone", "")
            try:
                number = normalise_number(phone)
            except ValueError:
                if phone:
                    log.error("site %s: %s's phone %r cannot take an SMS", site, name, phone)
                continue
            if all(p.phone != number for p in out):
                out.append(Person(name, number))
        return out

    def page(
        self,
        *,
        site: str,
        text: str,
        reason: str,
        ref: str | None,
        at: float,
        due_at: float | None = None,
        cancel_key: str | None = None,
        people: Sequence[Person] | None = None,
    ) -> int | None:
        """Queue ``text`` for the site's ladder (in the caller's transaction, if any).

        The small interface for other ladders (patrols): ``people`` replaces the site's
        ladder (e.g. a patrol leader, then :meth:`people`); ``due_at`` sends it later and
        ``cancel_key`` lets :meth:`withdraw` take it back before then. Returns the SMS id,
        or None when there is nobody with a phone (logged).
        """
        people = list(people) if people is not None else self.people(site)
        if not people:
            log.error("site %s: nobody with a phone to text about %s (%s)", site, reason, ref)
            return None
        sms_id = self._queue.add(
            site=site, people=people, text=f"{TAG} {text}", reason=reason, ref=ref, at=at,
            due_at=due_at, cancel_key=cancel_key,
        )  # fmt: skip
        self.queued += 1
        self._wake()
        return sms_id

    def withdraw(self, cancel_key: str, at: float) -> int:
        """Take back messages queued with ``cancel_key`` that have not gone yet."""
        return self._queue.cancel(cancel_key, at)

    def _patrol(self, ev: JournalledEvent, where: str) -> None:
        # a patrol ladder's rung: the leader first on remind_leader, the site's ladder on
        # security_lead (the police rung is the duty room's)
        d = ev.detail
        step = d.get("step")
        if step not in ("remind_leader", "security_lead"):
            return
        people = self.people(ev.site)
        leader = d.get("leader") if step == "remind_leader" else None
        if isinstance(leader, dict):
            try:
                first = Person(str(leader.get("name", "?")), normalise_number(str(leader["phone"])))
                people = [first, *(p for p in people if p.phone != first.phone)]
            except (KeyError, ValueError):
                log.error("patrol %s: the leader's phone %r cannot take an SMS", ev.route, leader)
        what = "未到下一个检查点" if d.get("reason") == "overdue" else "未按时开始巡逻"
        self.page(
            site=ev.site, reason=f"patrol_{step}", ref=ev.event, at=ev.at, people=people,
            text=f"{where}: 巡逻路线 {ev.route} {what}, 请查看. "
            f"Patrol {ev.route}: {d.get('reason', '?')}.",
        )  # fmt: skip

    def on_event(self, ev: JournalledEvent) -> None:
        """Queue the SMS an event calls for, if any (see the module's list)."""
        faults = self._settings.faults
        d = ev.detail
        place = str(d.get("place") or ev.unit or ev.post or "")
        site = self._config.sites.get(ev.site)
        where = site.name if site is not None else ev.site
        if ev.kind == "escalation" and d.get("step") == "security_lead" and ev.kind in faults:
            minutes = d.get("minutes_overdue", "?")
            self.page(
                site=ev.site, reason="escalation", ref=ev.event, at=ev.at,
                text=f"{where}: {place} 岗哨已超时 {minutes} 分钟未签到, 请立即查看. "
                f"Post {ev.post} missed its check-in.",
            )  # fmt: skip
        elif ev.kind == "patrol_escalation" and "patrol" in faults:
            self._patrol(ev, where)
        elif ev.kind == "tamper" and ev.qualifier == NEW and ev.kind in faults:
            self.page(
                site=ev.site, reason="tamper", ref=ev.event, at=ev.at,
                text=f"{where}: {place} 报警器外壳被打开 (防拆), 请查看. Unit {ev.unit} tamper.",
            )  # fmt: skip
        elif ev.kind == "low_battery" and ev.qualifier == NEW and ev.kind in faults:
            self.page(
                site=ev.site, reason="low_battery", ref=ev.event, at=ev.at,
                text=f"{where}: {place} 报警器电池电量低, 请更换. Unit {ev.unit} low battery.",
            )  # fmt: skip
        elif ev.kind == "not_installed" and ev.kind in faults:
            self.page(
                site=ev.site, reason="not_installed", ref=ev.event, at=ev.at,
                text=f"{where}: {place} 报警器已登记但从未上线, 请安装. "
                f"Unit {ev.unit} not installed.",
            )  # fmt: skip
        elif ev.kind == "offline" and ev.unit is not None and ev.kind in faults:
            hours = self._settings.offline_after_h
            self.page(
                site=ev.site, reason="offline", ref=ev.event, at=ev.at,
                due_at=ev.at + hours * 3600.0, cancel_key=f"offline:{ev.unit}",
                text=f"{where}: {place} 报警器已离线超过 {hours} 小时, 请查看. "
                f"Unit {ev.unit} offline {hours} h.",
            )  # fmt: skip
        elif ev.kind == "online" and ev.unit is not None:
            self.withdraw(f"offline:{ev.unit}", ev.at)
