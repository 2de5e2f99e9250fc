"""The DC-09 transmitter: the ARC queue's messages to a receiving centre over TCP.

One :class:`Transmitter` per alarm receiving centre (ARC). It sends the oldest waiting
message of :class:`gateway.arc.queue.ArcQueue`, one at a time, and waits for the reply:

- ACK with the message's sequence and account (encrypted when we encrypt, then dated
  within :data:`ACK_AGE_LIMIT_S` of the receiver's time): delivered. Any other ACK is
  logged and ignored; the wait goes on until the timeout.
- NAK carrying the receiver's time: our timestamp was outside its window. The offset is
  kept for that path and the message goes again at once (at most ``nak_limit`` times).
- DUH: the receiver understood the frame, not the message. Repeated with back-off and
  given up after ``duh_limit`` (left in the journal, reported as ``arc_rejected``).
- No reply, a closed connection, a garbage reply: a failure of that path. After
  ``failover_after`` failures in a row the path is down (``arc_path`` event, qualifier 1)
  and the next one (a backup receiver) takes the traffic. A down path is probed by its
  NULL supervision (every ``retry_s`` at most), or without NULLs by the next message after
  ``retry_s``, and comes back (qualifier 3) on an ACK.

Each path is supervised on its own with NULL messages every ``null_interval_s`` of
silence, so the ARC sees a dead path and so do we. DC-09 timestamps come from ``wall``
(the real UTC clock, also when the gateway's clock runs fast in the demo). Reads are
bounded (:data:`gateway.arc.dc09.MAX_FRAME`) and timed out: a receiver can neither crash
nor stall the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.arc import dc09
from gateway.arc.dc09 import Frame, Token
from gateway.arc.queue import ArcQueue, Queued
from gateway.core.errors import DC09Error
from gateway.pipeline.ports import Outlet

log = logging.getLogger(__name__)

SIA_CODES: dict[int, tuple[str, str]] = {
    # Contact ID event -> SIA DC-03 codes (new, restore) for receivers that want SIA-DCS
    100: ("MA", "MH"),
    102: ("YS", "YK"),
    110: ("FA", "FH"),
    120: ("PA", "PH"),
    121: ("HA", "HH"),
    122: ("HA", "HH"),
    150: ("UA", "UH"),
    300: ("YX", "YZ"),
    301: ("AT", "AR"),
    302: ("YT", "YR"),
    305: ("YW", "YW"),
    307: ("YX", "YZ"),
    350: ("YC", "YK"),
    351: ("YC", "YK"),
    352: ("YC", "YK"),
    354: ("YC", "YK"),
    380: ("UT", "UJ"),
    381: ("US", "UR"),
    383: ("TA", "TR"),
    406: ("OC", "OC"),
    461: ("JA", "JA"),
    601: ("RX", "RX"),
    602: ("RP", "RP"),
}
"""SIA codes for the Contact ID events the gateway reports (others go as ``UX``)."""

ACK_AGE_LIMIT_S = 600.0
"""An encrypted ACK dated further than this from the receiver's time is taken for a replay."""
PATH_CODES = (351, 352)
"""Contact ID codes of a lost path: 351 the primary receiver, 352 a backup."""
REJECTED_CODE = 354
"""Contact ID code raised when the ARC refused a message for good (DUH)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One receiver of an ARC: where it listens and its receiver/line numbers."""

    host: str
    port: int
    receiver: str = "0"
    line: str = "0"
    key: bytes | None = field(default=None, repr=False)  # AES key; None: plain text

    @property
    def name(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ArcSettings:
    """One ARC: its receivers (primary first) and timings."""

    name: str
    paths: tuple[Endpoint, ...]
    token: Token = Token.ADM_CID
    ack_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    null_interval_s: float = 60.0  # 0: no NULL supervision
    failover_after: int = 3
    retry_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    nak_limit: int = 3
    duh_limit: int = 3

    def __post_init__(self) -> None:
        """Refuse settings the transmitter cannot run with."""
        if not self.paths:
            raise ValueError(f"ARC {self.name}: no receiver")
        if self.token not in (Token.ADM_CID, Token.SIA_DCS):
            raise ValueError(f"ARC {self.name}: protocol ADM-CID or SIA-DCS, not {self.token}")


class Outcome(Enum):
    """How one exchange with a receiver ended."""

    ACK = "ack"
    NAK = "nak"
    DUH = "duh"
    FAILED = "failed"
    GIVEN_UP = "given_up"  # the message is left in the journal, the queue moves on


class _Path:
    """One receiver: its connection, clock offset and health."""

    def __init__(self, endpoint: Endpoint, index: int) -> None:
        self.endpoint = endpoint
        self.index = index
        self.lock = asyncio.Lock()  # one frame in flight per connection
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.offset = 0.0  # receiver time minus our real UTC time, learnt from NAKs
        self.failures = 0
        self.down = False
        self.retry_at = 0.0  # monotonic: when a down path is tried again
        self.last_used = 0.0  # monotonic: last exchange that got any reply

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Transmitter:
    """Sends one ARC's queue over DC-09/TCP with failover and NULL supervision."""

    def __init__(
        self,
        settings: ArcSettings,
        queue: ArcQueue,
        *,
        outlet: Outlet | None = None,
        site: str = "",
        null_account: str = "0000",
        wall: Callable[[], float] = time.time,
        now: Callable[[], float] | None = None,
    ) -> None:
        """``outlet`` receives ``arc_path`` and ``arc_rejected`` events for ``site``.

        NULL messages carry ``null_account`` when nothing waits. ``wall`` is the real UTC
        clock for DC-09 timestamps; ``now`` the gateway's clock for events (default wall).
        """
        self.settings = settings
        self.queue = queue
        self.outlet = outlet
        self.site = site
        self.null_account = null_account
        self.wall = wall
        self.now = now or wall
        self.paths = [_Path(e, i) for i, e in enumerate(settings.paths)]
        self.counts: Counter[str] = Counter()  # acked, nak, duh, timeout, garbage, ...
        self.ack_s: list[float] = []  # send -> ACK of queued messages (real seconds)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every exchange (tests, benches)."""
        while not predicate():
            ev = self._progress
            await ev.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def wake(self) -> None:
        """New messages were committed to the queue."""
        self._wake.set()

    def state(self) -> dict[str, Any]:
        """For ``campusguard status``: each receiver's health, and the counters."""
        return {
            "arc": self.settings.name,
            "paths": [
                {
                    "receiver": p.endpoint.name,
                    "up": not p.down,
                    "failures": p.failures,
                    "clock_offset_s": round(p.offset, 1),
                }
                for p in self.paths
            ],
            "counts": dict(self.counts),
        }

    def path_down(self, index: int) -> bool:
        """Whether path ``index`` (0 = primary) is considered dead."""
        return self.paths[index].down

    async def run(self) -> None:
        """Send and supervise until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._sender(), name=f"arc-{self.settings.name}")
                if self.settings.null_interval_s > 0:
                    for p in self.paths:
                        tg.create_task(self._supervise(p), name=f"arc-null-{p.endpoint.name}")
        finally:
            for p in self.paths:
                p.close()

    # -- queue ----------------------------------------------------------------------------

    async def _sender(self) -> None:
        failures = 0
        while True:
            try:
                row = self.queue.head(self.settings.name)
                if row is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                path = self._pick()
                if path.down and path.retry_at > time.monotonic():
                    # every path is down: wait for the first one due again (or its NULL)
                    await asyncio.sleep(path.retry_at - time.monotonic())
                outcome = await self._send_row(path, row)
            except sqlite3.Error as exc:  # the journal's trouble is the watchdog's to judge
                log.error(
                    "ARC %s: the queue cannot be read or written: %s", self.settings.name, exc
                )
                outcome, path = Outcome.FAILED, None
            self._progressed()
            if outcome in (Outcome.ACK, Outcome.GIVEN_UP):
                failures = 0
                continue
            failures = min(failures + 1, 16)  # 2**15 x backoff_s is past any backoff_max_s
            nxt = self._pick()
            if path is None or nxt is path or nxt.down:
                delay = min(
                    self.settings.backoff_max_s, self.settings.backoff_s * 2 ** (failures - 1)
                )
                await asyncio.sleep(delay)

    def _pick(self) -> _Path:
        now = time.monotonic()
        up = [p for p in self.paths if not p.down]
        if up and self.settings.null_interval_s > 0:
            # down receivers are probed by their NULLs, never by holding back an alarm
            return up[0]
        for p in self.paths:
            if not p.down or now >= p.retry_at:
                return p
        return min(self.paths, key=lambda p: p.retry_at)

    async def _send_row(self, path: _Path, row: Queued) -> Outcome:
        s = self.settings
        try:
            data = self._data(row)
        except DC09Error as exc:  # nothing a receiver could take: record it, move on
            log.error("ARC %s: message %d cannot be sent: %s", s.name, row.id, exc)
            self.queue.give_up(row.id, self.wall(), str(exc))
            self.counts["given_up"] += 1
            self._event("arc_rejected", REJECTED_CODE, 1, {"message": row.id, "reason": str(exc)})
            return Outcome.GIVEN_UP
        first = row.seq is None
        seq = self.queue.take_seq(s.name, row.id) if row.seq is None else row.seq
        for i in range(s.nak_limit + 1):
            if i or not first:  # take_seq counted the first send
                self.queue.attempt(row.id)
            t0 = time.perf_counter()
            outcome = await self._exchange(path, s.token, seq, row.account, data)
            if outcome is Outcome.ACK:
                self.ack_s.append(time.perf_counter() - t0)
                self.queue.acked(row.id, self.wall(), path.endpoint.name)
                self.counts["acked"] += 1
                return outcome
            if outcome is Outcome.DUH:
                if self.queue.duh(row.id) >= s.duh_limit:
                    log.error(
                        "ARC %s: message %d (%s) refused %d times with DUH: given up",
                        s.name,
                        row.id,
                        data,
                        s.duh_limit,
                    )
                    self.queue.give_up(row.id, self.wall(), "DUH")
                    self.counts["given_up"] += 1
                    self._event("arc_rejected", REJECTED_CODE, 1, {"message": row.id})
                    return Outcome.GIVEN_UP
                return outcome
            if outcome is not Outcome.NAK:
                return outcome
        log.warning("ARC %s: %d NAKs in a row for message %d", s.name, s.nak_limit + 1, row.id)
        self._failed(path, "NAK")
        return Outcome.FAILED

    def _data(self, row: Queued) -> str:
        if self.settings.token is Token.SIA_DCS:
            new, restore = SIA_CODES.get(row.code, ("UX", "UX"))
            code = restore if row.qualifier == 3 else new
            return dc09.sia_dcs(row.account, code, row.grp, row.zone)
        return dc09.adm_cid(row.account, row.qualifier, row.code, row.grp, row.zone)

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self, path: _Path) -> None:
        interval = self.settings.null_interval_s
        while True:
            idle = time.monotonic() - path.last_used
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                account = self._null_account()
                seq = self.queue.take_seq(self.settings.name)
            except sqlite3.Error as exc:
                log.error("ARC %s: no sequence number for a NULL: %s", self.settings.name, exc)
                await asyncio.sleep(interval)
                continue
            outcome = await self._exchange(path, Token.NULL, seq, account, "")
            self._progressed()
            if outcome is not Outcome.ACK:
                await asyncio.sleep(min(interval, self.settings.retry_s))

    def _null_account(self) -> str:
        row = self.queue.head(self.settings.name)
        return row.account if row is not None else self.null_account

    # -- one exchange ---------------------------------------------------------------------

    async def _exchange(
        self, path: _Path, token: Token, seq: int, account: str, data: str
    ) -> Outcome:
        """Send one frame on ``path`` and classify the reply."""
        async with path.lock:
            outcome, why = await self._exchange_locked(path, token, seq, account, data)
        if outcome is Outcome.FAILED:
            self._failed(path, why)
        else:
            path.last_used = time.monotonic()
            if outcome is Outcome.ACK:
                self._ok(path)
        self.counts[f"{token.value}:{outcome.value}"] += 1
        return outcome

    async def _exchange_locked(
        self, path: _Path, token: Token, seq: int, account: str, data: str
    ) -> tuple[Outcome, str]:
        s = self.settings
        ep = path.endpoint
        fresh = path.writer is None
        for _ in range(2):  # a reused connection the receiver closed meanwhile: once more
            connecting = path.reader is None or path.writer is None
            try:
                if path.reader is None or path.writer is None:
                    async with asyncio.timeout(s.connect_timeout_s):
                        path.reader, path.writer = await asyncio.open_connection(
                            ep.host, ep.port, limit=dc09.MAX_FRAME
                        )
                    fresh = True
                    connecting = False
                frame = Frame(
                    token,
                    seq,
                    account,
                    line=ep.line,
                    receiver=ep.receiver,
                    data=data,
                    timestamp=self.wall() + path.offset,
                )
                path.writer.write(frame.encode(ep.key))
                await path.writer.drain()
                return await self._reply(path, path.reader, seq, account)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                path.close()
                if fresh:
                    return Outcome.FAILED, f"connection lost: {exc or type(exc).__name__}"
                fresh = True
            except TimeoutError:
                path.close()
                self.counts["timeout"] += 1
                return Outcome.FAILED, "connect timeout" if connecting else "no reply in time"
            except OSError as exc:
                path.close()
                return Outcome.FAILED, f"cannot connect: {exc.strerror or exc}"
        return Outcome.FAILED, "connection lost"

    async def _reply(
        self, path: _Path, reader: asyncio.StreamReader, seq: int, account: str
    ) -> tuple[Outcome, str]:
        s = self.settings
        async with asyncio.timeout(s.ack_timeout_s):
            while True:
                try:
                    raw = await reader.readuntil(b"\r")
                except asyncio.LimitOverrunError:
                    self.counts["garbage"] += 1
                    path.close()
                    return Outcome.FAILED, f"reply over {dc09.MAX_FRAME} bytes"
                try:
                    reply = dc09.decode(raw, path.endpoint.key)
                except DC09Error as exc:
                    self.counts["garbage"] += 1
                    log.warning("ARC %s: bad reply from %s: %s", s.name, path.endpoint.name, exc)
                    path.close()  # framing is lost: start over on a fresh connection
                    return Outcome.FAILED, f"bad reply: {exc}"
                if reply.token is Token.ACK:
                    if (
                        reply.seq == seq
                        and reply.account == account.upper()
                        and reply.encrypted == (path.endpoint.key is not None)
                    ):
                        if self._fresh(path, reply):
                            return Outcome.ACK, ""
                        self.counts["ack_stale"] += 1
                        log.warning(
                            "ARC %s: %s ACK for %04d dated %s: a replay? ignored",
                            s.name,
                            path.endpoint.name,
                            seq,
                            reply.timestamp,
                        )
                        continue
                    self.counts["ack_mismatch"] += 1
                    log.warning(
                        "ARC %s: %s ACKed seq %04d account %s (encrypted %s), we wait for "
                        "%04d %s: ignored",
                        s.name,
                        path.endpoint.name,
                        reply.seq,
                        reply.account,
                        reply.encrypted,
                        seq,
                        account,
                    )
                    continue
                if reply.token is Token.NAK:
                    self.counts["nak"] += 1
                    if reply.timestamp is None:
                        return Outcome.FAILED, "NAK without a timestamp"
                    path.offset = reply.timestamp - self.wall()
                    log.warning(
                        "ARC %s: %s NAKed our time: its clock is %+.1f s from ours",
                        s.name,
                        path.endpoint.name,
                        path.offset,
                    )
                    return Outcome.NAK, ""
                if reply.token is Token.DUH:
                    self.counts["duh"] += 1
                    log.error(
                        "ARC %s: %s answered DUH to seq %04d", s.name, path.endpoint.name, seq
                    )
                    return Outcome.DUH, ""
                self.counts["garbage"] += 1
                log.warning(
                    "ARC %s: unexpected %s from %s", s.name, reply.token, path.endpoint.name
                )

    def _fresh(self, path: _Path, reply: Frame) -> bool:
        """An encrypted ACK must be dated near the receiver's time as we know it.

        Sequence numbers wrap every 9999 messages (a week of NULLs at 60 s), so an ACK
        recorded once could otherwise be replayed later for a new message with the same
        number. The margin is wide: a receiver that never NAKed may have a clock minutes
        off, and refusing its genuine ACKs would hold back every alarm.
        """
        if path.endpoint.key is None:
            return True  # a plain ACK carries nothing to check (and anyone can forge it)
        if reply.timestamp is None:
            return False
        return abs(reply.timestamp - (self.wall() + path.offset)) <= ACK_AGE_LIMIT_S

    # -- health ---------------------------------------------------------------------------

    def _failed(self, path: _Path, why: str) -> None:
        path.failures += 1
        self.counts["failures"] += 1
        log.warning(
            "ARC %s: %s failed (%d in a row): %s",
            self.settings.name,
            path.endpoint.name,
            path.failures,
            why,
        )
        if path.down:
            path.retry_at = time.monotonic() + self.settings.retry_s
        elif path.failures >= self.settings.failover_after:
            path.down = True
            path.retry_at = time.monotonic() + self.settings.retry_s
            log.error("ARC %s: path %s is down: %s", self.settings.name, path.endpoint.name, why)
            self._path_event(path, 1, why)

    def _ok(self, path: _Path) -> None:
        path.failures = 0
        if path.down:
            path.down = False
            log.info("ARC %s: path %s is back", self.settings.name, path.endpoint.name)
            self._path_event(path, 3, "")

    def _path_event(self, path: _Path, qualifier: int, why: str) -> None:
        code = PATH_CODES[0] if path.index == 0 else PATH_CODES[1]
        detail = {"arc": self.settings.name, "receiver": path.endpoint.name, "path": path.index}
        if why:
            detail["reason"] = why
        self._event("arc_path", code, qualifier, detail)

    def _event(self, kind: str, code: int, qualifier: int, detail: dict[str, object]) -> None:
        if self.outlet is None:
            return
        try:
            self.outlet.event(
                site=self.site,
                kind=kind,
                at=self.now(),
                code=code,
                qualifier=qualifier,
                detail={"arc": self.settings.name, **detail},
            )
        except Exception:  # the path state is what matters; the journal logs its own error
            log.exception("ARC %s: cannot journal %s", self.settings.name, kind)

    async def aclose(self) -> None:
        """Close every connection."""
        for p in self.paths:
            w = p.writer
            p.close()
            if w is not None:
                with contextlib.suppress(OSError):
                    await w.wait_closed()
