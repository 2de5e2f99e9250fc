"""Alarms -> incidents: open, fold further presses, upgrade to duress, cancel, police ack.

Every method runs inside the caller's journal transaction and queues each publication in
the outbox in that same transaction, so an incident and what the police are told about it
are committed together or not at all. Rules (gateway/README.md has the long form):

- An ALARM opens an incident ``<gateway>-<unit>-<epoch>-<seq>`` unless the unit has one
  that is open (or police-acknowledged) and had an ALARM within the unit's
  ``incident_window_s``: then the press folds into it (``presses`` grows). A later ALARM
  of the series it holds (same epoch and ``press_ms``) folds in however late it comes.
- A duress ALARM or duress CHECKIN upgrades a folded-into panic/silent/other incident to
  ``duress``; a duress CHECKIN with nothing open opens a silent duress incident.
- Press updates are coalesced: at most one ``presses`` publication per incident every
  ``PRESS_UPDATE_S``; the rest wait for :meth:`IncidentBook.tick`.
- A chattering button (``CHATTER_PRESSES`` presses within ``CHATTER_WINDOW_S``) is
  reported once per incident as a ``button_chatter`` event (Contact ID 380).

The book keeps the incidents it works on in memory (every open or police-acknowledged
one, loaded at start, and the most recently touched others), so the alarm path writes
rows but never reads them back: opening an incident is two INSERTs plus its outbox row,
folding a press two UPDATEs. The journal stays the truth: after a failed commit the
pipeline calls :meth:`IncidentBook.reload`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.config import Config, Unit
from gateway.core.contact_id import code_of
from gateway.core.timefmt import iso
from gateway.journal.store import Store
from gateway.pipeline import testmode
from protocol import AckState, Alarm, AlarmKind, Cancel, Frame

log = logging.getLogger(__name__)

PRESS_UPDATE_S = 1.0
CHATTER_PRESSES = 10
CHATTER_WINDOW_S = 10.0
CID_CHATTER = code_of("button_chatter")
CID_CANCEL = code_of("cancel")
UPGRADABLE = ("panic", "silent", "other")
OPEN_STATES = ("open", "police_ack")
BOARD_STATES = ("open", "police_ack", "cancelled")
"""States kept on the duty room's board (retained on ``open/<incident>``) until closed."""
CACHE_CLOSED = 256  # closed/cancelled incidents kept in memory (for late acks, cancels)
_U32 = 1 << 32
PRESS_AHEAD_MS = 2000.0
"""How far a press may lie ahead of the boot estimate's uptime (its rounding and drift)."""

EventFn = Callable[..., None]


@dataclass(frozen=True, slots=True)
class AckTarget:
    """Where a police acknowledgement goes back to: a unit's ALARM counter."""

    addr: int
    epoch: int
    seq: int


_INC_COLS = (
    "id",
    "site",
    "unit",
    "place",
    "kind",
    "first_press_at",
    "received_at",
    "presses",
    "state",
    "cancelled_at",
    "police_ack_at",
    "police_ack_by",
    "disposition",
    "last_epoch",
    "last_seq",
    "closed_at",
    "test",
)
_TRACK_COLS = (
    "addr",
    "first_press_source",
    "series_press_ms",
    "series_presses",
    "base_presses",
    "last_alarm_at",
    "alarm_epoch",
    "alarm_seq",
    "chatter",
    "updates",
)
_SELECT = (
    "SELECT "
    + ", ".join(f"i.{c}" for c in _INC_COLS)
    + ", "
    + ", ".join(f"t.{c}" for c in _TRACK_COLS)
    + " FROM incidents i JOIN incident_track t ON t.id = i.id"
)
_INSERT_INC = (
    f"INSERT INTO incidents({', '.join(_INC_COLS)}) VALUES ({', '.join('?' * len(_INC_COLS))})"
)
_INSERT_TRACK = (
    f"INSERT INTO incident_track(id, {', '.join(_TRACK_COLS)})"
    f" VALUES ({', '.join('?' * (len(_TRACK_COLS) + 1))})"
)
_UPDATE_INC = (
    "UPDATE incidents SET " + ", ".join(f"{c} = ?" for c in _INC_COLS[1:]) + " WHERE id = ?"
)
_UPDATE_TRACK = (
    "UPDATE incident_track SET " + ", ".join(f"{c} = ?" for c in _TRACK_COLS) + " WHERE id = ?"
)


