"""gateway.sim.vboard: the gateway opens a unit's link_path with pyserial, like a real port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import serial

from gateway.core.config import Config
from gateway.core.errors import VirtualUnitError
from gateway.sim.vboard import VirtualUnit, prepare_unit_dir
from tests.support.timing import TIME_SCALE
from protocol import Ack, AckState, Codec, Deframer, Frame, MsgType
from protocol.keys import TEST_KEY
from tests.firmware.conftest import FAST


async def test_pyserial_round_trip(tmp_path: Path, register: Config, fw_cache: Path) -> None:
    folder = prepare_unit_dir(
        tmp_path / "u",
        register.units["shop-fruit"],
        TEST_KEY,
        overrides=FAST,
        compiled=True,
        cache=fw_cache,
    )
    vu = VirtualUnit(folder, time_scale=TIME_SCALE)
    port = serial.Serial(vu.link_path, 115200, timeout=0.05)  # opened before the unit talks
    codec = Codec({257: TEST_KEY}, gateway=True)
    deframer = Deframer()
    frames: list[Frame] = []

    async def read_until(mtype: MsgType, timeout: float = 3.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                for f in frames:
                    if f.type == mtype:
                        frames.remove(f)
                        return f
                data = await asyncio.to_thread(port.read, 256)
                frames.extend(codec.decode(raw) for raw in deframer.feed(data))

    try:
        await vu.start()
        await read_until(MsgType.HEARTBEAT)
        await vu.click()
        alarm = await read_until(MsgType.ALARM)
        port.write(codec.encode(Frame(257, 1, 1, Ack(alarm.epoch, alarm.seq, AckState.POLICE_ACK))))
        await vu.wait_led("police_ack")
        # the port stays open across a power cycle of the unit, like a real wire
        await vu.restart()
        await read_until(MsgType.HEARTBEAT)
    finally:
        port.close()
        await vu.stop()
    assert deframer.rejects.total() == 0


@pytest.mark.parametrize(
    "unit_json",
    [
        "[1, 2]",  # valid JSON, not an object
        '{"addr": null}',  # a hand-edited file: int(None) is a TypeError, not a ValueError
        '{"addr": 257, "pins": {}, "heartbeat_s": "often"}',
        '{"pins": {}}',  # no addr
        '{"addr": 70000}',
        # beyond a 32-bit port's small ints: the settings array would wrap it silently
        '{"addr": 257, "pins": {}, "heartbeat_s": 10000000}',
        '{"addr": 257, "pins": {}, "kind": ""}',  # not a kind (duress is a gesture)
    ],
)
async def test_a_broken_unit_json_is_unconfigured_not_a_crash(
    tmp_path: Path, register: Config, fw_cache: Path, unit_json: str
) -> None:
    # unconfigured: the unit says why and waits for `campusguard deploy` (exit code 2 on
    # the virtual board; the LED lit on an ESP32); a crash would reset it over and over
    folder = prepare_unit_dir(
        tmp_path / "u", register.units["shop-fruit"], TEST_KEY, compiled=True, cache=fw_cache
    )
    (folder / "unit.json").write_text(unit_json)
    vu = VirtualUnit(folder, time_scale=TIME_SCALE)
    try:
        with pytest.raises(VirtualUnitError, match="exited with 2"):
            await vu.start()
    finally:
        await vu.stop()
    assert any("unconfigured" in line for line in vu.logs), vu.logs
