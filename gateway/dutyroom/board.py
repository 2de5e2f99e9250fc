"""The duty room's board: what the console knows, and how it is drawn on a terminal.

:class:`Board` folds MQTT messages in (alarm updates, the retained ``open/<incident>``,
``unit/<unit>/state`` and ``post/<post>/state`` topics, events, duty events, gateway
status) and :meth:`Board.render` draws it to fit a terminal: the header always stays at
the top; incidents that wait for the police come first, newest first; a closed incident
leaves the board a minute after it closed. No I/O here: the console owns the connection,
the keyboard and the screen, and passes the time in, so tests run it on plain values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from gateway.core.timefmt import parse_iso

CLOSED_KEEP_S = 60.0
"""A closed incident stays on the board this long (seconds of the console's clock)."""
RECENT_EVENTS = 6
DISPOSITION_WORDS = {"genuine": "genuine", "false": "false_alarm", "test": "test"}
_DISPOSITION_SHORT = {"genuine": "genuine", "false_alarm": "false", "test": "test"}


STALE_PERIODS = 3  # a gateway status older than this many of its periods is stale
DEFAULT_STATUS_PERIOD_S = 60.0


@dataclass
class IncidentRow:
    """One incident on the board."""

    number: int
    data: dict[str, Any]
    seen_at: float  # console time of its latest update
    closed_seen_at: float | None = None
    realert: bool = False  # upgraded to duress after the police acknowledged it

    @property
    def waiting(self) -> bool:
        """Needs the duty room: not acknowledged (or re-alerted), and not closed."""
        if self.data.get("state") == "closed":
            return False
        return self.realert or not self.data.get("police_ack_at")


@dataclass
class PostAlert:
    """A guard post whose check-in was missed, until someone answers."""

    label: str  # P1, P2, ... (what the operator types)
    site: str
    post: str
    place: str = ""
    since: str | float | None = None
    rung: int = 0
    of: int = 0
    step: str | None = None
    action: str | None = None
    minutes_overdue: float | None = None


@dataclass(frozen=True)
class Target:
    """What an operator's line names: an incident or a guard post, with its site."""

    kind: str  # "incident" | "post"
    id: str
    site: str


@dataclass(frozen=True)
class Taken:
    """What a message was, and whether it calls for the bell."""

    kind: str  # alarm, open, unit, post, event, duty, gateway, other
    alert: bool = False


@dataclass
class Board:
    """Incidents by id (numbered in arrival order), guard-post alerts, units, events."""

    incidents: dict[str, IncidentRow] = field(default_factory=dict)
    numbers: dict[int, str] = field(default_factory=dict)
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    post_alerts: dict[str, PostAlert] = field(default_factory=dict)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    gateways: dict[str, str] = field(default_factory=dict)
    # gateway id -> (signed time of its latest status, its status period)
    status_at: dict[str, tuple[float, float]] = field(default_factory=dict)
    dropped: int = 0  # messages that did not verify (or were too large): never shown
    _post_labels: dict[str, str] = field(default_factory=dict)

    # -- folding messages in ---------------------------------------------------------------

    def reconnected(self) -> None:
        """The connection is new: forget what the retained topics will tell again.

        Incidents, units and posts come back at once from the retained topics; an
        incident that closed meanwhile does not, and must not linger. Numbers stay.
        """
        self.incidents.clear()
        self.units.clear()
        self.posts.clear()
        self.post_alerts.clear()

    def take(self, topic: str, data: Any, now: float | None = None) -> Taken:
        """Fold a message in; say what it was and whether to ring the bell.

        Whatever is on the broker is untrusted: a payload of the wrong shape is
        ``other`` and changes nothing, it never raises.
        """
        now = time.time() if now is None else now
        try:
            return self._take(topic, data, now)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return Taken("other")

    def _take(self, topic: str, data: Any, now: float) -> Taken:
        parts = topic.split("/")
        if len(parts) >= 3 and parts[-3] == "gateway" and parts[-1] == "status":
            if isinstance(data, dict):
                gid, at = parts[-2], _ts(data.get("at"), 0.0)
                if at < self.status_at.get(gid, (0.0, 0.0))[0]:
                    return Taken("other")  # older than one already seen: a replay
                period = data.get("period_s")
                if not isinstance(period, int | float) or isinstance(period, bool) or period <= 0:
                    period = DEFAULT_STATUS_PERIOD_S
                self.status_at[gid] = (at, float(period))
                self.gateways[gid] = str(data.get("state"))
                return Taken("gateway")
            return Taken("other")
        if len(parts) >= 4 and parts[-1] == "state" and parts[-3] in ("unit", "post"):
            return self._take_state(parts[-3], parts[-2], data)
        kind = parts[-2] if len(parts) >= 2 else "other"
        if kind == "open":
            if isinstance(data, dict) and "incident" in data:
                return Taken("open", self._take_incident(data, now))
            if not data:  # the retained copy was cleared: the incident closed
                row = self.incidents.get(parts[-1])
                if row is not None and row.closed_seen_at is None:
                    row.closed_seen_at = now
                    row.data = {**row.data, "state": "closed"}
            return Taken("open")
        if kind == "alarm" and isinstance(data, dict) and "incident" in data:
            return Taken("alarm", self._take_incident(data, now))
        if kind in ("event", "duty") and isinstance(data, dict):
            self.events.append(data)
            del self.events[:-RECENT_EVENTS]
            alert = self._take_duty(data) if kind == "duty" else False
            return Taken(kind, alert)
        return Taken("other")

    def _take_incident(self, data: dict[str, Any], now: float) -> bool:
        iid = str(data["incident"])
        row = self.incidents.get(iid)
        if row is None:
            number = next((n for n, i in self.numbers.items() if i == iid), 0)
            if not number:
                number = len(self.numbers) + 1
                self.numbers[number] = iid
            row = self.incidents[iid] = IncidentRow(number, data, now)
            if data.get("state") == "closed":
                row.closed_seen_at = now
            return row.waiting
        # updates can arrive twice (at least once), and the retained copy beside them
        if _int(data.get("update_no")) < _int(row.data.get("update_no")):
            return False
        old_kind = row.data.get("kind")
        row.data, row.seen_at = data, now
        if data.get("state") == "closed":
            row.closed_seen_at = row.closed_seen_at or now
            row.realert = False
            return False
        if data.get("kind") == "duress" and old_kind != "duress":
            # the police acknowledged a panic that is now known to be under duress
            row.realert = bool(data.get("police_ack_at"))
            return True
        return False

    def _take_state(self, what: str, ident: str, data: Any) -> Taken:
        book = self.units if what == "unit" else self.posts
        if not isinstance(data, dict):
            book.pop(ident, None)
            return Taken(what)
        book[ident] = data
        if what == "post":
            site = str(data.get("site", ""))
            if data.get("escalating"):
                alert = self._alert_of(site, ident)
                alert.place = str(data.get("place") or alert.place)
                alert.since = data.get("missed_deadline") or alert.since
                alert.rung = _int(data.get("rung"))
                alert.of = _int(data.get("of"))
                alert.step = data.get("step") or alert.step
            else:
                self.post_alerts.pop(ident, None)
        return Taken(what)

    def _take_duty(self, e: dict[str, Any]) -> bool:
        post = e.get("post")
        if not post:
            return False
        detail = e.get("detail")
        if not isinstance(detail, dict):
            detail = {}
        kind = e.get("kind")
        site = str(e.get("site", ""))
        if kind == "missed_checkin":
            alert = self._alert_of(site, str(post))
            alert.place = str(detail.get("place") or alert.place)
            alert.since = e.get("at")
            alert.minutes_overdue = detail.get("minutes_overdue")
            return True
        if kind == "escalation":
            alert = self._alert_of(site, str(post))
            alert.since = alert.since or detail.get("missed_deadline") or e.get("at")
            alert.place = str(detail.get("place") or alert.place)
            alert.rung = _int(detail.get("rung"))
            alert.of = _int(detail.get("of"))
            alert.step = detail.get("step")
            alert.action = detail.get("action") or alert.action
            alert.minutes_overdue = detail.get("minutes_overdue")
            return detail.get("step") == "police"
        if kind == "acknowledged":
            self.post_alerts.pop(str(post), None)
        return False

    def _alert_of(self, site: str, post: str) -> PostAlert:
        alert = self.post_alerts.get(post)
        if alert is None:
            label = self._post_labels.setdefault(post, f"P{len(self._post_labels) + 1}")
            alert = self.post_alerts[post] = PostAlert(label, site, post)
        return alert

    # -- the operator ----------------------------------------------------------------------

    def resolve(self, text: str) -> Target | None:
        """An incident from its number or id, or a guard post from its label or id."""
        word = text.strip()
        iid = self.numbers.get(int(word)) if word.isdigit() else word
        if iid is not None and iid in self.incidents:
            return Target("incident", iid, str(self.incidents[iid].data.get("site", "")))
        for alert in self.post_alerts.values():
            if word.upper() == alert.label or word == alert.post:
                return Target("post", alert.post, alert.site)
        if word in self.posts:
            return Target("post", word, str(self.posts[word].get("site", "")))
        return None

    def acked(self, iid: str) -> None:
        """The operator acknowledged ``iid`` from here: a re-alert is answered."""
        row = self.incidents.get(iid)
        if row is not None:
            row.realert = False

    def prune(self, now: float) -> None:
        """Drop incidents that closed more than :data:`CLOSED_KEEP_S` ago."""
        gone = [
            iid
            for iid, row in self.incidents.items()
            if row.closed_seen_at is not None and now - row.closed_seen_at > CLOSED_KEEP_S
        ]
        for iid in gone:
            del self.incidents[iid]

    def ordered(self) -> list[IncidentRow]:
        """Waiting incidents first, then the rest; newest first within each."""
        return sorted(
            self.incidents.values(),
            key=lambda r: (not r.waiting, -_ts(r.data.get("received_at"), r.seen_at)),
        )

    def gateway_state(self, gid: str, now: float) -> str:
        """``online``/``offline`` as signed, or ``stale`` once its status stopped coming.

        The gateway signs its status again every period: one older than
        ``STALE_PERIODS`` periods means the gateway (or its link) is gone, whatever the
        broker retained or someone replays.
        """
        state = self.gateways.get(gid, "?")
        at, period = self.status_at.get(gid, (0.0, DEFAULT_STATUS_PERIOD_S))
        if state == "online" and now - at > STALE_PERIODS * period:
            return f"stale (last status {_age(now - at)} ago)"
        return state

    # -- drawing ---------------------------------------------------------------------------

    def render(
        self,
        now: float | None = None,
        *,
        tz: tzinfo | None = None,
        width: int = 100,
        height: int = 40,
        note: str = "",
    ) -> str:
        """The board as text, at most ``height`` lines of at most ``width`` characters."""
        now = time.time() if now is None else now
        self.prune(now)
        clock = datetime.fromtimestamp(now, tz).astimezone(tz)
        zone = clock.tzname() or ""
        gws = ", ".join(f"{g} {self.gateway_state(g, now)}" for g in sorted(self.gateways)) or "-"
        if self.dropped:
            gws += f"  dropped (not signed): {self.dropped}"
        waiting = sum(1 for r in self.incidents.values() if r.waiting)
        head = [
            f"CampusGuard duty room  {clock:%Y-%m-%d %H:%M:%S} {zone}  gateways: {gws}",
            f"{waiting} waiting for acknowledgement, {len(self.incidents)} on the board",
            f"{'#':>3}  {'state':<11} {'kind':<7} {'presses':>7} {'age':>7} "
            f"{'disposition':<11} place (unit)",
        ]
        tail = [
            "ack: <#> [false|test] Enter; a missed check-in: <P#> Enter"
            + (f"   {note}" if note else "")
        ]
        posts = self._post_lines(now, tz)
        units = self._unit_lines(tz)
        events = self._event_lines(tz)
        rows = [self._incident_line(r, now) for r in self.ordered()]
        budget = max(1, height - len(head) - len(tail))
        # incidents come first, but the missed check-ins and the units line always show
        reserve = min(len(posts), budget // 2) + min(len(units), 1)
        room = max(min(3, budget), budget - reserve)
        if len(rows) > room:
            rows = [*rows[: room - 1], f"  ... {len(rows) - room + 1} more incidents below"]
        body = rows or ["  (no incidents)"]
        left = budget - len(body)
        for section in (posts, units, events):
            take = section[: max(0, left)]
            body += take
            left -= len(take)
        lines = head + body + tail
        return "\n".join(line[:width] for line in lines[:height])

    def _incident_line(self, r: IncidentRow, now: float) -> str:
        d = r.data
        state = str(d.get("state", "?"))
        if r.realert:
            state = "DURESS!"
        elif r.waiting:
            state = state.upper()
        first = _ts(d.get("first_press_at") or d.get("received_at"), r.seen_at)
        disposition = _DISPOSITION_SHORT.get(str(d.get("disposition")), "")
        return (
            f"{r.number:>3}  {state:<11} {d.get('kind', '?')!s:<7} {_int(d.get('presses')):>7} "
            f"{_age(now - first):>7} {disposition:<11} {d.get('place')!s} ({d.get('unit')!s})"
        )

    def _post_lines(self, now: float, tz: tzinfo | None) -> list[str]:
        if not self.post_alerts:
            return []
        out = ["missed check-ins:"]
        for a in sorted(self.post_alerts.values(), key=lambda a: a.label):
            since = _ts(a.since, now) if a.since else now
            rung = f"rung {a.rung}/{a.of} {a.step}" if a.rung else "rung -"
            text = a.action or f"Guard at {a.place or a.post} has not checked in."
            out.append(
                f"  {a.label:<4} {a.post:<14} MISSED {_age(now - since):>7}  {rung:<24} {text}"
            )
        return out

    def _unit_lines(self, tz: tzinfo | None) -> list[str]:
        if not self.units:
            return []
        counts: dict[str, int] = {}
        problems: list[str] = []
        for uid, u in sorted(self.units.items()):
            state = str(u.get("state"))
            counts[state] = counts.get(state, 0) + 1
            what = []
            if state == "offline":
                what.append(f"OFFLINE since {_clock(u.get('since'), tz)}")
            if u.get("tamper"):
                what.append("TAMPER: case open")
            if u.get("mains_lost"):
                what.append("mains lost")
            if u.get("low_battery"):
                what.append(f"low battery ({u.get('battery_mv')} mV)")
            if what:
                problems.append(f"  {uid:<14} {'; '.join(what)}  {u.get('place', '')}")
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
        return [f"units: {summary}", *problems]

    def _event_lines(self, tz: tzinfo | None) -> list[str]:
        if not self.events:
            return []
        out = ["recent events:"]
        for e in reversed(self.events):
            who = e.get("unit") or e.get("post") or ""
            out.append(f"  {_clock(e.get('at'), tz)}  {event_text(e):<28} {who}")
        return out


def paint(text: str, rows: int, *, full: bool, bell: bool = False) -> str:
    """Terminal output that shows ``text`` on the rows above the prompt (the last row).

    A full paint clears the screen and ends after a fresh ``> `` prompt. An update
    rewrites only the rows above the prompt and puts the cursor back where it was, so
    what the operator is typing there stays on the screen while the clock moves.
    """
    rows = max(2, rows)
    lines = text.split("\n")[: rows - 1]
    lines += [""] * (rows - 1 - len(lines))
    body = "".join(f"\x1b[{i};1H{line}\x1b[K" for i, line in enumerate(lines, 1))
    ring = "\a" if bell else ""
    if full:
        return f"{ring}\x1b[H\x1b[2J{body}\x1b[{rows};1H> "
    return f"{ring}\x1b7{body}\x1b8"


def event_text(e: dict[str, Any]) -> str:
    """An event in words: a tamper opening reads apart from its restore."""
    kind = str(e.get("kind", "?"))
    detail = e.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    q = e.get("qualifier")
    if kind == "tamper":
        return "TAMPER: case opened" if q != 3 else "tamper restored: case closed"
    if kind == "escalation":
        return f"escalation {detail.get('rung', '?')}/{detail.get('of', '?')} {detail.get('step')}"
    if kind == "checkin" and detail.get("duress"):
        return "checkin (DURESS)"
    if kind == "arc_path":  # the alarm receiving centre no longer hears this gateway
        where = detail.get("receiver", "?")
        return f"receiving centre {where} back" if q == 3 else f"RECEIVING CENTRE {where} LOST"
    if q == 3:
        return f"{kind} restored"
    return kind


def _int(value: Any) -> int:
    """A number from the broker, or 0."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _ts(text: Any, default: float) -> float:
    """An ISO 8601 time (or seconds since the epoch, as duty details carry) as seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    parsed = parse_iso(text)
    return default if parsed is None else parsed


def _clock(text: Any, tz: tzinfo | None) -> str:
    if not text:
        return "-"
    t = _ts(text, 0.0)
    if not t:
        return str(text)
    try:
        return f"{datetime.fromtimestamp(t, tz).astimezone(tz):%H:%M:%S}"
    except (OverflowError, OSError, ValueError):
        return "?"


def _age(seconds: float) -> str:
    if not 0 <= seconds < 1e9:  # not a number, or a time from another century
        return "?" if seconds == seconds and seconds > 0 else "0s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
