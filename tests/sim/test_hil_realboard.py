"""The HIL harness's real-board path (``--port``), run against a virtual unit.

No ESP32 is here: the unit is the MicroPython unix port with its REPL on a socat pty,
which mpremote drives like a USB port (deploy, then ``exec --no-follow`` of the REPL
driver); its board is ``board.esp32`` on the ``machine`` stand-in, whose UART is a pty
that a link relay gives the gateway as the register's bus-a port. The harness must run
every scenario a real board can play to its end, record the LED and buzzer checks as
not checked, and say so in its summary.

Two units on the bus, each its own REPL (``--port A|B``): the harness hands the scenarios
to them in turn, so each board's wait for its last incident window to end (11 s of real
time before a fresh incident) overlaps the other's scenario, and the multi-board path runs
too. Each board still plays scenarios one after another: shop-fruit the press, the chatter
and the police acknowledgement, shop-stationery the duress hold and then the cancel (a
hold's duress update is sent while the button is down: a quiet counted from the press
would fold the cancel's press into the duress incident).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main as cli
from gateway.sim.fleet import repl_pty
from gateway.sim.linkrelay import LinkRelay

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("shop-fruit", "shop-stationery")  # both on bus-a, in take() order


@pytest.fixture
def repls(tmp_path: Path) -> Iterator[list[str]]:
    """One REPL pty per unit of :data:`UNITS` (the unix port, as an ESP32's USB port)."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    with contextlib.ExitStack() as stack:
        links = []
        for unit in UNITS:
            flash = tmp_path / unit / "flash"
            flash.mkdir(parents=True)
            links.append(tmp_path / unit / "usb")
            stack.enter_context(repl_pty(flash, links[-1], unit))
        yield [str(link) for link in links]


async def test_real_board_path_runs_every_scenario_to_the_end(
    repls: list[str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    for unit in UNITS:
        keygen = ["keygen", unit, "--keydir", str(keys), "--config", str(ROOT / "boards.yaml")]
        assert cli(keygen) == 0
    # each board's UART: a pty whose far end the relay puts on bus-a, the register's port
    uarts = [os.openpty() for _ in UNITS]
    spare_master, spare_slave = os.openpty()  # radio-b: a line nobody talks on
    relay = LinkRelay({unit: master for unit, (master, _) in zip(UNITS, uarts, strict=True)})
    try:
        bus = await relay.start()
        register = yaml.safe_load((ROOT / "boards.yaml").read_text())
        for link in register["links"]:
            link["port"] = bus if link["id"] == "bus-a" else os.ttyname(spare_slave)
        config = tmp_path / "boards.yaml"
        config.write_text(yaml.safe_dump(register, sort_keys=False))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pytest", "hil_tests/test_alarm.py", "-q",
            "-p", "no:cacheprovider",
            "--port", "|".join(repls), "--unit", "|".join(UNITS), "--hil-config", str(config),
            "--hil-keydir", str(keys),
            "--hil-unix-uart", "|".join(os.ttyname(slave) for _, slave in uarts),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        await relay.stop()
        for fd in (*(fd for pair in uarts for fd in pair), spare_master, spare_slave):
            os.close(fd)
    text = out.decode(errors="replace")
    (tmp_path / "hil-output.txt").write_text(text)
    assert proc.returncode == 0, f"{tmp_path / 'hil-output.txt'}:\n{text[-6000:]}"
    summary = text[text.index("CampusGuard HIL: what was checked on real boards") :]
    # the five scenarios a real board can play ran to their end; the three that need a
    # virtual board's powers did not run, and say why
    assert "5 passed, 3 skipped" in text, text[-3000:]
    assert "5 scenarios ran to the end, 0 failed, 3 not run" in summary, summary
    # the police acknowledgement reached the unit (its LED and buzzer left to a person)
    assert "CHECKED BUT  test_police_acknowledgement_is_shown_on_the_unit" in summary
    assert "not checked: shop-fruit: LED 'police_ack'" in summary
    assert "not checked: shop-fruit: buzzer 'police_ack'" in summary
    assert "not checked: shop-stationery: LED and buzzer stayed silent" in summary  # duress
    assert "CHECKED      test_chatter_gives_one_incident_and_one_fault" in summary
    assert "NOT RUN      test_link_unplugged_and_back_loses_nothing: needs virtual" in summary
