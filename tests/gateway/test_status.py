"""``campusguard status``: what an installer asks of a gateway, read from its journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protocol import Alarm, AlarmKind, Heartbeat, HeartbeatFlags
from tests.gateway.conftest import Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import until

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAMPUSGUARD, "status", *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_status_per_unit_and_link(site: Site, broker: Mosquitto) -> None:
    unit = site.unit("shop-a", epoch=3)
    async with running_gateway(site, broker) as gw:
        # the snapshot is there from the start: status works on a running gateway
        running = status("--db", str(site.db))
        assert running.returncode == 0, running.stderr
        assert "bus-a" in running.stdout
        hb = unit.send(Heartbeat(3650, 40, 0x0102, HeartbeatFlags(0)))
        await site.port.wait_ack(hb)
        alarm = unit.send(Alarm(AlarmKind.PANIC, 1, 100))
        await site.port.wait_ack(alarm)
        site.port.write(unit.wire(alarm))  # the unit did not hear the ACK: it retries
        site.port.write(unit.wire(alarm))
        site.port.write(b"\x05garbage\x00")  # line noise
        await until(
            lambda: gw.pipeline.retries["shop-a"] == 2 and sum(gw.receiver.rejects().values()) == 1
        )
    res = status("--db", str(site.db), "--config", str(site.config_path), "--json")
    assert res.returncode == 0, res.stderr
    state = json.loads(res.stdout)
    a = state["units"]["shop-a"]
    assert a["battery_mv"] == 3650 and a["fw"] == "1.2" and a["retries"] == 2
    assert a["last_heard"] is not None
    assert state["units"]["shop-b"] == {
        "last_heard": None,
        "battery_mv": None,
        "fw": None,
        "retries": 0,
    }  # registered, never heard
    link = state["links"]["bus-a"]
    assert link["up"] is True and link["port"] == str(site.port.path)
    assert link["frames"] == 4 and link["bytes_in"] > 0 and link["bytes_out"] > 0
    assert sum(link["rejects"].values()) == 1
    assert state["clock"]["behind_journal"] is False
    assert state["clock"]["synchronized"] in (True, False, None)
    text = status("--db", str(site.db), "--config", str(site.config_path)).stdout
    assert "shop-a" in text and "battery 3650 mV" in text and "retries 2" in text
    assert "shop-b" in text and "last heard never" in text
    assert "time synchronized:" in text


def test_status_of_a_missing_journal_is_a_clear_error(tmp_path: Path) -> None:
    res = status("--db", str(tmp_path / "nope.db"))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"campusguard status: no journal database at {tmp_path / 'nope.db'} (give --db PATH)"
    )
