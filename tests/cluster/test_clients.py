"""Every client takes the cluster's nodes: the console moves on when its node dies."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.core.broker import BrokerSettings
from gateway.sim.natscluster import NatsCluster
from protocol import AckState, Alarm, AlarmKind
from tests.cluster.conftest import gateway_on
from tests.gateway.conftest import SITE, Site

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


async def test_console_on_a_dying_node_moves_on_and_its_acks_reach_the_unit(
    cluster: NatsCluster, site: Site
) -> None:
    first, second = site.unit("shop-0-0", epoch=2), site.unit("shop-0-1", epoch=2)
    nodes = cluster.settings("dutyroom-desk2", first="n1")
    async with gateway_on(cluster, site, "n2") as gw:
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "console",
            *BrokerSettings.cli_args_of(nodes),
            "--site",
            SITE,
            "--json",
            "--ack-after",
            "50",
            "--keydir",
            str(site.dutyroom_dir),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **nodes[0].environ()},
        )
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []

        async def until_acked(unit_id: str) -> None:
            while not any(
                x["kind"] == "alarm"
                and x["payload"]["unit"] == unit_id
                and x["payload"]["update"] == "police_ack"
                for x in lines
            ):
                lines.append(json.loads(await proc.stdout.readline()))  # type: ignore[union-attr]

        try:
            async with asyncio.timeout(60):
                while not any(x["kind"] == "gateway" for x in lines):  # subscribed on n1
                    lines.append(json.loads(await proc.stdout.readline()))
                f1 = first.send(Alarm(AlarmKind.PANIC, 1, 1))
                await until_acked("shop-0-0")
                await site.port.wait_ack(f1, AckState.POLICE_ACK, timeout=10)
                cluster.kill("n1")  # the console's node
                f2 = second.send(Alarm(AlarmKind.PANIC, 1, 1))
                await until_acked("shop-0-1")
                await site.port.wait_ack(f2, AckState.POLICE_ACK, timeout=30)
        finally:
            proc.terminate()
            await proc.wait()
        acked = gw.store.conn.execute(
            "SELECT count(*) FROM incidents WHERE police_ack_by IS NOT NULL"
        ).fetchone()
        assert acked == (2,)
