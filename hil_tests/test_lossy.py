"""A poor radio: 10% of frames lost, bit flips and duplicates, both ways; every alarm arrives."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sim.fleet import latency_stats
from gateway.sim.linkrelay import Impairment
from hil_tests.conftest import Rig, VirtualRig

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOR = Impairment(drop=0.10, corrupt=0.05, duplicate=0.03, delay_s=0.002, jitter_s=0.01)
FLEET = {"impairment": POOR, "seed": 10}
PRESSES = 3


async def test_ten_percent_frame_loss_and_bit_flips_deliver_every_alarm(
    rig: Rig, virtual_only: None
) -> None:
    assert isinstance(rig, VirtualRig)
    fleet, police = rig.fleet, rig.police
    units = [u for u in fleet.units.values() if u.spec.role != "guard_post"]
    stats_before = {lid: dict(r.stats) for lid, r in fleet.relays.items()}
    rejects_before = fleet.rejects()

    async def presses(unit_index: int) -> None:
        unit = units[unit_index]
        await asyncio.sleep(0.05 * unit_index)  # people do not press in the same millisecond
        await unit.click(PRESSES, up_s=0.4)

    await asyncio.gather(*(presses(i) for i in range(len(units))))
    # every unit's incident reaches all its presses: nothing lost
    await police.wait_for(
        lambda: all(
            any(d.get("presses") == PRESSES for d in police.incidents(u).values()) for u in units
        ),
        20.0,
        f"{PRESSES} presses from each of {len(units)} units",
    )
    latencies = []
    for u in units:
        assert len(police.incidents(u)) == 1, u.id
        first = police.alarms(u, update="new")[0]
        assert u.pressed_at is not None
        latencies.append(first.at - u.pressed_at)
    lost = sum(r.stats["up_dropped"] + r.stats["down_dropped"] for r in fleet.relays.values())
    flipped = sum(
        r.stats["up_corrupted"] + r.stats["down_corrupted"] for r in fleet.relays.values()
    )
    grew = fleet.rejects() - rejects_before
    print(
        f"\n{len(units)} units x {PRESSES} presses over 10% loss: first alarm "
        f"{latency_stats(latencies)} ms; frames dropped {lost}, flipped {flipped}, "
        f"gateway rejects {dict(grew)}; before {stats_before}"
    )
    assert lost > 0 and flipped > 0, "the link was not impaired"
    up_flipped = sum(
        r.stats["up_corrupted"] - stats_before[lid].get("up_corrupted", 0)
        for lid, r in fleet.relays.items()
    )
    if up_flipped:  # a flip on the way up fails the CRC (or COBS) at the gateway, counted
        assert sum(grew.values()) > 0, f"{up_flipped} flipped uplink frames, no reject counted"
