"""TEST frames: the installation test after a deploy, the installer's request, and the
periodic test with its result bits."""

from __future__ import annotations

import itertools
import statistics

from gateway.flashing.unitfiles import INSTALL_TEST_FILE
from protocol import MsgType, TestKind
from tests.firmware.conftest import UnitFactory


async def test_installation_test_after_deploy_until_acked(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(install_test=True)
    marker = vu.unit_dir / INSTALL_TEST_FILE
    first = await gw.next(MsgType.TEST, after=0)
    assert first.frame.body.kind == TestKind.MANUAL and first.frame.body.result == 0
    assert first.frame.body.battery_mv == 3700
    # not ACKed, and the unit loses power: the next boot sends it again
    await vu.kill()
    before = len(gw.frames)
    await vu.restart()
    again = await gw.next(MsgType.TEST, after=before)
    assert again.frame.body.kind == TestKind.MANUAL and again.frame.epoch == vu.epoch
    # retried until ACKed, then the marker is gone
    await gw.wait(lambda fs: len([a for a in fs[before:] if a.frame.type == MsgType.TEST]) >= 2)
    gw.ack(again.frame)
    await vu.wait_log("test acked")
    assert not marker.exists()
    before = len(gw.frames)
    await vu.restart()
    await gw.next(MsgType.HEARTBEAT, after=before)  # boot frames go out before it
    assert not [a for a in gw.frames[before:] if a.frame.type == MsgType.TEST]


async def test_installer_requests_a_test(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(heartbeat_ms=300)
    await gw.next(MsgType.HEARTBEAT, after=0)
    await vu.set_battery(3300)  # low: bit 0
    await gw.next(MsgType.FAULT)
    await vu.set_sounder(False)  # bit 3
    start = len(gw.frames)
    await vu.request_test()
    t = await gw.next(MsgType.TEST, after=start)
    assert t.frame.body.kind == TestKind.MANUAL
    assert t.frame.body.result == 0b1001 and t.frame.body.battery_mv == 3300
    gw.ack(t.frame)


async def test_periodic_test_interval_and_result_bits(make_unit: UnitFactory) -> None:
    vu, gw = await make_unit(test_interval_ms=600)
    first = await gw.next(MsgType.TEST, after=0, timeout=2)
    assert first.frame.body.kind == TestKind.PERIODIC and first.frame.body.result == 0
    gw.ack(first.frame)
    tests = [first]
    while len(tests) < 4:
        seen = {a.frame.seq for a in tests}
        t = await gw.next(MsgType.TEST, pred=lambda f, s=seen: f.seq not in s, timeout=2)
        gw.ack(t.frame)
        tests.append(t)
    # every 600 ms: the median of 3 gaps, since one stall of a busy host lengthens one
    # arrival gap and shortens the next
    gaps = [b.at - a.at for a, b in itertools.pairwise(tests)]
    assert 0.45 < statistics.median(gaps) < 0.9, gaps
    # the storage check writes and reads back a record: make the write fail
    (vu.unit_dir / "selftest.new").mkdir()
    await vu.set_sounder(False)
    bad = await gw.next(MsgType.TEST, pred=lambda f: f.body.result != 0, timeout=2)
    assert bad.frame.body.kind == TestKind.PERIODIC
    assert bad.frame.body.result == 0b1100  # storage and sounder
