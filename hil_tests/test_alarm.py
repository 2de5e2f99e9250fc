"""A school's alarm day, unit by unit: each scenario presses a fresh unit of one shared fleet.

Virtual: 10 units on 2 links (bus-a also carries a rogue transmitter), the gateway
in-process, a real Mosquitto, the police subscriber. With --port the scenarios a real
board can play run on the boards.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from hil_tests.conftest import Rig, VirtualRig
from protocol import Alarm, AlarmKind, Frame, MsgType, ProtocolError, ReplayGuard, encode, to_wire
from tests.support.timing import scaled, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLEET = {"rogues": ("bus-a",), "seed": 6}

ALARM_LEDS = {"sending", "received", "police_ack", "cancelled"}


async def test_press_reaches_the_police_within_a_second(rig: Rig) -> None:
    unit = await rig.take()
    await unit.press()
    alarm = await rig.police.expect_alarm(unit, within=1.0)
    assert alarm.get("kind") == "panic" and alarm.get("presses") == 1
    assert alarm.get("state") == "open" and alarm.get("link") == unit.link
    assert unit.pressed_at is not None
    print(f"\npress -> police: {(alarm.at - unit.pressed_at) * 1000:.1f} ms")
    await unit.expect_led("received")


async def test_duress_is_silent_at_the_unit_and_reaches_the_police_as_duress(rig: Rig) -> None:
    unit = await rig.take()
    hold = asyncio.create_task(unit.hold(unit.spec.long_press_ms / 1000 + 0.5))
    # the press is a panic on the leading edge; at long_press_ms it becomes duress
    await rig.police.expect_alarm(unit, within=1.0, kind="panic")
    duress = await rig.police.expect_alarm(
        unit, update="kind", kind="duress", within=unit.spec.long_press_ms / 1000 + 1.0
    )
    await hold
    assert duress.get("contact_id") == 121
    # the police acknowledge: a unit under duress still shows nothing
    asked = time.monotonic()
    await rig.police.ack(str(duress.get("incident")), by="Officer Li")
    await rig.police.expect_alarm(unit, update="police_ack", within=2.0, since=asked)
    leds, buzzer = unit.shown_since_mark()
    assert not ALARM_LEDS & set(leds), f"duress showed {leds}"
    assert set(buzzer) <= {"off"}, f"duress sounded {buzzer}"


async def test_chatter_gives_one_incident_and_one_fault(rig: Rig) -> None:
    unit = await rig.take()
    since = time.monotonic()  # a real board plays every scenario: its earlier incidents
    await unit.click(12, down_s=0.04, up_s=0.08)  # a bouncing contact, 12 closures
    police = rig.police

    def incidents() -> dict[str, int]:
        """Incidents with alarms since the first closure: their highest press counts."""
        out: dict[str, int] = {}
        for m in police.alarms(unit, update=None, since=since):
            iid = str(m.get("incident"))
            out[iid] = max(out.get(iid, 0), int(m.get("presses", 0)))
        return out

    await police.wait_for(
        lambda: 12 in incidents().values(), 5.0, "all 12 presses of the chattering unit"
    )
    assert len(incidents()) == 1, incidents()
    chatter = police.events("button_chatter", unit=unit, since=since)
    assert len(chatter) == 1  # queued before the last update


async def test_cancel_reaches_the_police_after_the_alarm(rig: Rig) -> None:
    unit = await rig.take()
    await unit.press()
    alarm = await rig.police.expect_alarm(unit, within=1.0)
    await unit.cancel()
    cancelled = await rig.police.expect_alarm(unit, update="cancelled", within=5.0)
    assert cancelled.get("incident") == alarm.get("incident")
    assert cancelled.get("state") == "cancelled" and cancelled.get("cancelled_at")
    await rig.police.expect_event("cancel", unit=unit, within=5.0, since=alarm.at)
    await unit.expect_led("cancelled")


async def test_police_acknowledgement_is_shown_on_the_unit(rig: Rig) -> None:
    unit = await rig.take()
    await unit.press()
    alarm = await rig.police.expect_alarm(unit, within=1.0)
    await unit.expect_led("received")
    asked = time.monotonic()
    await rig.police.ack(str(alarm.get("incident")), by="Officer Li", disposition="genuine")
    acked = await rig.police.expect_alarm(unit, update="police_ack", within=2.0, since=asked)
    assert acked.get("police_ack_by") == "Officer Li"
    await unit.expect_led("police_ack", within=3.0)
    await unit.expect_buzzer("police_ack", within=3.0)


async def test_unit_reboot_mid_send_delivers_once_and_never_reuses_a_counter(
    rig: Rig, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    unit = await rig.take()
    old_epoch = unit.vu.epoch
    fleet.unplug(unit.link)  # so that the alarm is surely still unsent at the power cut
    try:
        await unit.press()
        await unit.expect_led("sending")
        await unit.kill()  # power cut with the ALARM on flash, unacknowledged
    finally:
        fleet.plug(unit.link)
    sent = [f for h, f in fleet.heard(unit.id) if f.body.TYPE is MsgType.ALARM]
    assert sent and {(f.epoch, f.seq) for f in sent} == {(sent[0].epoch, sent[0].seq)}
    first = sent[0]
    assert first.epoch == old_epoch

    await unit.start()
    assert unit.vu.reloaded >= 1 and unit.vu.epoch is not None and unit.vu.epoch > first.epoch
    alarm = await police.expect_alarm(unit, within=5.0)
    assert str(alarm.get("incident")).endswith(f"-{first.epoch}-{first.seq}")

    await unit.press()  # a second press folds into the incident; it is also a barrier
    await police.expect_alarm(unit, update="presses", within=3.0)
    assert len(police.alarms(unit, update="new")) == 1
    after = [f for h, f in fleet.heard(unit.id) if h.at > alarm.at]
    reused = [f for f in after if f.epoch == first.epoch and f.seq != first.seq]
    assert not reused, f"counter of the old boot reused: {reused}"
    presses = [f for f in after if f.body.TYPE is MsgType.ALARM and f.epoch == unit.vu.epoch]
    assert presses, "the second press went out with the new boot's counter"


async def test_link_unplugged_and_back_loses_nothing(rig: Rig, virtual_only: None) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    unit = await rig.take(link="radio-b")
    fleet.unplug(unit.link)
    try:
        await unit.press()
        await unit.expect_led("sending")

        # the cable stays out until the unit has sent its alarm three times into it
        def lost_alarms() -> int:
            return sum(
                1 for h, f in fleet.heard(unit.id) if not h.passed and f.body.TYPE is MsgType.ALARM
            )

        async with asyncio.timeout(scaled(5.0)):
            while lost_alarms() < 3:
                await asyncio.sleep(0.02)
        assert not police.alarms(unit)
    finally:
        fleet.plug(unit.link)
    plugged = time.monotonic()
    await police.expect_alarm(unit, within=5.0, since=plugged)
    await unit.expect_led("received", within=2.0)


def _forged(addr: int, seq: int) -> bytes:
    frame = Frame(addr, 77, seq, Alarm(AlarmKind.PANIC, 1, 1000))
    return to_wire(encode(frame, secrets.token_bytes(32)))


async def test_forged_and_replayed_frames_are_rejected_and_counted(
    rig: Rig, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    victim = await rig.take(link="bus-a")
    witness = fleet.guard  # the guard post's alarm button, on the same bus
    rogue = fleet.rogues["bus-a"]

    # the victim's alarm, as a scanner on the bus records it
    await victim.press()
    await police.expect_alarm(victim, within=1.0)
    recorded = [h.wire for h, f in fleet.heard(victim.id) if f.body.TYPE is MsgType.ALARM]
    assert recorded
    old = next(f for _, f in fleet.heard(victim.id) if f.body.TYPE is MsgType.ALARM)
    # a week later: the victim has booted 8 times since, and the gateway heard each boot
    for _ in range(8):
        await victim.reboot()

        def booted(epoch: int = victim.vu.epoch or 0) -> bool:
            return any(f.epoch == epoch for _, f in fleet.heard(victim.id))

        await until(booted)
    await until(lambda: _too_old(fleet.gateway.guard, old))

    before = fleet.rejects()
    start = time.monotonic()
    rogue.send(_forged(victim.addr, 1))  # the victim's address, the wrong key
    rogue.send(_forged(victim.addr, 2))
    rogue.send(_forged(4000, 1))  # an address nobody registered
    rogue.send(recorded[0])  # the recorded alarm, replayed
    rogue.send(b"\x55\xaa\x13\x37" * 8 + b"\x00")  # noise
    await witness.press()  # a barrier: frames on one link are taken in order
    await police.expect_alarm(witness, within=1.0)
    after = fleet.rejects()
    grew = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert grew.get("forged", 0) >= 2, grew
    assert grew.get("unknown_unit", 0) >= 1, grew
    assert grew.get("replayed", 0) >= 1, grew
    assert not police.alarms(victim, since=start)
    assert not [m for m in police.alarms(since=start) if m.unit != witness.id]
    rogue.drain()


def _too_old(guard: ReplayGuard, frame: Frame) -> bool:
    try:
        guard.check(frame.unit, frame.epoch, frame.seq)
    except ProtocolError:
        return True
    return False
