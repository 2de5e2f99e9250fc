"""Snapshots kept with their incident, and published as signed parts behind the alarms.

One writer for the ``snapshots`` table and the files: a JPEG is written to
``<journal dir>/snapshots/<incident>/<camera>.jpg`` (0600, directories 0700: the pictures
are as private as the journal), its row records the outcome, and :meth:`Snapshots.pump`
queues its parts in the outbox.

How a binary JPEG travels in the signed envelope (gateway/security/envelope.py): the envelope
signs a JSON text body, so the picture is base64 in that body, cut in parts of
:data:`PART_BYTES` (5 KiB of JPEG, ~7 KiB of base64 with the other fields). Every part is
signed on its own (Ed25519 over topic and body, as any message), so a part can be checked
as it arrives; every part carries the SHA-256 of the whole JPEG, so the reassembled
picture is checked too. Parts stay under the 8 KiB every duty-room client accepts
(``envelope.MAX_PAYLOAD_BYTES``) and the broker's 16 KiB packet limit. A signed digest
with the JPEG sent raw beside it was not taken: raw bytes would still need cutting under
the broker's limit, and they would be the one payload on the bus that is not an envelope.

Behind the alarms: at most :data:`WINDOW_PARTS` snapshot parts wait in the outbox at a
time, all cameras together; the next ones are queued only as those are PUBACKed. An alarm
committed at any moment has at most that many parts (~28 KiB) ahead of it, and while the
broker is away the outbox fills with alarms, not with pictures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.timefmt import iso
from gateway.journal.store import Store
from gateway.video.fetch import Shot

log = logging.getLogger(__name__)

PART_BYTES = 5 * 1024
WINDOW_PARTS = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    incident  TEXT NOT NULL,
    camera    TEXT NOT NULL,
    site      TEXT NOT NULL,
    taken_at  REAL NOT NULL,         -- when the fetch ended (the gateway's clock)
    status    TEXT NOT NULL,         -- ok | timeout | unreachable | http_<code> | too_large | ...
    error     TEXT NOT NULL DEFAULT '',
    elapsed_s REAL NOT NULL,
    size      INTEGER NOT NULL DEFAULT 0,
    sha256    TEXT,
    file      TEXT,                  -- relative to the snapshot directory; NULL when not ok
    parts     INTEGER NOT NULL,      -- messages to publish (1 for a failed fetch)
    queued    INTEGER NOT NULL DEFAULT 0,  -- parts queued in the outbox so far
    PRIMARY KEY (incident, camera)
);
CREATE INDEX IF NOT EXISTS snapshots_unqueued ON snapshots(taken_at) WHERE queued < parts;
"""

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def snapshot_dir(db_path: Path) -> Path:
    """Where the pictures of the journal at ``db_path`` live: beside it."""
    return db_path.parent / "snapshots"


@dataclass(frozen=True, slots=True)
class Pending:
    """A snapshot with parts still to queue."""

    incident: str
    camera: str
    site: str
    taken_at: float
    status: str
    error: str
    size: int
    sha256: str | None
    file: str | None
    parts: int
    queued: int


