"""The 64-bit ROMFS unit's heap (issue 18: at or under 40 KB after boot, bench/firmware.py's
`heap_after_boot_bytes`): the unit as `deploy --romfs` leaves it, its modules' bytecode and
qstr text in the mapped image. What decides the figure is the number of qstrs the unit
interns by the end of boot: the heap's qstr pools double (20, 40, 80, 160 entries), and the
301st qstr opens a pool of 320 entries, 3 584 bytes on this port (firmware/README.md,
"Memory")."""

from __future__ import annotations

import asyncio

import pytest

from protocol import MsgType
from tests.firmware.conftest import UnitFactory
from tests.firmware.test_frozen32 import TRANSIENT_MAX, ack_every_alarm

pytestmark = pytest.mark.mp64_only  # ROMFS images are the 64-bit PyPI port's path

HEAP_AFTER_BOOT_MAX = 40 * 1024
"""The issue's ceiling for the 64-bit ROMFS unit's heap after boot."""


async def test_romfs_heap_at_most_40k_after_boot_and_flat_over_alarms(
    make_unit: UnitFactory,
) -> None:
    vu, gw = await make_unit(
        "shop-fruit", romfs=True, incident_window_ms=200, long_press_ms=60000, stuck_ms=90000
    )
    assert vu.romfs
    await gw.next(MsgType.HEARTBEAT)  # the boot's frames are out
    after_boot, _, code = await vu.mem()
    assert after_boot <= HEAP_AFTER_BOOT_MAX, (after_boot, code)
    acker = asyncio.create_task(ack_every_alarm(gw))
    try:
        for _ in range(10):
            start = len(gw.frames)
            await vu.press()
            await gw.next(MsgType.ALARM, after=start)
            await vu.wait_buzzer("off")
            chirps = vu.buzzer_history.count("chirp")
            await vu.release()
            await vu.wait_until(lambda c=chirps: vu.buzzer_history.count("chirp") > c, 3, "chirp")
        await vu.wait_led("idle")  # the series closed: nothing left pending
    finally:
        acker.cancel()
    after, _, _ = await vu.mem()
    # no qstr, pool or object the alarm path makes stays behind (bench/firmware.py runs
    # 100 alarms for the figure)
    assert after <= after_boot + TRANSIENT_MAX, (after_boot, after)
