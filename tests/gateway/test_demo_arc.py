"""campusguard demo --arc: the demo's alarms also reach a receiving centre (pysiaalarm's),
with DC-09 timestamps from the real clock although the demo's clock runs 60x faster."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


async def test_demo_reports_to_an_arc(tmp_path: Path) -> None:
    got: list[SIAEvent] = []

    async def on_event(ev: SIAEvent) -> None:
        got.append(ev)

    key = "DEMOKEY-16-CHARS"
    sia = SIAClient("127.0.0.1", 0, [SIAAccount("4C21", key)], on_event)
    await sia.async_start()
    assert sia.server is not None
    port = sia.server.sockets[0].getsockname()[1]
    (tmp_path / "arc.key").write_text(key)
    proc = await asyncio.create_subprocess_exec(
        CAMPUSGUARD,
        "demo",
        "--units",
        "2",
        "--links",
        "1",
        "--presses",
        "2",
        "--json",
        "--arc",
        f"dc09+tcp://4c21@127.0.0.1:{port}",
        "--arc-key-file",
        str(tmp_path / "arc.key"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 300)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sia.async_stop()
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out)
    assert summary["arc"]["nak"] == 0  # real-clock timestamps: none outside its window
    assert summary["arc"]["waiting"] == 0 and summary["arc"]["acked"] >= summary["incidents"] >= 1
    alarms = [e for e in got if e.event_type in ("120", "121", "122")]
    # every incident reached the centre, and none was refused for its timestamp
    assert len({(e.ri, e.sequence) for e in alarms}) >= summary["incidents"]
    assert all(e.encrypted and e.account == "4C21" for e in got)