class Snapshots:
    """The snapshot table and files of one journal."""

    def __init__(self, store: Store, root: Path, *, prefix: str, gateway_id: str) -> None:
        """Create the table; pictures go under ``root``."""
        self._store = store
        self.root = root
        self._prefix = prefix
        self._gateway = gateway_id
        store.conn.executescript(SCHEMA)
        # parts may still wait to be queued (from before a restart): pump() looks once
        self._unqueued = True

    def topic(self, site: str, incident: str, camera: str) -> str:
        """``<prefix>/<site>/snapshot/<incident>/<camera>``."""
        return f"{self._prefix}/{site}/snapshot/{incident}/{camera}"

    def known(self, incident: str) -> bool:
        """True if the incident's snapshots were taken already (a restart, a duplicate)."""
        row = self._store.conn.execute(
            "SELECT 1 FROM snapshots WHERE incident = ? LIMIT 1", (incident,)
        ).fetchone()
        return row is not None

    def incident_of(self, addr: int, epoch: int, seq: int) -> str | None:
        """The incident a journalled frame went to."""
        return self._store.frame_incident(addr, epoch, seq)

    def save_file(self, incident: str, shot: Shot) -> str | None:
        """Write an ok shot's JPEG (0600); return its path under the root (a worker thread)."""
        if shot.status != "ok":
            return None
        rel = f"{_SAFE.sub('_', incident)}/{_SAFE.sub('_', shot.camera)}.jpg"
        path = self.root / rel
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(shot.jpeg)
        return rel

    def record(self, incident: str, site: str, shot: Shot, at: float, rel: str | None) -> None:
        """Keep the outcome of one camera; ``rel`` is its saved file (:meth:`save_file`)."""
        digest = hashlib.sha256(shot.jpeg).hexdigest() if rel is not None else None
        parts = max(1, -(-len(shot.jpeg) // PART_BYTES)) if rel is not None else 1
        with self._store.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO snapshots(incident, camera, site, taken_at, status,"
                " error, elapsed_s, size, sha256, file, parts, queued)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    incident,
                    shot.camera,
                    site,
                    at,
                    shot.status,
                    shot.error,
                    shot.elapsed_s,
                    len(shot.jpeg),
                    digest,
                    rel,
                    parts,
                ),
            )
        self._unqueued = True

    def record_all(
        self, incident: str, site: str, kept: Sequence[tuple[Shot, str | None]], at: float
    ) -> None:
        """Keep the outcome of every camera of an incident in one transaction."""
        with self._store.transaction():
            for shot, rel in kept:
                self.record(incident, site, shot, at, rel)

    def _pending(self) -> list[Pending]:
        rows = self._store.conn.execute(
            "SELECT incident, camera, site, taken_at, status, error, size, sha256, file,"
            " parts, queued FROM snapshots WHERE queued < parts ORDER BY taken_at, camera"
        ).fetchall()
        return [Pending(*r) for r in rows]

    def unsent_parts(self) -> int:
        """Snapshot messages queued in the outbox and not yet PUBACKed."""
        row = self._store.conn.execute(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND topic LIKE ?",
            (f"{self._prefix}/%/snapshot/%",),
        ).fetchone()
        return int(row[0])

    def pump(self, at: float) -> int:
        """Queue further parts while fewer than WINDOW_PARTS wait; return how many.

        All of them in one transaction: one commit per watcher tick, not one per part.
        """
        if not self._unqueued:  # the common case at every watcher tick: no query at all
            return 0
        room = WINDOW_PARTS - self.unsent_parts()
        if room <= 0:
            return 0
        todo: list[tuple[Pending, int]] = []
        pending = self._pending()
        self._unqueued = bool(pending)
        for snap in pending:
            for part in range(snap.queued + 1, snap.parts + 1):
                if len(todo) >= room:
                    break
                todo.append((snap, part))
        if not todo:
            return 0
        with self._store.transaction() as c:
            for snap, part in todo:
                self._store.enqueue(
                    at=at,
                    topic=self.topic(snap.site, snap.incident, snap.camera),
                    payload=json.dumps(self._part_body(snap, part), separators=(",", ":")),
                )
                c.execute(
                    "UPDATE snapshots SET queued = ? WHERE incident = ? AND camera = ?",
                    (part, snap.incident, snap.camera),
                )
        return len(todo)

    def _part_body(self, snap: Pending, part: int) -> Mapping[str, Any]:
        body: dict[str, Any] = {
            "gateway": self._gateway,
            "site": snap.site,
            "incident": snap.incident,
            "camera": snap.camera,
            "taken_at": iso(snap.taken_at),
            "status": snap.status,
        }
        if snap.status != "ok" or snap.file is None:
            body["error"] = snap.error
            return body
        try:
            with (self.root / snap.file).open("rb") as f:
                f.seek((part - 1) * PART_BYTES)
                data = f.read(PART_BYTES)
        except OSError as exc:  # pruned or removed under us: say so rather than stall
            log.warning(
                "snapshot %s/%s: cannot read part %d: %s", snap.incident, snap.camera, part, exc
            )
            data = b""
        body.update(
            content_type="image/jpeg",
            size=snap.size,
            sha256=snap.sha256,
            part=part,
            parts=snap.parts,
            data=base64.b64encode(data).decode(),
        )
        return body

    def prune(self, before: float) -> int:
        """Forget snapshots taken before ``before``: rows and files; return how many."""
        rows = self._store.conn.execute(
            "SELECT DISTINCT incident FROM snapshots WHERE taken_at < ?", (before,)
        ).fetchall()
        for (incident,) in rows:
            shutil.rmtree(self.root / _SAFE.sub("_", incident), ignore_errors=True)
        if not rows:
            return 0
        with self._store.transaction() as c:
            n = c.execute("DELETE FROM snapshots WHERE taken_at < ?", (before,)).rowcount
        return int(n)
