"""Helpers for the gateway's decision tests: a real journal, a register, what it queued."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.config import Config, Unit
from gateway.journal.store import OutboxRow, Store
from gateway.pipeline.pipeline import body_dict
from protocol import Alarm, AlarmKind, Cancel, Checkin, Frame
from tests.duty.helpers import register

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def config(**defaults: int) -> Config:
    """The duty tests' register: units shop (10), home (11), guard (12), window 120 s."""
    return register(**defaults)


def open_store(path: Path) -> Store:
    """A real journal; its fsync is the real one (tmp_path is on a real disk)."""
    return Store(path)


@dataclass
class EventLog:
    """The Outlet's ``event`` as the incident book calls it: recorded."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, **kw: Any) -> None:
        self.events.append(kw)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


def outbox(store: Store) -> list[OutboxRow]:
    """Every outbox row, sent or not, in id order."""
    rows = store.conn.execute(
        "SELECT id, topic, payload, qos, retain, incident FROM outbox ORDER BY id"
    ).fetchall()
    return [OutboxRow(int(r[0]), r[1], r[2], int(r[3]), bool(r[4]), r[5]) for r in rows]


def publications(store: Store) -> list[dict[str, Any]]:
    """The incident publications queued so far, decoded."""
    return [json.loads(r.payload) for r in outbox(store) if "/alarm/" in r.topic]


def updates(store: Store, incident: str | None = None) -> list[str]:
    """The ``update`` field of each incident publication (of one incident)."""
    return [p["update"] for p in publications(store) if incident in (None, p["incident"])]


def alarm(
    unit: Unit,
    seq: int,
    *,
    kind: AlarmKind = AlarmKind.PANIC,
    presses: int = 1,
    press_ms: int | None = None,
    epoch: int = 1,
) -> tuple[Frame, Alarm]:
    body = Alarm(kind, presses, 1000 * seq if press_ms is None else press_ms)
    return Frame(unit.addr, epoch, seq, body), body


def cancel(unit: Unit, seq: int, ref_seq: int, *, epoch: int = 1) -> tuple[Frame, Cancel]:
    body = Cancel(epoch, ref_seq)
    return Frame(unit.addr, epoch, seq, body), body


def duress_checkin(unit: Unit, seq: int, *, epoch: int = 1) -> Frame:
    return Frame(unit.addr, epoch, seq, Checkin(0x01, 1000 * seq))


def journal(store: Store, frame: Frame, at: float, incident: str | None) -> None:
    """Journal a frame as the pipeline does (the incident a CANCEL looks up)."""
    store.journal_frame(
        at=at,
        link="bus",
        unit=str(frame.unit),
        addr=frame.unit,
        epoch=frame.epoch,
        seq=frame.seq,
        type_name=frame.type.name,
        body=body_dict(frame),
        incident=incident,
    )
