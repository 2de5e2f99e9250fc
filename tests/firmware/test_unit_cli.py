"""``campusguard unit``: a person runs a virtual unit on one end of a pty pair, types
control commands, sees the LED and buzzer; the gateway end hears the real firmware."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main as cli
from protocol import MsgType, TestKind
from protocol.keys import read_key
from tests.firmware.conftest import ROOT, GatewayEnd
from tests.support.timing import scaled

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
CONFIG = str(ROOT / "boards.yaml")


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The recipe of firmware/README.md: socat's pty pair, unit end and gateway end."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    unit_end, gw_end = tmp_path / "cg-unit", tmp_path / "cg-gw"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={unit_end}", f"pty,raw,echo=0,link={gw_end}"]
    )
    deadline = time.monotonic() + 5
    while not (unit_end.exists() and gw_end.exists()):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not make the ptys")
        time.sleep(0.02)  # polling a condition with a deadline
    yield unit_end, gw_end
    proc.terminate()
    proc.wait(timeout=5)


class Lines:
    """The command's stdout, line by line, waited on."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.seen: list[str] = []

    async def until(self, words: str, timeout: float = 10.0) -> str:
        limit = scaled(timeout)  # a command that builds and starts a unit: a busy host is slow
        try:
            return await asyncio.wait_for(self._until(words), limit)
        except TimeoutError:
            raise AssertionError(f"no {words!r} within {limit:.0f} s: {self.seen}") from None

    async def _until(self, words: str) -> str:
        for line in self.seen:
            if words in line:
                return line
        while True:
            raw = await self.stream.readline()
            if not raw:
                raise AssertionError(f"ended before {words!r}: {self.seen}")
            line = raw.decode().rstrip("\n")
            self.seen.append(line)
            if words in line:
                return line


async def test_a_person_runs_a_virtual_unit_on_a_pty(
    pty_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    unit_end, gw_end = pty_pair
    keys = tmp_path / "keys"
    assert cli(["keygen", "shop-fruit", "--keydir", str(keys), "--config", CONFIG]) == 0
    key = read_key(keys, "shop-fruit")
    gw = GatewayEnd(str(gw_end), 257, key)
    proc = await asyncio.create_subprocess_exec(
        CAMPUSGUARD,
        "unit",
        "shop-fruit",
        "--config",
        CONFIG,
        "--keydir",
        str(keys),
        "--uart",
        str(unit_end),
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = Lines(proc.stdout)
    try:
        await out.until("ready (boot epoch")
        # a new flash: the installation TEST, as after a deploy
        test = await gw.next(MsgType.TEST, after=0, timeout=10)
        assert test.frame.body.kind == TestKind.MANUAL
        gw.ack(test.frame)
        proc.stdin.write(b"button 1\n")
        await proc.stdin.drain()
        await asyncio.sleep(0.1)  # the person's finger on the button (stimulus, not a wait)
        proc.stdin.write(b"button 0\n")
        await proc.stdin.drain()
        alarm = await gw.next(MsgType.ALARM, after=0, timeout=10)
        gw.ack(alarm.frame)
        await out.until("led received")  # the gateway end ACKed it
        await out.until("buzzer chirp")
        proc.stdin.write(b"button 7\n")
        await proc.stdin.drain()
        assert "button takes 0 or 1" in await out.until("button takes")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: maintenance stop, as on a real unit
        await out.until("stopped for maintenance")
        rc = await asyncio.wait_for(proc.wait(), scaled(10))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        gw.close()
    err = (await proc.stderr.read()).decode()
    assert rc == 0, err
    assert "Traceback" not in err
    flash = tmp_path / "units" / "shop-fruit"
    assert (flash / "epoch.a").exists()  # the unit's state lives in its flash folder
    assert "Traceback" not in (flash / "console.log").read_text()


def test_a_missing_pty_says_how_to_make_one(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert cli(["keygen", "shop-fruit", "--keydir", str(keys), "--config", CONFIG]) == 0
    res = subprocess.run(
        [CAMPUSGUARD, "unit", "shop-fruit", "--config", CONFIG, "--keydir", str(keys)]
        + ["--uart", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.startswith(f"campusguard unit: --uart {tmp_path / 'nope'}: no such pty")
    assert "socat" in res.stderr and "Traceback" not in res.stderr
