"""The service as systemd runs it: sd_notify, SIGTERM, the unit file, a broken register."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.service.sdnotify import Notifier
from protocol import Alarm, AlarmKind
from tests.gateway.conftest import GATEWAY_USER, Site
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
UNIT_FILE = ROOT / "systemd" / "campusguard-gateway.service"


class NotifySocket:
    """The systemd side of NOTIFY_SOCKET: a datagram socket collecting messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def wait_for(self, line: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not any(line in m.splitlines() for m in self.messages):
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(data.decode())

    def close(self) -> None:
        self.sock.close()


def systemd_credentials(where: Path, **dirs: Path) -> Path:
    """$CREDENTIALS_DIRECTORY as ``LoadCredential=ID:DIR`` fills it for each ID=DIR: one
    read-only file per file of DIR, named ``ID_<file name>`` (systemd's exec-credential.c)."""
    where.mkdir(mode=0o700)
    for cred_id, src in dirs.items():
        for f in sorted(src.iterdir()):
            dst = where / f"{cred_id}_{f.name}"
            dst.write_bytes(f.read_bytes())
            dst.chmod(0o400)
    return where


async def test_sd_notify_ready_watchdog_stopping_on_sigterm(
    tmp_path: Path, site: Site, broker: Mosquitto
) -> None:
    ns = NotifySocket(tmp_path / "notify.sock")
    s = broker.settings(GATEWAY_USER)
    creds = systemd_credentials(tmp_path / "credentials", keys=site.keydir)
    env = {
        **os.environ,
        **s.environ(),
        "NOTIFY_SOCKET": str(ns.path),
        "WATCHDOG_USEC": "400000",  # a WATCHDOG=1 every 0.2 s
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "CREDENTIALS_DIRECTORY": str(creds),
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [CAMPUSGUARD, "gateway", "--config", str(site.config_path), *s.cli_args()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await ns.wait_for("READY=1")
        ready = next(m for m in ns.messages if "READY=1" in m)
        assert "STATUS=1/1 links up, 3/3 keys" in ready
        await ns.wait_for("WATCHDOG=1")
        # the journal went where systemd's StateDirectory says
        assert (tmp_path / "state" / "gateway.db").exists()
        # the keys came from CREDENTIALS_DIRECTORY as systemd names them: a press is ACKed
        unit = site.unit("shop-a", epoch=3)
        f = unit.make(Alarm(AlarmKind.PANIC, 1, 1))
        await unit.send_until_acked(f, timeout=5)
        proc.send_signal(signal.SIGTERM)
        await ns.wait_for("STOPPING=1")
        rc = await asyncio.to_thread(proc.wait, 10)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert rc == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ns.close()


def test_notifier_without_systemd_is_silent() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None
    assert n.ready() is False and n.watchdog() is False


def test_notifier_abstract_socket_and_watchdog_pid() -> None:
    n = Notifier({"NOTIFY_SOCKET": "@cg-test", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert n.enabled
    assert n.watchdog_s is None  # the watchdog is meant for another process
    n2 = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"})
    assert n2.watchdog_s == 30.0


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "campusguard-gateway.service"
    path.write_text(unit_text)
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_file_verifies_without_any_warning(tmp_path: Path) -> None:
    text = UNIT_FILE.read_text()
    for key in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StartLimitBurst=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=campusguard",
        "LoadCredential=keys:",
    ):
        assert key in text, key
    # systemd-analyze checks that ExecStart exists: point it at this checkout's command
    text = text.replace("/opt/campusguard/.venv/bin/campusguard", CAMPUSGUARD)
    result = _verify(text, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # and the check itself bites: a misspelt key is reported on stderr (exit status 0!)
    bad = _verify(text.replace("ProtectHome=yes", "ProtectHomme=yes"), tmp_path)
    assert "ProtectHomme" in bad.stderr


def test_broken_register_names_file_unit_and_field(tmp_path: Path, site: Site) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(site.config_path.read_text().replace("addr: 258", "addr: 257"))
    result = subprocess.run(
        [CAMPUSGUARD, "gateway", "--config", str(bad), "--db", str(tmp_path / "g.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "unit shop-b" in result.stderr and "'addr'" in result.stderr
    assert "already unit shop-a" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_serial_option_is_a_clear_error(tmp_path: Path, site: Site) -> None:
    result = subprocess.run(
        [CAMPUSGUARD, "gateway", "--config", str(site.config_path), "--serial", "/dev/x@fast"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--serial" in result.stderr


def test_unit_keys_under_systemd_are_named_keys_underscore_file(tmp_path: Path) -> None:
    from gateway.core.credentials import unit_keydir

    creds = unit_keydir(None, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert creds.unit_key("shop-a") == tmp_path / "keys_shop-a.key"
    # an explicit --keydir is a plain key directory, even under systemd
    given = unit_keydir(tmp_path / "k", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert given.unit_key("shop-a") == tmp_path / "k" / "shop-a.key"
    assert unit_keydir(None, {}).unit_key("shop-a") == Path("keys") / "shop-a.key"
