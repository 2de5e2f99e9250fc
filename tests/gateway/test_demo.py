"""``campusguard demo``: what it prints is what the units sent and the police received.

Both tests run the real demo (virtual units on MicroPython, a private Mosquitto, the
gateway) as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def demo(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


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


def test_fast_demo_keeps_its_journal_with_no_time_in_the_future(tmp_path: Path) -> None:
    """x60: --keep names the journal; no row in it is dated after the run; the script's
    cancel lands although, with 4 alarm units, the next press of the cancelling unit
    would fall inside its burst (it used to, and the burst of six was no cancel)."""
    keep = tmp_path / "kept"
    rc, summary, err = demo("--units", "5", "--presses", "8", "--keep", str(keep))
    done = time.time()
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
    assert 0 < latest <= done
    assert rc == 0, err
