"""Counters across reboots: a pending alarm survives a power cut, byte for byte."""

from __future__ import annotations

from protocol import HeartbeatFlags, MsgType
from tests.firmware.conftest import UnitFactory


async def test_pending_alarm_resent_after_kill_with_original_counter(
    make_unit: UnitFactory,
) -> None:
    vu, gw = await make_unit(heartbeat_ms=300)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.press()
    alarm = await gw.next(MsgType.ALARM, timeout=1.0)
    await vu.kill()  # kill -9 while the alarm is pending (never ACKed)
    first_epoch = vu.epoch
    assert first_epoch is not None
    before = len(gw.frames)
    await vu.restart()
    assert vu.reloaded == 1
    assert vu.epoch is not None and vu.epoch > first_epoch  # epoch stored before sending
    again = await gw.next(MsgType.ALARM, after=before, timeout=1.0)
    assert again.raw == alarm.raw  # same counter, same MAC: never re-signed
    gw.ack(again.frame)
    hb = await gw.next(MsgType.HEARTBEAT, after=before)
    assert hb.frame.epoch == vu.epoch
    # no counter was ever used twice by different frames
    seen: dict[tuple[int, int], bytes] = {}
    for a in gw.frames:
        key = (a.frame.epoch, a.frame.seq)
        assert seen.setdefault(key, a.raw) == a.raw
    # once ACKed (the heartbeat says nothing is pending), a reboot does not send it again
    await gw.next(MsgType.HEARTBEAT, pred=lambda f: not f.body.flags & HeartbeatFlags.ALARM_PENDING)
    await vu.restart()
    assert vu.reloaded == 0


async def test_epoch_grows_every_boot(make_unit: UnitFactory) -> None:
    vu, _ = await make_unit()
    epochs = [vu.epoch]
    for _ in range(2):
        await vu.restart()
        epochs.append(vu.epoch)
    assert epochs == sorted(set(epochs)) and len(epochs) == 3
