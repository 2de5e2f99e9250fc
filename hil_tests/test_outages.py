"""Outages: the gateway SIGKILLed in the middle of a burst, the broker stopped and started.

The gateway runs as the ``campusguard gateway`` process (so it can be killed like a real
crash); the broker is persistent and the police hold a persistent session, as a duty
room's would.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.sim.localbroker import LocalBroker
from hil_tests.conftest import Rig, VirtualRig

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLEET = {"gateway": "process", "seed": 7}


async def test_gateway_sigkilled_in_a_burst_and_restarted_loses_nothing(
    rig: Rig, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    units = [u for u in fleet.units.values() if u.spec.role != "guard_post"][:6]

    async def burst(i: int) -> None:
        await asyncio.sleep(0.03 * i)
        await units[i].click(3, down_s=0.05, up_s=0.25)

    pressing = asyncio.gather(*(burst(i) for i in range(len(units))))
    await police.expect_alarm(units[0], within=1.0)  # the burst has reached the police ...
    await fleet.kill_gateway()  # ... and the gateway dies in the middle of it
    killed_with = {u.id: len(police.alarms(u)) for u in units}
    await pressing
    await fleet.start_gateway()
    await police.wait_for(
        lambda: all(
            any(d.get("presses") == 3 for d in police.incidents(u).values()) for u in units
        ),
        15.0,
        "every press of the burst after the restart",
    )
    for u in units:
        assert len(police.incidents(u)) == 1, f"{u.id}: {list(police.incidents(u))}"
    print(f"\nalarm messages per unit when the gateway was killed: {killed_with}")


async def test_broker_stopped_and_started_loses_nothing(
    rig: Rig, broker: LocalBroker, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    units = [u for u in fleet.units.values() if u.spec.role != "guard_post"][6:9]
    broker.stop()
    try:
        for u in units:
            await u.press()
        for u in units:
            # the gateway has journalled it: the unit shows "received" with the broker down
            await u.expect_led("received", within=2.0)
        assert not any(police.alarms(u) for u in units)
    finally:
        broker.start()
    for u in units:
        await police.expect_alarm(u, within=15.0)
