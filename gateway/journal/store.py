"""The gateway's SQLite journal: frames, replay windows, outbox, meta, and the shared tables.

One connection, owned by the event loop's thread. Every change runs in a transaction
(:meth:`Store.transaction`, re-entrant: inner blocks join the outer one), committed in
WAL mode with ``synchronous=NORMAL``: a committed transaction survives SIGKILL at once,
and a power cut once the WAL file is fsynced, which :mod:`gateway.journal.walsync` does in a
worker thread (group commit). Nothing is ACKed to a unit before the transaction holding
its frame is on disk (:meth:`Store.when_durable`); see gateway/README.md.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.core.errors import StoreError
from gateway.journal.schema import create_shared
from gateway.journal.walsync import WalSync

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RETENTION_DAYS = 90
"""Default age after which frames and delivered outbox rows are pruned."""
PRUNE_BATCH = 200  # rows per pruning transaction: ~5-10 ms on the event loop (bench/journal.py)

_OWN_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- every fresh authentic uplink frame, as received (the gateway's journal)
CREATE TABLE IF NOT EXISTS frames (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    link     TEXT NOT NULL,
    unit     TEXT NOT NULL,
    addr     INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    type     TEXT NOT NULL,
    body     TEXT NOT NULL,           -- JSON of the message fields
    incident TEXT,                    -- the incident an ALARM/duress CHECKIN/CANCEL went to
    UNIQUE (addr, epoch, seq)
);
CREATE INDEX IF NOT EXISTS frames_unit_time ON frames(unit, at);
-- per unit address: the replay window (protocol.ReplayGuard.state) as JSON
CREATE TABLE IF NOT EXISTS replay (
    addr    INTEGER PRIMARY KEY,
    windows TEXT NOT NULL
);
-- messages for the broker, in order; sent_at is set on PUBACK
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    qos        INTEGER NOT NULL DEFAULT 1,
    retain     INTEGER NOT NULL DEFAULT 0,
    incident   TEXT,
    sent_at    REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(id) WHERE sent_at IS NULL;
-- bookkeeping of the incident logic that the shared table does not carry
CREATE TABLE IF NOT EXISTS incident_track (
    id              TEXT PRIMARY KEY REFERENCES incidents(id),
    addr            INTEGER NOT NULL,
    first_press_source TEXT NOT NULL DEFAULT 'received',  -- unit_uptime | received
    series_press_ms INTEGER,          -- press_ms of the press series last folded in
    series_presses  INTEGER NOT NULL DEFAULT 0,
    base_presses    INTEGER NOT NULL DEFAULT 0,  -- presses of earlier series
    last_alarm_at   REAL NOT NULL,
    alarm_epoch     INTEGER,          -- counter of the latest ALARM (NULL: opened by CHECKIN)
    alarm_seq       INTEGER,
    chatter         INTEGER NOT NULL DEFAULT 0,
    updates         INTEGER NOT NULL DEFAULT 0
);
-- when each boot of a unit began, estimated from HEARTBEAT uptime (for first_press_at)
CREATE TABLE IF NOT EXISTS unit_boot (
    addr    INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    boot_at REAL NOT NULL,
    PRIMARY KEY (addr, epoch)
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for the broker."""

    id: int
    topic: str
    payload: str
    qos: int
    retain: bool
    incident: str | None


def _private(path: Path) -> None:
    """Create the journal mode 0600, or make an existing one 0600 (with its WAL and shm).

    It holds owners' names and phone numbers. SQLite gives the -wal and -shm files the
    database file's mode.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = p.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o): now 0600", p, mode)
            p.chmod(0o600)


def insert_event(
    conn: sqlite3.Connection,
    *,
    at: float,
    site: str,
    kind: str,
    unit: str | None = None,
    post: str | None = None,
    route: str | None = None,
    code: int | None = None,
    qualifier: int | None = None,
    detail: str = "{}",
) -> int:
    """Append one row to the shared ``events`` table (``detail``: JSON text); its id.

    The one writer of that table: the store's :meth:`Store.add_event`, and the benches and
    tests that fill a journal without a running gateway.
    """
    cur = conn.execute(
        "INSERT INTO events(at, site, unit, post, route, kind, code, qualifier, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (at, site, unit, post, route, kind, code, qualifier, detail),
    )
    return int(cur.lastrowid or 0)


def default_db_path() -> Path:
    """``$STATE_DIRECTORY/gateway.db`` under systemd, else ``var/gateway.db``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        # systemd may pass several directories separated by ':'; the first is ours
        return Path(state.split(":")[0]) / "gateway.db"
    return Path("var") / "gateway.db"


