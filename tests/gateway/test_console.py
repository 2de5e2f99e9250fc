"""The duty-room console: --json lines, --ack-after back to the unit (ACK state 2)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.console import Board
from gateway.incidents import iso
from protocol import AckState, Alarm, AlarmKind
from tests.gateway.conftest import GATEWAY_ID, INTRUDER, SITE, Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


async def test_console_json_and_auto_ack(site: Site, broker: Mosquitto, police: Police) -> None:
    unit = site.unit("shop-a", epoch=12)
    async with running_gateway(site, broker) as gw:
        await gw.relay.connected.wait()
        s = broker.settings("dutyroom-desk2")  # a second desk: its own broker account
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "console",
            *s.cli_args(),
            "--site",
            SITE,
            "--json",
            "--ack-after",
            "50",
            "--by",
            "Officer Wu",
            "--keydir",
            str(site.dutyroom_dir),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **s.environ()},
        )
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(20):  # a subprocess start on a loaded machine
                # the gateway's retained status tells us the console is subscribed
                while not any(x["kind"] == "gateway" for x in lines):
                    lines.append(json.loads(await proc.stdout.readline()))
                assert lines[-1]["payload"]["state"] == "online"
                # what the gateway did not sign is never shown (nor acked), and nothing
                # kills the console: a fake alarm, deep nesting, an oversized payload
                # (under the broker's packet limit), from a broker account that may
                # write the site's topics but holds no signing key
                fake = {"incident": "fake-1", "update": "new", "gateway": GATEWAY_ID}
                alarm_topic = f"campusguard/{SITE}/alarm/shop-b"
                for payload in (json.dumps(fake).encode(), b"[" * 5000, b"x" * 12_000):
                    await police.publish(alarm_topic, payload, user=INTRUDER)
                while sum(x["kind"] == "dropped" for x in lines) < 3:
                    lines.append(json.loads(await proc.stdout.readline()))
                frame = unit.send(Alarm(AlarmKind.PANIC, 1, 1))
                while not any(
                    x["kind"] == "alarm" and x["payload"]["update"] == "police_ack" for x in lines
                ):
                    lines.append(json.loads(await proc.stdout.readline()))
            await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=3)
        finally:
            proc.terminate()
            await proc.wait()
        iid = f"{GATEWAY_ID}-shop-a-12-0"
        kinds = [(x["kind"], (x["payload"] or {}).get("update")) for x in lines]
        assert ("alarm", "new") in kinds and ("ack_sent", None) in kinds
        reasons = [x["payload"]["reason"] for x in lines if x["kind"] == "dropped"]
        assert reasons == ["malformed", "malformed", "oversized"]
        assert not any(x["kind"] == "alarm" and x["payload"]["incident"] == "fake-1" for x in lines)
        sent = next(x for x in lines if x["kind"] == "ack_sent")
        assert sent["topic"] == f"campusguard/{SITE}/ack/{iid}"
        body = sent["payload"]
        assert (body["kind"], body["site"], body["incident"]) == ("police_ack", SITE, iid)
        assert (body["by"], body["disposition"]) == ("Officer Wu", "genuine")
        for x in lines:
            assert set(x) == {"topic", "kind", "payload", "at"}
        row = gw.store.conn.execute("SELECT police_ack_by FROM incidents").fetchone()
        assert row == ("Officer Wu",)


def test_board_keeps_the_newest_update_and_numbers_incidents() -> None:
    b = Board()
    new = {"incident": "g-u-1-0", "update": "new", "update_no": 1, "presses": 1, "state": "open"}
    more = {**new, "update": "presses", "update_no": 2, "presses": 3}
    assert b.take("campusguard/s/alarm/u", new) == "alarm"
    b.take("campusguard/s/alarm/u", more)
    b.take("campusguard/s/alarm/u", new)  # a late duplicate of the first
    assert b.incidents["g-u-1-0"]["presses"] == 3
    assert b.resolve("1") == "g-u-1-0" and b.resolve("g-u-1-0") == "g-u-1-0"
    assert b.resolve("2") is None
    assert "open" in b.render()


def test_a_gateway_whose_signed_status_stops_is_stale_and_a_replay_does_not_revive_it() -> None:
    b = Board()
    t0 = 1_800_000_000.0
    status = "campusguard/gateway/gw1/status"

    def online(at: float) -> dict[str, Any]:
        return {"gateway": "gw1", "state": "online", "at": iso(at), "period_s": 60.0}

    assert b.take(status, online(t0)) == "gateway"
    assert b.gateway_state("gw1", t0 + 179) == "online"
    assert b.gateway_state("gw1", t0 + 181).startswith("stale")
    assert b.take(status, online(t0 - 600)) == "other"  # an older status, replayed
    assert b.gateway_state("gw1", t0 + 181).startswith("stale")
    b.take(status, online(t0 + 180))  # the next period's status
    assert b.gateway_state("gw1", t0 + 200) == "online"
    assert "gw1 stale" in b.render(now=t0 + 1000)
