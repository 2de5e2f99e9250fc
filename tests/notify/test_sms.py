"""SMS through a GSM modem on a real pty (issue 17 item 7): PDU mode, UCS2 Chinese,
retries, late delivery reports, the next person, a restart in between."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.core.clock import SystemClock
from gateway.notify.modem import Modem
from gateway.notify.pdu import decode_status_report, encode, normalise_number, status_report
from gateway.notify.queue import Person, Sms, SmsQueue
from gateway.notify.sender import SmsSender
from tests.support.gsmmodem import FakeModem

LEAD = Person("Zhang Wei", "+8613800000100")
DEPUTY = Person("Li Na", "+8613800000101")
TEXT = "北门岗哨 15 分钟未签到, 请立即查看. Hexi Road Primary"


def test_pdu_is_ucs2_with_a_status_report_request_and_splits_long_text() -> None:
    (one,) = encode(LEAD.phone, TEXT, 1)
    assert one.hex.startswith("0031000D91683108000001F00008AA")  # SRR, intl number, UCS2
    assert one.tpdu_len == len(bytes.fromhex(one.hex)) - 1
    parts = encode(LEAD.phone, "报警" * 80, 9)
    assert len(parts) == 3 and all(p.hex[2:4] == "71" for p in parts)  # UDHI set
    report = decode_status_report(status_report(42, LEAD.phone, 0))
    assert (report.mr, report.recipient, report.delivered) == (42, LEAD.phone, True)
    assert normalise_number("+86 138 0000 0100") == LEAD.phone
    with pytest.raises(ValueError):
        normalise_number("call Zhang")


@contextlib.asynccontextmanager
async def sender_on_pty(
    tmp_path: Path, db: sqlite3.Connection, failed: list[Sms], **kw: float
) -> AsyncIterator[tuple[FakeModem, SmsSender]]:
    fake = FakeModem(tmp_path / f"ttyGSM{len(list(tmp_path.glob('ttyGSM*')))}")
    sender = SmsSender(
        SmsQueue(db), Modem(str(fake.path)), SystemClock(),
        on_failed=lambda sms, at: failed.append(sms), **kw,
    )  # fmt: skip
    task = asyncio.create_task(sender.run())
    try:
        yield fake, sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        fake.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """For a journal row there is no event to wait on: poll it."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def state(db: sqlite3.Connection, sms_id: int) -> str:
    return str(db.execute("SELECT state FROM sms_queue WHERE id = ?", (sms_id,)).fetchone()[0])


async def test_sms_is_sent_in_pdu_mode_and_delivered_late(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = SmsQueue(db)
    failed: list[Sms] = []
    async with sender_on_pty(tmp_path, db, failed) as (fake, sender):
        sid = queue.add(site="s", people=[LEAD, DEPUTY], text=TEXT, reason="escalation",
                        ref="north-gate", at=SystemClock().now())  # fmt: skip
        assert sid is not None
        sender.wake()
        await fake.wait_for(lambda: fake.sent)
        assert fake.sent[0][:2] == (LEAD.phone, TEXT)  # Chinese, intact, through UCS2
        assert fake.commands[:4] == ["ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,1,0"]
        await until(lambda: state(db, sid) == "sent")
        fake.deliver(LEAD.phone)  # late: the phone was off for a while
        await until(lambda: state(db, sid) == "delivered")
        assert len(fake.sent) == 1 and not failed


async def test_retries_then_the_next_person_then_failed(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = SmsQueue(db)
    failed: list[Sms] = []
    async with sender_on_pty(
        tmp_path, db, failed, retries=2, retry_s=0.05, delivery_timeout_s=0.3
    ) as (fake, sender):
        fake.plan = {LEAD.phone: "cms", DEPUTY.phone: "silent"}
        sid = queue.add(site="s", people=[LEAD, DEPUTY], text="tamper", reason="tamper",
                        ref="shop-a", at=SystemClock().now())  # fmt: skip
        assert sid is not None
        sender.wake()
        await until(lambda: state(db, sid) == "failed")
        assert fake.cmgs_tries[LEAD.phone] == 3  # the first try and two retries
        assert [n for n, _, _ in fake.sent] == [DEPUTY.phone]  # then the deputy
        assert [s.id for s in failed] == [sid]
        what = [w for _, w in queue.history(sid)]
        assert any("no status report" in w for w in what)


async def test_a_failure_report_moves_on_at_once(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = SmsQueue(db)
    async with sender_on_pty(tmp_path, db, [], delivery_timeout_s=600) as (fake, sender):
        fake.plan = {LEAD.phone: "fail_report"}
        sid = queue.add(site="s", people=[LEAD, DEPUTY], text="x", reason="low_battery",
                        ref="u", at=SystemClock().now())  # fmt: skip
        assert sid is not None
        sender.wake()
        await fake.wait_for(lambda: [n for n, _, _ in fake.sent] == [LEAD.phone, DEPUTY.phone])
        fake.deliver(DEPUTY.phone)
        await until(lambda: state(db, sid) == "delivered")


async def test_a_restart_loses_no_message(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = SmsQueue(db)
    sid = queue.add(site="s", people=[LEAD], text="offline 2 h", reason="offline", ref="u",
                    at=SystemClock().now())  # fmt: skip
    assert sid is not None
    # the modem is unplugged: nothing answers on the first gateway run
    failed: list[Sms] = []
    db.close()
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)  # the gateway restarts
    async with sender_on_pty(tmp_path, db, failed) as (fake, sender):
        sender.wake()
        await fake.wait_for(lambda: fake.sent)
        fake.deliver(LEAD.phone)
        await until(lambda: state(db, sid) == "delivered")


def test_cancel_withdraws_only_what_has_not_gone(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = SmsQueue(db)
    a = queue.add(site="s", people=[LEAD], text="a", reason="offline", ref="u", at=0,
                  due_at=7200, cancel_key="offline:u")  # fmt: skip
    assert a is not None and queue.cancel("offline:u", 10) == 1
    assert state(db, a) == "cancelled" and queue.due(10_000) == []
    assert queue.add(site="s", people=[], text="a", reason="r", ref=None, at=0) is None


class RefusingQueue(SmsQueue):
    """The journal refuses the first state change (disk full, say)."""

    refused = 0

    def update(self, *a: object, **kw: object) -> None:
        if not self.refused:
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full (test)")
        super().update(*a, **kw)  # type: ignore[arg-type]


async def test_a_journal_error_holds_one_message_not_the_sender(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    queue = RefusingQueue(db)
    fake = FakeModem(tmp_path / "ttyGSM0")
    sender = SmsSender(queue, Modem(str(fake.path)), SystemClock())
    task = asyncio.create_task(sender.run())
    try:
        now = SystemClock().now()
        first = queue.add(site="s", people=[LEAD], text="a", reason="r", ref=None, at=now)
        second = queue.add(site="s", people=[DEPUTY], text="b", reason="r", ref=None, at=now)
        sender.wake()
        await until(lambda: state(db, second or 0) == "sent" and state(db, first or 0) == "sent")
        assert sender.errors == 1 and not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        fake.close()
