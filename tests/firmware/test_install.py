"""Deploy from an installed wheel, as on the Pi: no checkout, the firmware is package data.

The wheel is built from a copy of the sources (so nothing in the checkout can stand in for
a file the wheel lacks), installed with its dependencies into a fresh venv outside the
checkout, and that venv's ``campusguard`` makes a key and deploys a virtual board (the
MicroPython unix port's REPL on a pty) from a directory that is not the checkout; the
deployed folder then boots and sends its installation test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from gateway.sim.vboard import VirtualUnit
from tests.support.timing import TIME_SCALE
from protocol import MsgType
from protocol.keys import read_key
from tests.firmware.conftest import ROOT, GatewayEnd
from tests.firmware.test_deploy import repl  # noqa: F401  (fixture)

SOURCES = ["pyproject.toml", "README.md", "protocol", "gateway", "firmware"]
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=JUNK)
        else:
            shutil.copyfile(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheels")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
    res = subprocess.run(
        [*pip_wheel, "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    built = list(out.glob("campusguard-*.whl"))
    assert len(built) == 1
    return built[0], res.stdout + res.stderr


def test_wheel_builds_without_setuptools_warnings(wheel: tuple[Path, str]) -> None:
    _, log = wheel
    assert "is absent from the `packages` configuration" not in log
    assert "BuildBackendWarning" not in log


def test_deploy_from_installed_wheel(
    wheel: tuple[Path, str],
    repl: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port, flash = repl
    env_dir = tmp_path / "pi" / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    res = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel[0])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    # the installed package, not the checkout, answers
    where = subprocess.run(
        [str(py), "-c", "import gateway.flashing.unitfiles as u; print(u.FIRMWARE_DIR)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(env_dir)), where

    etc = tmp_path / "pi" / "etc"
    etc.mkdir()
    shutil.copyfile(ROOT / "boards.yaml", etc / "boards.yaml")
    cg = str(env_dir / "bin" / "campusguard")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:/usr/bin:/bin"
    common = ["--config", str(etc / "boards.yaml"), "--keydir", str(etc / "keys")]

    def campusguard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cg, *args], capture_output=True, text=True, cwd=etc, env=env, timeout=300
        )

    made = campusguard("keygen", "shop-fruit", *common)
    assert made.returncode == 0, made.stderr
    done = campusguard("deploy", "shop-fruit", "--port", port, "--unix-port", *common)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "files verified" in done.stdout
    fw_files = json.loads((flash / "unit.json").read_text())["fw_files"]
    assert {"main.py", "app.mpy", "board/virtual.mpy", "board/esp32.mpy"} <= fw_files.keys()
    assert "manifest.mpy" not in fw_files and "README.md" not in fw_files

    async def boots() -> None:
        key = read_key(etc / "keys", "shop-fruit")
        vu = VirtualUnit(flash, time_scale=TIME_SCALE)
        gw = GatewayEnd(vu.link_path, 257, key)
        try:
            await vu.start()
            await gw.next(MsgType.TEST, after=0)
        finally:
            gw.close()
            await vu.stop()

    asyncio.run(boots())