@dataclass(slots=True)
class Incident:
    """One incident: its ``incidents`` row and its ``incident_track`` bookkeeping."""

    id: str
    site: str
    unit: str
    place: str
    kind: str
    first_press_at: float
    received_at: float
    presses: int
    state: str
    cancelled_at: float | None
    police_ack_at: float | None
    police_ack_by: str | None
    disposition: str | None
    last_epoch: int
    last_seq: int
    closed_at: float | None
    test: bool
    addr: int
    first_press_source: str
    series_press_ms: int | None
    series_presses: int
    base_presses: int
    last_alarm_at: float
    alarm_epoch: int | None
    alarm_seq: int | None
    chatter: bool
    updates: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Incident:
        """From a row of ``_SELECT``."""
        inc = cls(*row)
        inc.chatter = bool(inc.chatter)
        inc.test = bool(inc.test)
        return inc

    def inc_values(self) -> tuple[Any, ...]:
        """The ``incidents`` columns, in ``_INC_COLS`` order (test as 0/1)."""
        return tuple(int(v) if isinstance(v, bool) else v for v in map(self._get, _INC_COLS))

    def track_values(self) -> tuple[Any, ...]:
        """The ``incident_track`` columns, in ``_TRACK_COLS`` order (chatter as 0/1)."""
        return tuple(int(v) if isinstance(v, bool) else v for v in map(self._get, _TRACK_COLS))

    def _get(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def is_open(self) -> bool:
        """Open or police-acknowledged: further presses fold into it."""
        return self.state in OPEN_STATES


class IncidentBook:
    """The incident rules over the journal; no I/O but SQL."""

    def __init__(self, store: Store, config: Config, *, prefix: str, event: EventFn) -> None:
        """``event`` is the Outlet's ``event`` (journal + outbox), for chatter and cancel."""
        self._store = store
        self._config = config
        self._prefix = prefix
        self._event = event
        self._due: dict[str, float] = {}  # incident -> when its coalesced update is due
        self._last_pub: dict[str, float] = {}
        self._press_times: dict[str, deque[tuple[float, int]]] = {}
        self._by_id: dict[str, Incident] = {}
        self._open_of: dict[str, Incident] = {}  # unit id -> its latest open incident
        self._orphans: dict[tuple[int, int, int], float] = {}
        # "incident opened" lines, said once their transaction has committed (see opened())
        self._opened: list[tuple[str, str, str, str]] = []
        # retained board copies of this transaction: incident -> (site, latest payload or "")
        self._board: dict[str, tuple[str, str]] = {}
        testmode.create(store.conn)
        self.reload()

    def log_opened(self) -> None:
        """Log the incidents opened since the last call, once their commit is done.

        By then the alarm is on its way to the broker, and a rolled-back one never opened.
        """
        for iid, kind, place, uid in self._opened:
            log.warning("incident %s: %s at %s (%s)", iid, kind, place, uid)
        self._opened.clear()

    def reload(self) -> None:
        """(Re)load what is open, and CANCELs still waiting for their ALARM, from the journal."""
        self._opened.clear()
        self._board.clear()
        self._by_id.clear()
        self._open_of.clear()
        rows = self._store.conn.execute(
            _SELECT + " WHERE (i.state IN ('open', 'police_ack') OR (i.state = 'cancelled'"
            " AND i.police_ack_at IS NOT NULL)) AND i.closed_at IS NULL"
            # a cancelled one the police have not acknowledged waits for their ack, which
            # loads it (_get); then tick() closes it
            " ORDER BY t.last_alarm_at"
        ).fetchall()
        for row in rows:
            inc = Incident.from_row(row)
            self._by_id[inc.id] = inc
            if inc.is_open:
                self._open_of[inc.unit] = inc  # ordered by last_alarm_at: the latest wins
        self._orphans = self._store.orphan_cancels()

    # -- uplink -------------------------------------------------------------------------

    def on_alarm(self, unit: Unit, frame: Frame, alarm: Alarm, at: float, link: str) -> str:
        """Fold or open; return the incident id."""
        kind = alarm.kind.name.lower()
        inc = self._open_for(unit, at, frame.epoch, alarm.press_ms)
        if inc is None:
            return self._open(unit, frame, kind, alarm.presses, alarm.press_ms, at, link).id
        if inc.series_press_ms == alarm.press_ms:
            inc.series_presses = max(inc.series_presses, alarm.presses)
        else:
            inc.base_presses += inc.series_presses
            inc.series_press_ms, inc.series_presses = alarm.press_ms, alarm.presses
        presses = inc.base_presses + inc.series_presses
        inc.last_alarm_at = at
        if (
            inc.alarm_epoch is None
            or inc.alarm_seq is None
            or (frame.epoch, frame.seq)
            > (
                inc.alarm_epoch,
                inc.alarm_seq,
            )
        ):
            inc.alarm_epoch, inc.alarm_seq = frame.epoch, frame.seq
        if (frame.epoch, frame.seq) > (inc.last_epoch, inc.last_seq):
            inc.last_epoch, inc.last_seq = frame.epoch, frame.seq
        upgraded = kind == "duress" and inc.kind in UPGRADABLE
        if upgraded:
            inc.kind = "duress"
            self._publish(inc, "kind", at)
        if presses > inc.presses:
            inc.presses = presses
            self._check_chatter(unit, inc, at)
            if not upgraded:
                self._press_update(inc, at)
        self._save(inc)
        return inc.id

    def on_duress_checkin(self, unit: Unit, frame: Frame, at: float, link: str) -> str:
        """A guard checked in under duress: upgrade what is open, else open a duress incident."""
        inc = self._open_for(unit, at)
        if inc is None:
            press_ms = int(getattr(frame.body, "press_ms", 0))
            return self._open(unit, frame, "duress", 1, press_ms, at, link, from_alarm=False).id
        inc.last_alarm_at = at
        if inc.kind in UPGRADABLE:
            inc.kind = "duress"
            self._publish(inc, "kind", at)
        self._save(inc)
        return inc.id

    def on_cancel(self, unit: Unit, frame: Frame, cancel: Cancel, at: float) -> str | None:
        """The unit cancelled ALARM (ref_epoch, ref_seq); return the incident, if known."""
        iid = self._store.frame_incident(unit.addr, cancel.ref_epoch, cancel.ref_seq)
        detail: dict[str, Any] = {"ref_epoch": cancel.ref_epoch, "ref_seq": cancel.ref_seq}
        if iid is None:
            log.warning(
                "unit %s: CANCEL of unknown ALARM %d:%d (kept: applied if the ALARM arrives)",
                unit.id,
                cancel.ref_epoch,
                cancel.ref_seq,
            )
            self._orphans.setdefault((unit.addr, cancel.ref_epoch, cancel.ref_seq), at)
        else:
            inc = self._get(iid)
            if inc is not None and self._cancel(inc, at):
                self._save(inc)
        self._event(
            site=unit.site,
            kind="cancel",
            at=at,
            unit=unit.id,
            code=CID_CANCEL,
            qualifier=1,
            detail={**detail, "incident": iid},
        )
        return iid

    def unit_ack_state(self, iid: str | None) -> AckState:
        """The ACK state for an ALARM that went to ``iid``: 2 once the police have it.

        An incident opened by a duress check-in never shows anything at the unit.
        """
        if iid is None:
            return AckState.RECEIVED
        inc = self._get(iid)
        if inc is not None and inc.police_ack_at is not None and inc.alarm_epoch is not None:
            return AckState.POLICE_ACK
        return AckState.RECEIVED

    # -- police -------------------------------------------------------------------------

    def on_police_ack(
        self, iid: str, by: str | None, disposition: str | None, at: float
    ) -> tuple[AckTarget | None, bool]:
        """Record a police acknowledgement; return (where to send ACK state 2, news?).

        A repeated acknowledgement is not news (nothing is published) but the unit is
        told again. The target is ``None`` for an unknown incident or one opened by a
        duress check-in (a silent duress must show nothing at the unit).
        """
        inc = self._get(iid)
        if inc is None:
            log.warning("police ack for unknown incident %s", iid)
            return None, False
        news = inc.police_ack_at is None
        if news:
            inc.police_ack_at, inc.police_ack_by, inc.disposition = at, by, disposition
            if inc.state == "open":
                inc.state = "police_ack"
            self._due.pop(iid, None)
            self._publish(inc, "police_ack", at)
            self._save(inc)
        if inc.alarm_epoch is None or inc.alarm_seq is None:
            return None, news
        return AckTarget(inc.addr, inc.alarm_epoch, inc.alarm_seq), news

    def police_ack_of(self, iid: str) -> tuple[str | None, str | None] | None:
        """(by, disposition) of the acknowledgement that stands, None if not acknowledged."""
        inc = self._get(iid)
        if inc is None or inc.police_ack_at is None:
            return None
        return inc.police_ack_by, inc.disposition

    def published(self, iid: str) -> tuple[str, float] | None:
        """(site, time of the first publication) of an incident, if known."""
        inc = self._get(iid)
        return None if inc is None else (inc.site, inc.received_at)

    def police_acked(self, unit: Unit, iid: str) -> bool:
        """True if the police have acknowledged the incident."""
        inc = self._get(iid)
        return inc is not None and inc.police_ack_at is not None

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Publish coalesced press updates that are due, close what is over; True if any.

        An incident (open or cancelled) is closed once the police have acknowledged it and
        its unit has been quiet for the incident window: from then on a press opens a new
        incident (as it would anyway), the close is published (``update: closed``, and the
        retained ``open/<incident>`` is cleared), and the incident no longer counts at a
        restart. One the police have not acknowledged stays, however old: it must stay on
        the duty room's board.
        """
        due = [iid for iid, t in self._due.items() if t <= now]
        over = [inc for inc in self._by_id.values() if self._over(inc, now)]
        if not due and not over:
            return False
        with self._store.transaction():
            for iid in due:
                del self._due[iid]
                inc = self._get(iid)
                if inc is not None:
                    self._publish(inc, "presses", now)
                    self._save(inc)
            for inc in over:
                inc.state, inc.closed_at = "closed", now
                if self._open_of.get(inc.unit) is inc:
                    del self._open_of[inc.unit]
                self._due.pop(inc.id, None)
                self._publish(inc, "closed", now)
                self._save(inc)
            self.flush_board(now)
        return True

    def _over(self, inc: Incident, now: float) -> bool:
        if inc.state not in ("police_ack", "cancelled") or inc.police_ack_at is None:
            return False
        unit = self._config.units.get(inc.unit)
        window = unit.incident_window_s if unit is not None else 0.0
        return now - inc.last_alarm_at > window and inc.id not in self._due

    # -- internals ----------------------------------------------------------------------

    def _open(
        self,
        unit: Unit,
        frame: Frame,
        kind: str,
        presses: int,
        press_ms: int,
        at: float,
        link: str,
        *,
        from_alarm: bool = True,
    ) -> Incident:
        first, source = self._first_press_at(unit.addr, frame.epoch, press_ms, at)
        test = testmode.unit_mode(self._store.conn, unit, at) is not None
        inc = Incident(
            id=f"{self._config.gateway_id}-{unit.id}-{frame.epoch}-{frame.seq}",
            site=unit.site,
            unit=unit.id,
            place=unit.place,
            kind=kind,
            first_press_at=first,
            received_at=at,
            presses=presses,
            state="open",
            cancelled_at=None,
            police_ack_at=None,
            police_ack_by=None,
            disposition=None,
            last_epoch=frame.epoch,
            last_seq=frame.seq,
            closed_at=None,
            test=test,
            addr=unit.addr,
            first_press_source=source,
            series_press_ms=press_ms if from_alarm else None,
            series_presses=presses if from_alarm else 0,
            base_presses=0,
            last_alarm_at=at,
            alarm_epoch=frame.epoch if from_alarm else None,
            alarm_seq=frame.seq if from_alarm else None,
            chatter=False,
            updates=0,
        )
        # the police hear of it first: the publication is queued before anything else
        self._publish(inc, "new", at, link=link)
        if from_alarm:
            cancelled_at = self._orphans.pop((unit.addr, frame.epoch, frame.seq), None)
            if cancelled_at is not None:  # the CANCEL overtook its ALARM
                self._cancel(inc, cancelled_at)
        c = self._store.conn
        c.execute(_INSERT_INC, inc.inc_values())
        c.execute(_INSERT_TRACK, (inc.id, *inc.track_values()))
        self._remember(inc)
        if inc.is_open:
            self._open_of[unit.id] = inc
        self._press_times[inc.id] = deque([(at, presses)])
        self._opened.append((inc.id, kind, unit.place, unit.id))
        return inc

    def _cancel(self, inc: Incident, at: float) -> bool:
        if inc.cancelled_at is not None:
            return False
        inc.cancelled_at, inc.state = at, "cancelled"
        if self._open_of.get(inc.unit) is inc:
            del self._open_of[inc.unit]
        self._due.pop(inc.id, None)
        self._publish(inc, "cancelled", at)
        return True

    def _save(self, inc: Incident) -> None:
        c = self._store.conn
        c.execute(_UPDATE_INC, (*inc.inc_values()[1:], inc.id))
        c.execute(_UPDATE_TRACK, (*inc.track_values(), inc.id))

    def _get(self, iid: str) -> Incident | None:
        inc = self._by_id.get(iid)
        if inc is None:
            row = self._store.conn.execute(_SELECT + " WHERE i.id = ?", (iid,)).fetchone()
            if row is None:
                return None
            inc = Incident.from_row(row)
            self._remember(inc)
        return inc

    def _remember(self, inc: Incident) -> None:
        self._by_id[inc.id] = inc
        if len(self._by_id) > CACHE_CLOSED * 2:
            # an incident still on the board stays: tick() closes it from here
            closed = [k for k, v in self._by_id.items() if v.state not in BOARD_STATES]
            for k in closed[: len(closed) - CACHE_CLOSED]:
                del self._by_id[k]
                self._press_times.pop(k, None)
                self._last_pub.pop(k, None)

    def _open_for(
        self, unit: Unit, at: float, epoch: int | None = None, press_ms: int | None = None
    ) -> Incident | None:
        """The unit's open incident a press at ``at`` folds into, if any.

        An ALARM of the series the incident holds (``epoch`` and ``press_ms``) folds into
        it however late it comes: the unit kept that series open (its ALARM was not yet
        ACKed) and counts its presses from the series' first, so a new incident would
        count the earlier presses twice.
        """
        inc = self._open_of.get(unit.id)
        if inc is None or not inc.is_open:
            return None
        if at - inc.last_alarm_at <= unit.incident_window_s:
            return inc
        # series_press_ms is None for an incident a duress CHECKIN opened: no series
        same_series = inc.series_press_ms == press_ms and inc.last_epoch == epoch
        return inc if press_ms is not None and same_series else None

    def _first_press_at(self, addr: int, epoch: int, press_ms: int, at: float) -> tuple[float, str]:
        """When the first press was, from the unit's uptime (``press_ms``, mod 2^32).

        The boot estimate comes from a heartbeat's whole-second uptime, so the uptime it
        gives now may be up to ~1 s (plus the estimate's hysteresis) short of the real one:
        a press just after a heartbeat can look a little *ahead* of now. The 2^32 cycle
        taken is the one nearest the estimated uptime, allowing the press up to
        ``PRESS_AHEAD_MS`` ahead of it; never the previous cycle, 49.7 days early.
        """
        boot = self._store.boot_at(addr, epoch)
        if boot is None or boot > at:
            return at, "received"
        uptime_ms = (at - boot) * 1000.0
        full = press_ms + _U32 * math.floor((uptime_ms + PRESS_AHEAD_MS - press_ms) / _U32)
        if full < 0:  # pressed before this boot began: the estimate cannot be right
            return at, "received"
        return min(at, boot + full / 1000.0), "unit_uptime"

    def _check_chatter(self, unit: Unit, inc: Incident, at: float) -> None:
        times = self._press_times.setdefault(inc.id, deque())
        times.append((at, inc.presses))
        while times and at - times[0][0] > CHATTER_WINDOW_S:
            times.popleft()
        if inc.chatter or inc.presses - times[0][1] < CHATTER_PRESSES - 1:
            return
        inc.chatter = True
        log.warning(
            "unit %s: button chatter (%d presses in incident %s)", unit.id, inc.presses, inc.id
        )
        self._event(
            site=unit.site,
            kind="button_chatter",
            at=at,
            unit=unit.id,
            code=CID_CHATTER,
            qualifier=1,
            detail={"incident": inc.id, "presses": inc.presses, "window_s": CHATTER_WINDOW_S},
        )

    def _press_update(self, inc: Incident, at: float) -> None:
        last = self._last_pub.get(inc.id)
        if last is None or at - last >= PRESS_UPDATE_S:
            self._due.pop(inc.id, None)
            self._publish(inc, "presses", at)
        else:
            self._due.setdefault(inc.id, last + PRESS_UPDATE_S)

    def _publish(self, inc: Incident, update: str, at: float, *, link: str | None = None) -> None:
        unit = self._config.units.get(inc.unit)
        inc.updates += 1
        payload: dict[str, Any] = {
            "incident": inc.id,
            "update": update,
            "update_no": inc.updates,
            "gateway": self._config.gateway_id,
            "site": inc.site,
            "unit": inc.unit,
            "place": inc.place,
            "owner": unit.owner if unit else None,
            "role": unit.role if unit else None,
            "kind": inc.kind,
            "contact_id": AlarmKind[inc.kind.upper()].contact_id,
            "first_press_at": iso(inc.first_press_at),
            "first_press_source": inc.first_press_source,
            "received_at": iso(inc.received_at),
            "presses": inc.presses,
            "state": inc.state,
            "cancelled_at": iso(inc.cancelled_at),
            "police_ack_at": iso(inc.police_ack_at),
            "police_ack_by": inc.police_ack_by,
            "disposition": inc.disposition,
            "closed_at": iso(inc.closed_at),
            "test": inc.test,
            "published_at": iso(at),
            # where the police can look: stream references, never credentials
            "cameras": [self._config.cameras[c].ref() for c in unit.cameras] if unit else [],
        }
        if link is not None:
            payload["link"] = link
        self._last_pub[inc.id] = at
        text = json.dumps(payload, separators=(",", ":"))
        self._store.enqueue(
            at=at,
            topic=f"{self._prefix}/{inc.site}/alarm/{inc.unit}",
            payload=text,
            qos=1,
            incident=inc.id,
        )
        self._board[inc.id] = (inc.site, text if inc.state in BOARD_STATES else "")
        if not self._store.in_transaction:
            self.flush_board(at)

    def flush_board(self, at: float) -> None:
        """Queue the retained board copies of this transaction; call it before the commit.

        The board of a duty room that (re)connects: ``open/<incident>`` retains the latest
        update of every incident not yet closed; an empty retained message at the close
        removes it. One copy per incident and transaction, after all of the
        transaction's alarm updates: in a burst of alarms the copies do not delay them.
        """
        for iid, (site, text) in self._board.items():
            self._store.enqueue(
                at=at, topic=f"{self._prefix}/{site}/open/{iid}", payload=text, retain=True
            )
        self._board.clear()
