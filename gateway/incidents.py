"""Alarms -> incidents: open, fold further presses, upgrade to duress, cancel, police ack.

Every method runs inside the caller's journal transaction and queues each publication in
the outbox in that same transaction, so an incident and what the police are told about it
are committed together or not at all. Rules (gateway/README.md has the long form):

- An ALARM opens an incident ``<gateway>-<unit>-<epoch>-<seq>`` unless the unit has one
  that is open (or police-acknowledged) and had an ALARM within the unit's
  ``incident_window_s``: then the press folds into it (``presses`` grows).
- A duress ALARM or duress CHECKIN upgrades a folded-into panic/silent/other incident to
  ``duress``; a duress CHECKIN with nothing open opens a silent duress incident.
- Press updates are coalesced: at most one ``presses`` publication per incident every
  ``PRESS_UPDATE_S``; the rest wait for :meth:`IncidentBook.tick`.
- A chattering button (``CHATTER_PRESSES`` presses within ``CHATTER_WINDOW_S``) is
  reported once per incident as a ``button_chatter`` event (Contact ID 380).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config, Unit
from gateway.store import Store
from protocol import Alarm, AlarmKind, Cancel, Frame

log = logging.getLogger(__name__)

PRESS_UPDATE_S = 1.0
CHATTER_PRESSES = 10
CHATTER_WINDOW_S = 10.0
CID_CHATTER = 380
CID_CANCEL = 406
UPGRADABLE = ("panic", "silent", "other")
DISPOSITIONS = ("genuine", "false_alarm", "test")
_U32 = 1 << 32

EventFn = Callable[..., None]


def iso(t: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds and a ``Z``."""
    if t is None:
        return None
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AckTarget:
    """Where a police acknowledgement goes back to: a unit's ALARM counter."""

    addr: int
    epoch: int
    seq: int


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

    # -- uplink -------------------------------------------------------------------------

    def on_alarm(self, unit: Unit, frame: Frame, alarm: Alarm, at: float, link: str) -> str:
        """Fold or open; return the incident id."""
        kind = alarm.kind.name.lower()
        inc = self._open_for(unit, at)
        if inc is None:
            return self._open(unit, frame, kind, alarm.presses, alarm.press_ms, at, link)
        row, track = inc
        iid = str(row["id"])
        series_ms, series_presses = track["series_press_ms"], int(track["series_presses"])
        base = int(track["base_presses"])
        if series_ms == alarm.press_ms:
            series_presses = max(series_presses, alarm.presses)
        else:
            base += series_presses
            series_ms, series_presses = alarm.press_ms, alarm.presses
        presses = base + series_presses
        newer = track["alarm_epoch"] is None or (frame.epoch, frame.seq) > (
            int(track["alarm_epoch"]),
            int(track["alarm_seq"]),
        )
        c = self._store.conn
        c.execute(
            "UPDATE incident_track SET series_press_ms = ?, series_presses = ?, base_presses = ?,"
            " last_alarm_at = ?, alarm_epoch = ?, alarm_seq = ? WHERE id = ?",
            (
                series_ms,
                series_presses,
                base,
                at,
                frame.epoch if newer else track["alarm_epoch"],
                frame.seq if newer else track["alarm_seq"],
                iid,
            ),
        )
        if newer:
            c.execute(
                "UPDATE incidents SET last_epoch = ?, last_seq = ? WHERE id = ?",
                (frame.epoch, frame.seq, iid),
            )
        upgraded = kind == "duress" and row["kind"] in UPGRADABLE
        if upgraded:
            c.execute("UPDATE incidents SET kind = 'duress' WHERE id = ?", (iid,))
            self._publish(iid, "kind", at)
        if presses > int(row["presses"]):
            c.execute("UPDATE incidents SET presses = ? WHERE id = ?", (presses, iid))
            self._check_chatter(unit, iid, presses, at, bool(track["chatter"]))
            if not upgraded:
                self._press_update(iid, at)
        return iid

    def on_duress_checkin(self, unit: Unit, frame: Frame, at: float, link: str) -> str:
        """A guard checked in under duress: upgrade what is open, else open a duress incident."""
        inc = self._open_for(unit, at)
        if inc is None:
            press_ms = int(getattr(frame.body, "press_ms", 0))
            return self._open(unit, frame, "duress", 1, press_ms, at, link, from_alarm=False)
        row, _ = inc
        iid = str(row["id"])
        self._store.conn.execute(
            "UPDATE incident_track SET last_alarm_at = ? WHERE id = ?", (at, iid)
        )
        if row["kind"] in UPGRADABLE:
            self._store.conn.execute("UPDATE incidents SET kind = 'duress' WHERE id = ?", (iid,))
            self._publish(iid, "kind", at)
        return iid

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
            self._event(
                site=unit.site,
                kind="cancel",
                at=at,
                unit=unit.id,
                code=CID_CANCEL,
                qualifier=1,
                detail={**detail, "incident": None},
            )
            return None
        self._cancel(iid, at)
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

    # -- police -------------------------------------------------------------------------

    def on_police_ack(
        self, iid: str, by: str | None, disposition: str | None, at: float
    ) -> tuple[AckTarget | None, bool]:
        """Record a police acknowledgement; return (where to send ACK state 2, news?).

        A repeated acknowledgement is not news (nothing is published) but the unit is
        told again. The target is ``None`` for an unknown incident or one opened by a
        duress check-in (a silent duress must show nothing at the unit).
        """
        row = self._row(iid)
        if row is None:
            log.warning("police ack for unknown incident %s", iid)
            return None, False
        news = row["police_ack_at"] is None
        if news:
            self._store.conn.execute(
                "UPDATE incidents SET police_ack_at = ?, police_ack_by = ?, disposition = ?,"
                " state = 'police_ack' WHERE id = ?",
                (at, by, disposition, iid),
            )
            self._due.pop(iid, None)
            self._publish(iid, "police_ack", at)
        track = self._store.conn.execute(
            "SELECT addr, alarm_epoch, alarm_seq FROM incident_track WHERE id = ?", (iid,)
        ).fetchone()
        if track is None or track[1] is None:
            return None, news
        return AckTarget(int(track[0]), int(track[1]), int(track[2])), news

    def police_acked(self, unit: Unit, iid: str) -> bool:
        """True if the police have acknowledged the incident."""
        row = self._row(iid)
        return row is not None and row["police_ack_at"] is not None

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Publish coalesced press updates that are due; True if any was queued."""
        due = [iid for iid, t in self._due.items() if t <= now]
        if not due:
            return False
        with self._store.transaction():
            for iid in due:
                del self._due[iid]
                self._publish(iid, "presses", now)
        return True

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
    ) -> str:
        iid = f"{self._config.gateway_id}-{unit.id}-{frame.epoch}-{frame.seq}"
        first, source = self._first_press_at(unit.addr, frame.epoch, press_ms, at)
        c = self._store.conn
        c.execute(
            "INSERT INTO incidents(id, site, unit, place, kind, first_press_at, received_at,"
            " presses, state, last_epoch, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
            (iid, unit.site, unit.id, unit.place, kind, first, at, presses, frame.epoch, frame.seq),
        )
        c.execute(
            "INSERT INTO incident_track(id, addr, first_press_source, series_press_ms,"
            " series_presses, last_alarm_at, alarm_epoch, alarm_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                iid,
                unit.addr,
                source,
                press_ms if from_alarm else None,
                presses if from_alarm else 0,
                at,
                frame.epoch if from_alarm else None,
                frame.seq if from_alarm else None,
            ),
        )
        self._press_times[iid] = deque([(at, presses)])
        self._publish(iid, "new", at, link=link)
        log.warning("incident %s: %s at %s (%s)", iid, kind, unit.place, unit.id)
        if from_alarm:
            cancelled_at = self._store.cancel_for(unit.addr, frame.epoch, frame.seq)
            if cancelled_at is not None:  # the CANCEL overtook its ALARM
                self._cancel(iid, cancelled_at)
        return iid

    def _cancel(self, iid: str, at: float) -> None:
        row = self._row(iid)
        if row is None or row["cancelled_at"] is not None:
            return
        self._store.conn.execute(
            "UPDATE incidents SET cancelled_at = ?, state = 'cancelled' WHERE id = ?", (at, iid)
        )
        self._due.pop(iid, None)
        self._publish(iid, "cancelled", at)

    def _open_for(self, unit: Unit, at: float) -> tuple[dict[str, Any], dict[str, Any]] | None:
        cur = self._store.conn.execute(
            "SELECT i.*, t.series_press_ms, t.series_presses, t.base_presses, t.last_alarm_at,"
            " t.alarm_epoch, t.alarm_seq, t.chatter FROM incidents i JOIN incident_track t"
            " ON t.id = i.id WHERE i.unit = ? AND i.state IN ('open', 'police_ack')"
            " ORDER BY t.last_alarm_at DESC LIMIT 1",
            (unit.id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        d = dict(zip([x[0] for x in cur.description], row, strict=True))
        if at - float(d["last_alarm_at"]) > unit.incident_window_s:
            return None
        return d, d

    def _row(self, iid: str) -> dict[str, Any] | None:
        cur = self._store.conn.execute("SELECT * FROM incidents WHERE id = ?", (iid,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def _first_press_at(self, addr: int, epoch: int, press_ms: int, at: float) -> tuple[float, str]:
        boot = self._store.boot_at(addr, epoch)
        if boot is None or boot > at:
            return at, "received"
        uptime_ms = (at - boot) * 1000.0
        # press_ms is uptime mod 2^32: take the latest value not after now
        full = press_ms + _U32 * int((uptime_ms - press_ms) // _U32)
        if full > uptime_ms + 1000.0:  # more than the heartbeat's rounding in the future
            return at, "received"
        return min(at, boot + full / 1000.0), "unit_uptime"

    def _check_chatter(self, unit: Unit, iid: str, presses: int, at: float, done: bool) -> None:
        times = self._press_times.setdefault(iid, deque())
        times.append((at, presses))
        while times and at - times[0][0] > CHATTER_WINDOW_S:
            times.popleft()
        if done or presses - times[0][1] < CHATTER_PRESSES - 1:
            return
        self._store.conn.execute("UPDATE incident_track SET chatter = 1 WHERE id = ?", (iid,))
        log.warning("unit %s: button chatter (%d presses in incident %s)", unit.id, presses, iid)
        self._event(
            site=unit.site,
            kind="button_chatter",
            at=at,
            unit=unit.id,
            code=CID_CHATTER,
            qualifier=1,
            detail={"incident": iid, "presses": presses, "window_s": CHATTER_WINDOW_S},
        )

    def _press_update(self, iid: str, at: float) -> None:
        last = self._last_pub.get(iid)
        if last is None or at - last >= PRESS_UPDATE_S:
            self._due.pop(iid, None)
            self._publish(iid, "presses", at)
        else:
            self._due.setdefault(iid, last + PRESS_UPDATE_S)

    def _publish(self, iid: str, update: str, at: float, *, link: str | None = None) -> None:
        row = self._row(iid)
        if row is None:
            return
        unit = self._config.units.get(str(row["unit"]))
        kind = str(row["kind"])
        track = self._store.conn.execute(
            "SELECT updates, first_press_source FROM incident_track WHERE id = ?", (iid,)
        ).fetchone()
        n = int(track[0]) + 1 if track is not None else 1
        source = str(track[1]) if track is not None else "received"
        self._store.conn.execute("UPDATE incident_track SET updates = ? WHERE id = ?", (n, iid))
        payload: dict[str, Any] = {
            "incident": iid,
            "update": update,
            "update_no": n,
            "gateway": self._config.gateway_id,
            "site": row["site"],
            "unit": row["unit"],
            "place": row["place"],
            "owner": unit.owner if unit else None,
            "role": unit.role if unit else None,
            "kind": kind,
            "contact_id": AlarmKind[kind.upper()].contact_id,
            "first_press_at": iso(row["first_press_at"]),
            "first_press_source": source,
            "received_at": iso(row["received_at"]),
            "presses": row["presses"],
            "state": row["state"],
            "cancelled_at": iso(row["cancelled_at"]),
            "police_ack_at": iso(row["police_ack_at"]),
            "police_ack_by": row["police_ack_by"],
            "disposition": row["disposition"],
            "published_at": iso(at),
        }
        if link is not None:
            payload["link"] = link
        self._last_pub[iid] = at
        self._store.enqueue(
            at=at,
            topic=f"{self._prefix}/{row['site']}/alarm/{row['unit']}",
            payload=json.dumps(payload, separators=(",", ":")),
            qos=1,
            incident=iid,
        )
