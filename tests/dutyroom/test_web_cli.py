"""``campusguard dutyroom`` as a person and systemd run it: accounts, HTTPS, errors, unit."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.security.brokerconfig import Accounts
from gateway.security.signkeys import dutyroom_kid, gateway_kid, public_path, write_pair
from gateway.sim.localbroker import LocalBroker

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
ROOT = Path(__file__).resolve().parents[2]
UNIT_FILE = ROOT / "systemd" / "campusguard-dutyroom.service"


def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    write_pair(d, dutyroom_kid("police"))
    write_pair(tmp_path / "gw", gateway_kid("gw1"))
    shutil.copy(public_path(tmp_path / "gw", gateway_kid("gw1")), d)
    return d


def dutyroom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAMPUSGUARD, "dutyroom", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    keys = str(keydir(tmp_path))
    for args, what in (
        (["--keydir", str(empty), "--db", str(tmp_path / "a.db")], "no gateway public key"),
        (["--listen", "nowhere", "--db", str(tmp_path / "a.db")], "--listen 'nowhere'"),
        (
            ["--keydir", keys, "--signing-key", str(tmp_path / "x.pem")],
            "dutyroom-<name>.pem",
        ),
        (
            ["--keydir", keys, "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", "k"],
            "--tls-cert",
        ),
    ):
        r = dutyroom(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0], r.stderr


def test_add_account_prints_a_new_password_once(tmp_path: Path) -> None:
    keys = keydir(tmp_path)
    db = tmp_path / "var" / "dutyroom.db"
    base = ["--keydir", str(keys), "--db", str(db)]
    r = dutyroom(*base, "--add-account", "li", "operator", "Officer Li")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^password: \S{12,}$", r.stdout, re.M)
    r = dutyroom(
        *base,
        "--add-account",
        "wang",
        "viewer",
        "Wang",
        env={"CAMPUSGUARD_DUTYROOM_PASSWORD": "a long test password"},
    )
    assert r.returncode == 0 and "password:" not in r.stdout
    r = dutyroom(*base, "--add-account", "x", "admin", "X")
    assert r.returncode == 2 and "role 'admin'" in r.stderr
    assert db.stat().st_mode & 0o077 == 0


async def test_serves_https_from_the_private_ca_and_stops_on_sigterm(tmp_path: Path) -> None:
    keys = keydir(tmp_path)
    db = tmp_path / "var" / "dutyroom.db"
    accounts = Accounts(gateways={"gw1": ["s1"]}, dutyrooms={"police": ["s1"]})
    with LocalBroker(tmp_path / "mqtt", accounts=accounts) as broker:
        s = broker.settings("dutyroom-police")
        env = {"CAMPUSGUARD_DUTYROOM_PASSWORD": "a long test password"}
        base = ["--keydir", str(keys), "--db", str(db), "--listen", "127.0.0.1:0"]
        assert (
            dutyroom(*base, "--add-account", "li", "operator", "Officer Li", env=env).returncode
            == 0
        )
        proc = await asyncio.create_subprocess_exec(
            CAMPUSGUARD,
            "dutyroom",
            *base,
            *s.cli_args(),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **s.environ()},
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                line = (await proc.stdout.readline()).decode()
            url = line.split()[-1]
            assert url.startswith("https://127.0.0.1:"), line
            # trusted through the CA it made beside the database, and only through it
            ctx = ssl.create_default_context(cafile=str(db.parent / "ca" / "ca.pem"))
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "login", ssl=ctx) as r:
                    assert r.status == 200
                    assert "SameSite=Strict" in r.headers["Set-Cookie"]
                    assert "Secure" in r.headers["Set-Cookie"]
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                async with http.get(url, ssl=ctx, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/login"
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await http.get(url, ssl=ssl.create_default_context())
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
        assert code == 128 + signal.SIGTERM


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_file_verifies_without_any_warning(tmp_path: Path) -> None:
    text = UNIT_FILE.read_text()
    for key in ("DynamicUser=yes", "StateDirectory=campusguard-dutyroom", "LoadCredential="):
        assert key in text, key
    text = text.replace("/opt/campusguard/.venv/bin/campusguard", CAMPUSGUARD)
    path = tmp_path / "campusguard-dutyroom.service"
    path.write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


async def test_demo_serve_prints_the_address_and_a_login_that_works(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        CAMPUSGUARD,
        "demo",
        "--serve",
        "--units",
        "3",
        "--links",
        "1",
        "--presses",
        "0",
        "--listen",
        "127.0.0.1:0",
        "--keep",
        str(tmp_path / "demo"),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    text = ""
    try:
        async with asyncio.timeout(120):  # a fleet start on a loaded machine
            while "login for this run only" not in text:
                line = (await proc.stdout.readline()).decode()
                assert line, text
                text += line
        url = re.search(r"duty room: (https://\S+)", text)
        ca = re.search(r"CA \(this run's\): (\S+)", text)
        login = re.search(r"login for this run only: (\S+) / (\S+)", text)
        assert url and ca and login, text
        ctx = ssl.create_default_context(cafile=ca.group(1))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(url.group(1) + "login", ssl=ctx) as r:
                token = re.search(r"name='csrf' value='([^']+)'", await r.text())
                assert token
            form = {"csrf": token.group(1), "name": login.group(1), "password": login.group(2)}
            async with http.post(
                url.group(1) + "login", data=form, ssl=ctx, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.headers["Location"] == "/", await r.text()
            async with http.get(url.group(1) + "duty", ssl=ctx) as r:
                assert r.status == 200 and "Guard duty" in await r.text()
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            code = await proc.wait()
    assert code == 0
