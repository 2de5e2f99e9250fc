"""A unit whose modules are on a ROMFS image, mapped and mounted at /rom as an ESP32
maps its ROMFS partition (gateway/sim/romlaunch.py): it boots, works, and runs its modules'
bytecode in place."""

from __future__ import annotations

import pytest

from gateway.flashing.unitfiles import ROMFS_IMAGE
from protocol import AlarmKind, MsgType
from tests.firmware.conftest import UnitFactory

FIRMWARE_MODULES = {
    "app", "board.virtual", "button", "counter", "feedback", "link", "outbox", "proto",
    "storage",
}  # fmt: skip

pytestmark = pytest.mark.mp64_only  # ROMFS images are the 64-bit PyPI port's path


async def test_unit_booted_from_romfs_sends_an_alarm(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(romfs=True)
    assert vu.romfs
    # main.py is the only firmware file on the filesystem (the rest is in the image)
    code = sorted(p.name for p in vu.unit_dir.rglob("*") if p.suffix in (".py", ".mpy"))
    assert code == ["main.py"] and (vu.unit_dir / ROMFS_IMAGE).exists()
    await gw.next(MsgType.HEARTBEAT, after=0)
    start = len(gw.frames)
    await vu.press()
    alarm = await gw.next(MsgType.ALARM, after=start, timeout=1.0)
    assert alarm.frame.body.kind == AlarmKind.PANIC and alarm.frame.epoch == vu.epoch
    await vu.release()
    gw.ack(alarm.frame)
    await vu.wait_led("received")
    files = await vu.module_files()
    assert FIRMWARE_MODULES <= files.keys()
    assert {files[m] for m in FIRMWARE_MODULES} == {
        "/rom/" + m.replace(".", "/") + ".mpy" for m in FIRMWARE_MODULES
    }
    assert "startup" not in files  # boot-only, dropped once the unit runs


async def test_romfs_code_is_not_on_the_heap(make_unit: UnitFactory) -> None:
    """The same firmware imported from .mpy files on the filesystem takes far more heap:
    there the bytecode is copied into RAM; from /rom it runs in place."""
    heap: dict[bool, int] = {}
    for romfs in (False, True):
        vu, gw = await make_unit(unit_id="shop-fruit" if romfs else "shop-stationery", romfs=romfs)
        await gw.next(MsgType.HEARTBEAT, after=0)
        _, _, heap[romfs] = await vu.mem()
    assert heap[True] < heap[False] - 10_000

