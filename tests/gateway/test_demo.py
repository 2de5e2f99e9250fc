"""``campusguard demo``: what it prints is what the units sent and the police received.

Both runs are the real demo (virtual units on MicroPython, a private Mosquitto, the
gateway) as a subprocess, as a user runs it. The fast run also reports to a receiving
centre (``--arc``, pysiaalarm's): one run of the demo's script serves the journal's checks
and the centre's, which each used to pay for a run of their own.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent


def demo(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@dataclass
class FastDemo:
    """The x60 run, reporting to a receiving centre, with its journal kept."""

    rc: int
    summary: dict[str, Any]
    err: str
    keep: Path
    done: float  # when the demo's process had ended (wall clock)
    centre: list[SIAEvent]  # what the receiving centre got


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fast_demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastDemo]:
    """One run for the module's checks; none of them changes what it left."""
    tmp_path = tmp_path_factory.mktemp("demo")
    got: list[SIAEvent] = []

    async def on_event(ev: SIAEvent) -> None:
        got.append(ev)

    key = "DEMOKEY-16-CHARS"
    sia = SIAClient("127.0.0.1", 0, [SIAAccount("4C21", key)], on_event)
    await sia.async_start()
    assert sia.server is not None
    port = sia.server.sockets[0].getsockname()[1]
    (tmp_path / "arc.key").write_text(key)
    keep = tmp_path / "kept"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "demo", "--json",
        "--units", "5", "--presses", "8", "--keep", str(keep),
        "--arc", f"dc09+tcp://4c21@127.0.0.1:{port}", "--arc-key-file", str(tmp_path / "arc.key"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sia.async_stop()
    done = time.time()
    assert proc.returncode is not None
    yield FastDemo(proc.returncode, json.loads(out), err.decode(), keep, done, got)


def test_real_time_demo_checks_first_press_at_and_the_cancel_lands(tmp_path: Path) -> None:
    """--speed 1: presses only; first_press_at within 5 s before received_at."""
    rc, summary, err = demo("--speed", "1", "--units", "4", "--presses", "6")
    assert summary["speed"] == 1.0
    assert summary["checks"]["first_press_within_5s_before_received"] is True, err
    assert summary["checks"]["every_press_delivered"] is True
    assert summary["missed_checkin"] == 0 and summary["escalation_police"] == 0  # presses only
    # what the units sent: one CANCEL (the script's), and it landed
    assert summary["sent"]["cancel_frames"] == 1
    assert summary["cancel"] == {
        "scripted": True,
        "unit": summary["cancel"]["unit"],
        "landed": True,
        "why_not": None,
    }
    assert summary["cancelled"] == 1
    assert summary["sent"]["alarm_series"] >= summary["incidents"] >= 1
    assert rc == 0, err


def test_fast_demo_keeps_its_journal_with_no_time_in_the_future(fast_demo: FastDemo) -> None:
    """x60: --keep names the journal; no row in it is dated after the run; the script's
    cancel lands although, with 4 alarm units, the next press of the cancelling unit
    would fall inside its burst (it used to, and the burst of six was no cancel)."""
    rc, summary, err, keep = fast_demo.rc, fast_demo.summary, fast_demo.err, fast_demo.keep
    done = fast_demo.done
    db = keep / "fleet" / "var" / "gateway.db"
    assert summary["journal"] == str(db)
    assert f"journal kept: {db}" in err
    assert summary["cancel"]["landed"] is True, summary["cancel"]
    assert summary["cancelled"] == 1 and summary["sent"]["cancel_frames"] == 1
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    latest = max(
        conn.execute("SELECT max(at) FROM events").fetchone()[0] or 0,
        conn.execute("SELECT max(at) FROM frames").fetchone()[0] or 0,
        conn.execute("SELECT max(received_at) FROM incidents").fetchone()[0] or 0,
    )
    conn.close()
    assert 0 < latest <= done
    assert rc == 0, err


def test_fast_demo_ends_with_every_press_in_and_every_ack_back(fast_demo: FastDemo) -> None:
    """The demo used to stop at the last press, cancelling the duty room's acks still to
    come: its table showed the last alarms open and its summary fewer acknowledged."""
    summary = fast_demo.summary
    assert summary["missing"] == [] and summary["not_acknowledged"] == []
    assert summary["police_acknowledged"] == summary["incidents"]
    assert "MISSING" not in fast_demo.err and "NOT ACKNOWLEDGED" not in fast_demo.err


def test_demo_reports_to_an_arc(fast_demo: FastDemo) -> None:
    """--arc: the demo's alarms also reach a receiving centre, with DC-09 timestamps from
    the real clock although the demo's clock runs 60x faster."""
    assert fast_demo.rc == 0, fast_demo.err[-2000:]
    summary = fast_demo.summary
    assert summary["arc"]["nak"] == 0  # real-clock timestamps: none outside its window
    assert summary["arc"]["waiting"] == 0 and summary["arc"]["acked"] >= summary["incidents"] >= 1
    alarms = [e for e in fast_demo.centre if e.event_type in ("120", "121", "122")]
    # every incident reached the centre, and none was refused for its timestamp
    assert len({(e.ri, e.sequence) for e in alarms}) >= summary["incidents"]
    assert all(e.encrypted and e.account == "4C21" for e in fast_demo.centre)
