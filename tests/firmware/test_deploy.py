"""campusguard deploy / keygen, through the real mpremote against a unix-port REPL on a
pty (socat), then the deployed folder is run as a unit."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main as cli
from gateway.core.config import load_config
from gateway.flashing.deploy import stage
from gateway.flashing.unitfiles import INSTALL_TEST_FILE, ROMFS_IMAGE
from gateway.sim.vboard import VirtualUnit, find_micropython
from tests.support.timing import TIME_SCALE
from protocol import MsgType, TestKind
from protocol.keys import read_key
from tests.firmware.conftest import ROOT, GatewayEnd

CONFIG = str(ROOT / "boards.yaml")


@pytest.fixture
def repl(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    unit_dir = tmp_path / "flash"
    unit_dir.mkdir()
    link = tmp_path / "repl"
    proc = subprocess.Popen(
        [
            "socat",
            f"pty,raw,echo=0,link={link}",
            f"EXEC:{find_micropython()} -X heapsize=2M,pty,raw,echo=0,stderr,setsid,ctty",
        ],
        cwd=unit_dir,
    )
    deadline = time.monotonic() + 5
    while not link.exists():
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not make the pty")
        time.sleep(0.02)  # polling a condition with a deadline
    yield str(link), unit_dir
    proc.terminate()
    proc.wait(timeout=5)


def test_keygen_then_deploy_then_run(
    repl: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, flash = repl
    keys = tmp_path / "keys"
    assert cli(["keygen", "shop-fruit", "--keydir", str(keys), "--config", CONFIG]) == 0
    assert (keys / "shop-fruit.key").stat().st_mode & 0o777 == 0o600
    # a second keygen refuses to overwrite
    assert cli(["keygen", "shop-fruit", "--keydir", str(keys), "--config", CONFIG]) == 1
    assert "exists" in capsys.readouterr().err

    def deploy(*extra: str) -> int:
        args = ["shop-fruit", "--port", port, "--config", CONFIG, "--keydir", str(keys)]
        return cli(["deploy", *args, "--unix-port", *extra])

    rc = deploy()
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "files verified" in out.out
    assert (flash / "main.py").exists() and (flash / "app.mpy").exists()
    assert not (flash / "app.py").exists()
    cfg = json.loads((flash / "unit.json").read_text())
    assert cfg["addr"] == 257 and cfg["kind"] == "panic" and "app.mpy" in cfg["fw_files"]
    assert cfg["baud"] == 115200  # bus-a's: the UART and the retransmission floor use it
    assert (flash / "unit.key").read_text().strip() == read_key(keys, "shop-fruit").hex()
    assert (flash / INSTALL_TEST_FILE).exists()

    async def run_unit() -> None:
        vu = VirtualUnit(flash, time_scale=TIME_SCALE)
        gw = GatewayEnd(vu.link_path, 257, read_key(keys, "shop-fruit"))
        try:
            await vu.start()
            # the first boot after a deploy sends the installation test (601) ...
            test = await gw.next(MsgType.TEST, after=0)
            assert test.frame.body.kind == TestKind.MANUAL
            gw.ack(test.frame)
            await gw.next(MsgType.HEARTBEAT, after=0)
            await vu.click()
            await gw.next(MsgType.ALARM)
            # ... and, once it is ACKed, not again
            await vu.wait_log("test acked")
            assert not (flash / INSTALL_TEST_FILE).exists()
        finally:
            gw.close()
            await vu.stop()

    asyncio.run(run_unit())

    # a unit whose MicroPython image has the firmware frozen in (firmware/manifest.py)
    # or on ROMFS: config only, and no module left on the filesystem to shadow it
    rc = deploy("--config-only")
    assert rc == 0, capsys.readouterr().err
    left = sorted(p.relative_to(flash).as_posix() for p in flash.rglob("*.*py"))
    assert left == ["main.py"]
    assert not (flash / "board").exists()
    assert json.loads((flash / "unit.json").read_text())["fw_files"].keys() == {"main.py"}

    # the modules on a ROMFS image (an ESP32: mpremote romfs deploy; a virtual board: the
    # file romfs.img, which VirtualUnit maps and mounts at /rom)
    rc = deploy("--romfs")
    assert rc == 0, capsys.readouterr().err
    left = sorted(p.relative_to(flash).as_posix() for p in flash.rglob("*.*py"))
    assert left == ["main.py"]
    fw_files = json.loads((flash / "unit.json").read_text())["fw_files"]
    assert fw_files.keys() == {"main.py", ROMFS_IMAGE}

    async def run_romfs_unit() -> None:
        vu = VirtualUnit(flash, time_scale=TIME_SCALE)
        gw = GatewayEnd(vu.link_path, 257, read_key(keys, "shop-fruit"))
        try:
            assert vu.romfs
            await vu.start()
            await gw.next(MsgType.HEARTBEAT, after=0)
            await vu.click()
            await gw.next(MsgType.ALARM)
            assert (await vu.module_files())["app"] == "/rom/app.mpy"
        finally:
            gw.close()
            await vu.stop()

    asyncio.run(run_romfs_unit())


def test_deploy_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert (
        cli(["deploy", "nope", "--port", "/dev/null", "--config", CONFIG, "--keydir", str(keys)])
        == 2  # a usage error (issue 11, item 8)
    )
    assert "'nope' is not in" in capsys.readouterr().err
    assert (
        cli(
            [
                "deploy",
                "shop-fruit",
                "--port",
                "/dev/null",
                "--config",
                CONFIG,
                "--keydir",
                str(keys),
            ]
        )
        == 2  # a setup mistake: keygen first
    )
    err = capsys.readouterr().err
    assert "no key for shop-fruit" in err and "keygen" in err
    assert cli(["keygen", "shop-fruit", "--keydir", str(keys), "--config", CONFIG]) == 0
    missing = str(tmp_path / "no-such-port")
    assert (
        cli(["deploy", "shop-fruit", "--port", missing, "--config", CONFIG, "--keydir", str(keys)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("campusguard deploy: cannot reach") and "\n" not in err
    assert "Traceback" not in err


def test_a_unit_on_the_radio_link_gets_its_baud_rate(tmp_path: Path) -> None:
    """home-zhao sits on radio-b (9600 baud): its unit.json says so (it once said nothing,
    and the firmware's UART ran at its default 115200 against a 9600 modem)."""
    config = load_config(Path(CONFIG))
    unit = config.units["home-zhao"]
    stage(unit, bytes(32), tmp_path / "out", tmp_path / "cache", baud=config.links[unit.link].baud)
    assert json.loads((tmp_path / "out" / "unit.json").read_text())["baud"] == 9600
