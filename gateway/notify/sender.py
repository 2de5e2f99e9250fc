"""Sends the SMS queue through the modem: retries, status reports, the next person.

For the person being tried, each part is sent with AT+CMGS; a failed send is retried
``retries`` times (``retry_s`` apart, growing), then the next person is tried. A sent
message waits for the network's status report up to ``delivery_timeout_s``: delivered
ends it; a report of failure, or none in time, moves on to the next person. When nobody
is left the message is ``failed`` and ``on_failed`` raises an event for the duty room.
Every step is a journal transaction, so a restart resumes where it stood (a message
being sent when the power went is sent again: a duplicate SMS, never a lost one).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from gateway.core.clock import Clock
from gateway.core.errors import ModemError
from gateway.notify.modem import Modem
from gateway.notify.pdu import StatusReport, encode
from gateway.notify.queue import Sms, SmsQueue

log = logging.getLogger(__name__)

RETRIES = 3
RETRY_S = 30.0
DELIVERY_TIMEOUT_S = 600.0
IDLE_S = 1.0  # longest wait between two looks at the queue


@contextmanager
def _tx(conn: sqlite3.Connection) -> Iterator[None]:
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SmsSender:
    """Service task (:meth:`run`) that works the queue through one modem."""

    def __init__(
        self,
        queue: SmsQueue,
        modem: Modem,
        clock: Clock,
        *,
        retries: int = RETRIES,
        retry_s: float = RETRY_S,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
        on_failed: Callable[[Sms, float], None] = lambda sms, at: None,
        transaction: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        """``on_failed(sms, at)`` is told of a message nobody on its ladder received.

        ``transaction``: the journal's (``Store.transaction``, durable with the rest);
        by default a plain one on the queue's connection.
        """
        self._tx = transaction or (lambda: _tx(queue.conn))
        self.queue = queue
        self.modem = modem
        self.clock = clock
        self.retries = retries
        self.retry_s = retry_s
        self.delivery_timeout_s = delivery_timeout_s
        self.on_failed = on_failed
        self._wake = asyncio.Event()
        self._ref = 0
        self._early: dict[int, StatusReport] = {}
        modem.on_report = self.on_report
        self.sent = 0
        self.delivered = 0
        self.errors = 0

    def wake(self) -> None:
        """Something was queued: look now."""
        self._wake.set()

    async def run(self) -> None:
        """Keep the modem's port open and work the queue, for ever."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.modem.run(), name="modem-port")
            while True:
                # a port that is not open costs no attempt: the messages wait for it
                for sms in self.queue.due(self.clock.now()) if self.modem.link.up else ():
                    try:
                        await self._act(sms)
                    except (sqlite3.Error, ValueError, KeyError) as exc:
                        # the journal refused a step, or a bad row: this message waits for the
                        # next round, the others (and the gateway) go on
                        log.error("SMS %d: %s: %s", sms.id, type(exc).__name__, exc)
                        self.errors += 1
                nxt = self.queue.next_due()
                wait = IDLE_S if nxt is None else min(IDLE_S, max(0.0, nxt - self.clock.now()))
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _act(self, sms: Sms) -> None:
        self._early.clear()  # reports of earlier sends that no message claimed
        sms = self.queue.get(sms.id)  # a report may have come while we were sending
        now = self.clock.now()
        if sms.state == "sent":
            self._next_person(sms, now, f"no status report from {sms.to.phone}")
            return
        if sms.state != "queued" or sms.next_at > now:
            return
        self._ref = (self._ref + 1) % 256
        mrs: list[int] = []
        try:
            for part in encode(sms.to.phone, sms.text, self._ref):
                mrs.append(await self.modem.send(part))
        except ModemError as exc:
            now = self.clock.now()
            attempts = sms.attempts + 1
            log.warning("SMS %d to %s: %s (attempt %d)", sms.id, sms.to.name, exc, attempts)
            if attempts <= self.retries:
                with self._tx():
                    self.queue.update(
                        sms, now, f"send to {sms.to.phone} failed: {exc}",
                        attempts=attempts, next_at=now + self.retry_s * attempts,
                    )  # fmt: skip
            else:
                self._next_person(sms, now, f"send to {sms.to.phone} failed: {exc}")
            return
        now = self.clock.now()
        self.sent += 1
        with self._tx():
            self.queue.update(
                sms, now, f"sent to {sms.to.phone} ({sms.to.name}), refs {mrs}",
                state="sent", mrs=mrs, delivered=[], next_at=now + self.delivery_timeout_s,
            )  # fmt: skip
        log.info("SMS %d sent to %s (%s)", sms.id, sms.to.name, sms.reason)
        for mr in mrs:
            early = self._early.pop(mr, None)
            if early is not None:
                self.on_report(early)

    def on_report(self, report: StatusReport) -> None:
        """A status report from the network (``+CDS``)."""
        sms = self.queue.waiting_for(report.mr)
        if sms is None:  # it may overtake the +CMGS answer's commit: kept for a moment
            self._early[report.mr] = report
            while len(self._early) > 32:
                self._early.pop(next(iter(self._early)))
            return
        now = self.clock.now()
        if report.delivered:
            done = tuple(sorted({*sms.delivered, report.mr}))
            with self._tx():
                if set(done) >= set(sms.mrs):
                    self.queue.update(
                        sms, now, f"delivered to {sms.to.phone}",
                        state="delivered", delivered=done, done_at=now,
                    )  # fmt: skip
                    self.delivered += 1
                    log.info("SMS %d delivered to %s", sms.id, sms.to.name)
                else:
                    self.queue.update(sms, now, f"part {report.mr} delivered", delivered=done)
        elif report.final:
            self._next_person(
                sms, now, f"network gave up on {sms.to.phone} (TP-ST {report.status:#04x})"
            )
        self._wake.set()

    def _next_person(self, sms: Sms, now: float, why: str) -> None:
        with self._tx():
            if sms.person + 1 < len(sms.people):
                nxt = sms.people[sms.person + 1]
                self.queue.update(
                    sms, now, f"{why}; next: {nxt.name}",
                    state="queued", person=sms.person + 1, attempts=0, mrs=[], delivered=[],
                    next_at=now,
                )  # fmt: skip
                log.warning("SMS %d: %s; trying %s", sms.id, why, nxt.name)
                self._wake.set()
                return
            self.queue.update(sms, now, f"{why}; nobody left", state="failed", done_at=now)
        log.error("SMS %d (%s): nobody on the ladder reached: %s", sms.id, sms.reason, why)
        self.on_failed(self.queue.get(sms.id), now)  # its event has a transaction of its own
