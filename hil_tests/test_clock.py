"""Time-based rules on the accelerated clock: a silent unit, a missed guard check-in.

The gateway runs 60 times faster than real time (ScaledClock); the units live on the same
time (their heartbeat every 10 s of gateway time is 167 ms of real time), so the register
reads as in service: offline after 3.5 missed heartbeats, check-in every 5 minutes with
1 minute of grace, the ladder at 0, 1 and 2 minutes.
"""

from __future__ import annotations

import time

import pytest

from hil_tests.conftest import HIL_PLAN, Rig, VirtualRig

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPEED = 60.0
FLEET = {
    "clock_speed": SPEED,
    "firmware": {"heartbeat_ms": int(HIL_PLAN.heartbeat_s * 1000 / SPEED), "link_lost_ms": 60000},
    "seed": 3,
}


def real_s(gateway_s: float) -> float:
    """Real seconds for ``gateway_s`` of gateway time."""
    return gateway_s / SPEED


async def test_unit_going_silent_is_reported_offline_then_online(
    rig: Rig, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    unit = await rig.take()
    police = rig.police
    silent_from = time.monotonic()
    await unit.kill()  # its power supply fails
    window = (HIL_PLAN.missed_heartbeats + 0.5) * HIL_PLAN.heartbeat_s
    offline = await police.expect_event(
        "offline", unit=unit, within=real_s(window) + 2.0, since=silent_from
    )
    # counted from its last heartbeat, on the gateway's clock: 3.5 intervals of silence.
    # (Not from the cut: a busy host delays the unit's last heartbeats, so the gateway
    # may rightly have heard nothing for longer than the cut would say; seen 0.12 s.)
    detail = offline.get("detail") or {}
    assert detail["silent_s"] >= window, detail
    back = time.monotonic()
    await unit.start()
    await police.expect_event("online", unit=unit, within=5.0, since=back)
    assert len(police.events("offline", unit=unit)) == 1


async def test_missed_checkin_walks_the_escalation_ladder(rig: Rig, virtual_only: None) -> None:
    assert isinstance(rig, VirtualRig)
    guard, police = rig.fleet.guard, rig.police
    post = HIL_PLAN.post_id
    t0 = time.monotonic()
    await guard.checkin()
    await police.expect_duty("checkin", post=post, within=2.0, since=t0)
    await guard.expect_led("checkin_ok")
    due = real_s((HIL_PLAN.checkin_interval_min + HIL_PLAN.grace_min) * 60)
    missed = await police.expect_duty("missed_checkin", post=post, within=due + 2.0, since=t0)
    assert missed.at - t0 >= due * 0.9
    await police.expect_duty(
        "escalation", post=post, step="prompt_guard", within=2.0, since=missed.at
    )
    await guard.expect_led("prompt", within=2.0)  # the post asks the guard
    await police.expect_duty(
        "escalation", post=post, step="security_lead", within=real_s(60) + 2, since=missed.at
    )
    to_police = await police.expect_duty(
        "escalation", post=post, step="police", within=real_s(120) + 2, since=missed.at
    )
    assert (to_police.get("detail") or {}).get("action")
    answered = time.monotonic()
    await guard.checkin()  # the guard finally answers
    ack = await police.expect_duty("acknowledged", post=post, within=2.0, since=answered)
    assert (ack.get("detail") or {}).get("via") == "checkin"