class Store:
    """The journal database. ``conn`` is public for watchers' own tables (same thread)."""

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: Callable[[int], None] = os.fsync
    ) -> None:
        """Open (creating if needed) the database at ``path``; raise :class:`StoreError`.

        ``fsync`` makes the WAL durable (:class:`gateway.journal.walsync.WalSync`); tests
        replace it.
        """
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _private(self.path)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=True, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the journal: {exc}") from exc
        self.conn = conn
        self.wal = WalSync(Path(f"{self.path}-wal"), fsync=fsync)
        self._depth = 0
        self._queued: list[OutboxRow] = []
        self.on_commit: Callable[[list[OutboxRow]], None] | None = None
        # seal(topic, body) -> payload: every message queued for the broker is signed
        # here, once, as it is journalled (see gateway/security/envelope.py); the relay publishes
        # the stored bytes as they are, and a re-publication is the same bytes
        self.seal: Callable[[str, str], str] | None = None
        # inside the transaction of each queued message: the ARC feed (gateway/arc/feed.py)
        self.on_enqueue: Callable[[OutboxRow, float], None] | None = None
        self.commits = 0
        self.failures = 0
        self.commit_s: deque[float] = deque(maxlen=4096)  # recent COMMIT durations
        self.last_commit = 0.0  # time.monotonic() of the last commit
        self.unchecked = 0  # commits since the last checkpoint
        self.checkpoints = 0
        self._boots: dict[tuple[int, int], float] = {}
        self._data_version: int | None = None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: WAL mode refused ({mode})")
            # durability comes from WalSync's fsync, off the event loop, before any ACK
            conn.execute("PRAGMA synchronous=NORMAL")
            # checkpoints copy the WAL into the database and fsync it (milliseconds, more on
            # an SD card): never inside an alarm's commit, see checkpoint()
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA foreign_keys=OFF")
            # pruned rows (owners' phone numbers) are overwritten, not left in free pages
            conn.execute("PRAGMA secure_delete=ON")
            conn.executescript(_OWN_SCHEMA)
            create_shared(conn)
            with self.transaction():
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            self._boots = {
                (int(a), int(e)): float(b)
                for a, e, b in conn.execute("SELECT addr, epoch, boot_at FROM unit_boot")
            }
            self.wal.sync_now()
            # from here on, another connection's commit is news (changed_elsewhere)
            self.changed_elsewhere()
        except (OSError, sqlite3.Error) as exc:
            self.wal.close()
            conn.close()
            raise StoreError(f"{self.path}: cannot prepare the journal: {exc}") from exc

    def close(self) -> None:
        """Close the connection (checkpoints the WAL)."""
        self.wal.close()
        self.conn.close()

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every commit so far is on disk (see ``journal/walsync.py``)."""
        self.wal.when_durable(callback)

    def sync(self) -> None:
        """Make every commit so far durable now, blocking (rare records, start-up)."""
        self.wal.sync_now()

    def checkpoint(self) -> int:
        """Copy committed WAL frames into the database (PASSIVE); return frames copied.

        Automatic checkpoints are off: SQLite would run one inside whichever commit
        crosses 1000 pages, alarm or not, and it copies pages and fsyncs the database
        (milliseconds; far more on an SD card). Call this from a worker thread
        (``asyncio.to_thread``): it uses a connection of its own, never waits for the
        gateway's writes, and they never wait for it.
        """
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0.5)
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        self.checkpoints += 1
        return int(row[2]) if row is not None and row[2] is not None else 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; nested blocks join the outermost, which commits.

        Messages queued with :meth:`enqueue` inside it go to :attr:`on_commit` right after
        the commit (never before, never after a rollback): that is how the relay gets new
        messages in memory without reading the outbox back.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self._queued.clear()
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
            self.failures += 1
            raise
        self._depth = 0
        t0 = time.perf_counter()
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            self.failures += 1
            self._queued.clear()
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self.wal.committed()
        self.commit_s.append(time.perf_counter() - t0)
        self.last_commit = time.monotonic()
        self.unchecked += 1
        self.commits += 1
        if self._queued:
            rows, self._queued = self._queued, []
            if self.on_commit is not None:
                try:
                    self.on_commit(rows)
                except Exception:  # the rows are committed: the relay finds them later
                    log.exception("on_commit hook failed for %d messages", len(rows))

    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction`."""
        return self._depth > 0

    # -- meta ---------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        """A value from the meta table."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        """Set a value in the meta table (inside the caller's transaction, or its own)."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def bump_epoch(self) -> int:
        """Take the next downlink epoch (SPEC.md 1.3): on disk before it is used."""
        with self.transaction():
            epoch = int(self.meta_get("downlink_epoch") or "0") + 1
            if epoch > 0xFFFFFFFF:
                raise StoreError("downlink epoch exhausted")
            self.meta_set("downlink_epoch", str(epoch))
        self.sync()  # a counter reused after a power cut would be refused as replay
        return epoch

    def probe(self, at: float) -> None:
        """Prove the journal can still commit (the watchdog's health check)."""
        with self.transaction():
            self.meta_set("alive_at", repr(at))

    def last_record_at(self) -> float | None:
        """The time of the journal's latest record (frame, event, health probe), if any.

        A clock that reads earlier than this at a start has gone back: the Pi booted
        without an RTC and without time sync yet (gateway/watch/clockwatch.py).
        """
        row = self.conn.execute(
            "SELECT max(t) FROM (SELECT max(at) AS t FROM frames UNION ALL "
            "SELECT max(at) FROM events UNION ALL "
            "SELECT CAST(value AS REAL) FROM meta WHERE key = 'alive_at')"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- replay windows -----------------------------------------------------------------

    def replay_load_all(self) -> dict[int, list[tuple[int, int, int]]]:
        """Every unit's stored replay window."""
        out: dict[int, list[tuple[int, int, int]]] = {}
        for addr, text in self.conn.execute("SELECT addr, windows FROM replay"):
            out[int(addr)] = [(int(e), int(t), int(b)) for e, t, b in json.loads(text)]
        return out

    def replay_save(self, addr: int, windows: Sequence[tuple[int, int, int]]) -> None:
        """Store one unit's replay window (call inside the frame's transaction)."""
        self.conn.execute(
            "INSERT INTO replay(addr, windows) VALUES (?, ?) "
            "ON CONFLICT(addr) DO UPDATE SET windows = excluded.windows",
            (addr, json.dumps([list(w) for w in windows])),
        )

    # -- frames -------------------------------------------------------------------------

    def journal_frame(
        self,
        *,
        at: float,
        link: str,
        unit: str,
        addr: int,
        epoch: int,
        seq: int,
        type_name: str,
        body: dict[str, int],
        incident: str | None = None,
    ) -> None:
        """Append one fresh frame to the journal."""
        self.conn.execute(
            "INSERT INTO frames(at, link, unit, addr, epoch, seq, type, body, incident) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, link, unit, addr, epoch, seq, type_name, json.dumps(body), incident),
        )

    def frame_incident(self, addr: int, epoch: int, seq: int) -> str | None:
        """The incident a journalled frame went to, if any."""
        row = self.conn.execute(
            "SELECT incident FROM frames WHERE addr = ? AND epoch = ? AND seq = ?",
            (addr, epoch, seq),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def orphan_cancels(self) -> dict[tuple[int, int, int], float]:
        """CANCELs whose ALARM never arrived: (addr, ref_epoch, ref_seq) -> when (at start)."""
        rows = self.conn.execute(
            "SELECT c.addr, json_extract(c.body, '$.ref_epoch') AS e,"
            " json_extract(c.body, '$.ref_seq') AS q, min(c.at) FROM frames c"
            " WHERE c.type = 'CANCEL' AND c.incident IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM frames a WHERE a.addr = c.addr AND a.epoch = e AND a.seq = q)"
            " GROUP BY 1, 2, 3"
        ).fetchall()
        return {(int(a), int(e), int(q)): float(t) for a, e, q, t in rows}

    # -- retention ------------------------------------------------------------------------

    def prune(self, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete a batch of old frames and delivered outbox rows; return how many went.

        Up to ``batch`` of each, older than ``before``. Incidents and events stay (the
        reports). One short transaction: call it again (yielding to the loop between calls) until
        it returns 0. Unsent outbox rows are never pruned, however old.
        """
        with self.transaction() as conn:
            frames = conn.execute(
                "DELETE FROM frames WHERE id IN"
                " (SELECT id FROM frames WHERE at < ? ORDER BY id LIMIT ?)",
                (before, batch),
            ).rowcount
            sent = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
                " WHERE sent_at IS NOT NULL AND created_at < ? ORDER BY id LIMIT ?)",
                (before, batch),
            ).rowcount
        return int(frames) + int(sent)

    # -- unit boots (for first_press_at) ------------------------------------------------

    def boot_set(self, addr: int, epoch: int, boot_at: float) -> None:
        """Remember when a unit's boot (epoch) began; keep the last 8 boots per unit.

        The estimate (``received_at - uptime_s``) wobbles by the heartbeat's 1 s rounding:
        it is written only for a new boot or when it moved by more than a second (the
        cache answers :meth:`boot_at` without a query).
        """
        key = (addr, epoch)
        old = self._boots.get(key)
        if old is not None and abs(old - boot_at) <= 1.0:
            return
        self.conn.execute(
            "INSERT INTO unit_boot(addr, epoch, boot_at) VALUES (?, ?, ?) "
            "ON CONFLICT(addr, epoch) DO UPDATE SET boot_at = excluded.boot_at",
            (addr, epoch, boot_at),
        )
        self._boots[key] = boot_at
        if old is None:
            self.conn.execute(
                "DELETE FROM unit_boot WHERE addr = ? AND epoch <= ? - 8", (addr, epoch)
            )
            for k in [k for k in self._boots if k[0] == addr and k[1] <= epoch - 8]:
                del self._boots[k]

    def boot_at(self, addr: int, epoch: int) -> float | None:
        """The estimated boot time of a unit's epoch, if a heartbeat told it."""
        return self._boots.get((addr, epoch))

    # -- events -------------------------------------------------------------------------

    def add_event(
        self,
        *,
        at: float,
        site: str,
        kind: str,
        unit: str | None,
        post: str | None,
        code: int | None,
        qualifier: int | None,
        detail: str,
        route: str | None = None,
    ) -> int:
        """Append to the shared ``events`` table; return the event id."""
        return insert_event(
            self.conn,
            at=at,
            site=site,
            kind=kind,
            unit=unit,
            post=post,
            route=route,
            code=code,
            qualifier=qualifier,
            detail=detail,
        )

    # -- outbox -------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        at: float,
        topic: str,
        payload: str,
        qos: int = 1,
        retain: bool = False,
        incident: str | None = None,
    ) -> int:
        """Queue a message for the broker (inside the caller's transaction).

        The row goes to :attr:`on_commit` once the transaction commits. ``payload`` is
        the message body; with :attr:`seal` set it is stored signed (an empty payload,
        which clears a retained topic, is stored as it is).
        """
        body = payload
        if self.seal is not None and payload:
            payload = self.seal(topic, payload)
        cur = self.conn.execute(
            "INSERT INTO outbox(created_at, topic, payload, qos, retain, incident) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, topic, payload, qos, int(retain), incident),
        )
        rid = int(cur.lastrowid or 0)
        row = OutboxRow(rid, topic, payload, qos, retain, incident)
        if self.on_enqueue is not None:  # sees the message itself, not its envelope
            self.on_enqueue(OutboxRow(rid, topic, body, qos, retain, incident), at)
        if self._depth:
            self._queued.append(row)
        elif self.on_commit is not None:  # autocommit: already durable
            self.on_commit([row])
        return rid

    def pending(self, limit: int, after: int = 0) -> list[OutboxRow]:
        """Unsent messages in order, at most ``limit``, with id above ``after``."""
        rows = self.conn.execute(
            "SELECT id, topic, payload, qos, retain, incident FROM outbox "
            "WHERE sent_at IS NULL AND id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], int(r[3]), bool(r[4]), r[5]) for r in rows]

    def reseal_pending(self, reseal: Callable[[OutboxRow], str | None]) -> int:
        """Rewrite unsent payloads for which ``reseal(row)`` gives a new one; return how many.

        At start: rows queued before an upgrade (unsigned) or before a key rotation
        (signed with the old key) are signed again, or clients would drop them.
        """
        changed = 0
        with self.transaction() as c:
            for row in self.pending(1_000_000):
                new = reseal(row)
                if new is not None and new != row.payload:
                    c.execute("UPDATE outbox SET payload = ? WHERE id = ?", (new, row.id))
                    changed += 1
        return changed

    def changed_elsewhere(self) -> bool:
        """True if another connection committed since the last call (PRAGMA data_version).

        E.g. ``campusguard report --deliver`` queued a message in the outbox.
        """
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed

    def pending_count(self) -> int:
        """How many messages wait for the broker."""
        return int(
            self.conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        )

    def mark_acked(self, acked: Sequence[tuple[OutboxRow, float]]) -> None:
        """Record PUBACKs, each with the time it arrived (sets ``relayed_at`` once).

        Nothing waits for this commit's fsync (the next one, or the next checkpoint, takes
        it along): losing it to a power cut only means those messages are published again,
        with the same ids, which the protocol allows (at least once).
        """
        if not acked:
            return
        with self.transaction() as c:
            c.executemany(
                "UPDATE outbox SET sent_at = ? WHERE id = ?", [(t, r.id) for r, t in acked]
            )
            c.executemany(
                "UPDATE incidents SET relayed_at = ? WHERE id = ? AND relayed_at IS NULL",
                [(t, r.incident) for r, t in acked if r.incident],
            )
