"""Ordinary mistakes on the command line: one clear line, exit status 2, never a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import main as cli
from gateway.security.envelope import Signer
from gateway.security.signkeys import gateway_kid
from tests.gateway.conftest import GATEWAY_ID, GATEWAY_USER, Site, client_for, locked_broker
from tests.support.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
BOARDS = str(ROOT / "boards.yaml")
README = str(ROOT / "README.md")


def campusguard(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [CAMPUSGUARD, *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    return subprocess.CompletedProcess(
        res.args, res.returncode, res.stdout.decode(), res.stderr.decode()
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["decode", "zz12"], "not hex: 'z'"),
        (["decode", "0"], "odd number of hex digits"),
        (["decode", "00", "--key", "1234"], "--key: 2 bytes, need 32"),
        (["decode", "00", "--key", "xyz"], "--key: not hex"),
    ],
)
def test_decode_bad_input_is_one_line_and_status_2(args: list[str], words: str) -> None:
    res = campusguard(*args)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert line.startswith("campusguard decode: ") and words in line


def test_decode_takes_raw_wire_bytes_on_stdin() -> None:
    # a frame of the golden vectors, as wire bytes (COBS, 0x00 delimited) and as hex text
    import json

    vectors = json.loads((ROOT / "protocol" / "vectors" / "vectors.json").read_text())
    wire = bytes.fromhex(vectors["vectors"][0]["wire"].replace(" ", ""))
    raw = campusguard("decode", stdin=wire + b"\x01\xfe\x00")  # and a garbled frame
    hexed = campusguard("decode", stdin=wire.hex(" ").encode() + b"\n")
    assert "Traceback" not in raw.stderr and raw.stderr == ""
    first = raw.stdout.splitlines()[0]
    assert first == hexed.stdout.splitlines()[0] and '"type"' in first
    assert '"reject"' in raw.stdout and raw.returncode == 1
    assert hexed.returncode == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["console", "--broker", "localhost"], "--broker 'localhost': use mqtt://host:port"),
        (
            ["console", "--broker", "mqtts://127.0.0.1:1", "--ca-file", "/nonexistent.pem"],
            "--ca-file /nonexistent.pem: No such file or directory",
        ),
        (
            ["console", "--broker", "mqtts://127.0.0.1:1", "--ca-file", str(ROOT / "README.md")],
            f"--ca-file {ROOT / 'README.md'}: not a usable PEM file",
        ),
        (
            ["gateway", "--config", BOARDS, "--broker", "mqtts://x:1", "--ca-file", "/no.pem"],
            "--ca-file /no.pem: No such file or directory",
        ),
        (
            ["gateway", "--config", BOARDS, "--broker", "mqtt://127.0.0.1:1", "--ca-file", README],
            "--ca-file is for TLS: use --broker mqtts://127.0.0.1:1",
        ),
        (
            ["keygen", "shop-frut", "--config", str(ROOT / "boards.yaml")],
            "did you mean 'shop-fruit'",
        ),
        (
            ["deploy", "nobody", "--port", "/dev/null", "--config", str(ROOT / "boards.yaml")],
            "unit 'nobody' is not in",
        ),
        (["keygen", "shop-fruit", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: file: no"),
        (["unit", "nobody", "--uart", "/x", "--config", BOARDS], "unit 'nobody' is not in"),
        (
            ["unit", "shop-fruit", "--uart", "/x", "--config", BOARDS, "--keydir", "/no"],
            "no key for shop-fruit: /no/shop-fruit.key is missing",
        ),
        (["deploy", "x", "--port", "p", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["gateway", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: file: no such file"),
        (["report", "--month", "2026-11", "--db", "/nonexistent.db"], "/nonexistent.db"),
    ],
)
def test_broker_and_register_mistakes_are_one_line_and_status_2(
    args: list[str], words: str
) -> None:
    res = campusguard(*args)
    line = one_line(res.stderr)
    assert res.returncode == 2, line
    assert line.startswith(f"campusguard {args[0]}: ") and words in line, line


# The console is started through this, so that what it inherits is the test's choice and
# not the shell's that ran pytest: a background job of a non-interactive shell (a CI
# script, `make test &`) starts with SIGINT ignored, and so does everything it execs.
INHERIT = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.mark.parametrize(
    ("inherited", "sig", "status"),
    [
        ("SIG_DFL", signal.SIGINT, 130),
        ("SIG_IGN", signal.SIGINT, 130),  # Ctrl-C still stops a console started ignoring it
        ("SIG_IGN", signal.SIGTERM, 143),
    ],
)
async def test_console_ctrl_c_leaves_no_task_exception(
    tmp_path: Path, ca_dir: Path, site: Site, inherited: str, sig: signal.Signals, status: int
) -> None:
    with locked_broker(tmp_path / "broker", ca_dir) as broker:
        # a retained signed status: the console prints it once connected and subscribed
        topic = f"campusguard/gateway/{GATEWAY_ID}/status"
        signer = Signer.load(site.keydir, gateway_kid(GATEWAY_ID))
        body = {"gateway": GATEWAY_ID, "state": "online", "at": "2026-12-01T00:00:00.000Z"}
        async with client_for(broker.settings(GATEWAY_USER)) as gw:
            await gw.publish(topic, signer.seal_obj(topic, body), qos=1, retain=True)
        s = broker.settings("dutyroom-desk2")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            INHERIT,
            inherited,
            CAMPUSGUARD,
            "console",
            *s.cli_args(),
            "--keydir",
            str(site.dutyroom_dir),
            "--json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **s.environ()},
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), scaled(20))
            assert GATEWAY_ID.encode() in line
            proc.send_signal(sig)
            rc = await asyncio.wait_for(proc.wait(), scaled(20))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        err = (await proc.stderr.read()).decode()
    assert "never retrieved" not in err and "Traceback" not in err, err
    assert rc == status, err


def test_cli_version_and_verbose_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        cli(["--version"])
    assert ex.value.code == 0
    assert capsys.readouterr().out.startswith("campusguard 0.")
    import json

    vectors = json.loads((ROOT / "protocol" / "vectors" / "vectors.json").read_text())
    wire = vectors["vectors"][0]["wire"]
    res = campusguard("decode", "-v", wire)  # -v after the subcommand is an option too
    assert res.returncode == 0, res.stderr
    assert campusguard("-v", "decode", "-v", wire).returncode == 0


def test_every_help_shows_defaults_and_no_developer_notes() -> None:
    top = campusguard("--help").stdout
    assert "add_arguments" not in top and "run(args)" not in top
    assert "--version" in top
    gw = campusguard("gateway", "--help").stdout
    assert "(default: boards.yaml)" in gw and "(default: mqtt://127.0.0.1:1883)" in gw
    helps = {}
    for name in ("console", "deploy", "keygen", "report", "demo", "decode"):
        res = campusguard(name, "--help")
        assert res.returncode == 0 and "-v, --verbose" in res.stdout, name
        helps[name] = res.stdout
    assert "(default: boards.yaml)" in helps["keygen"]
    assert "(default: keys)" in helps["deploy"]


def test_pythonpath_is_not_needed() -> None:
    # the console script runs from anywhere (no checkout on the path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [CAMPUSGUARD, "--version"], capture_output=True, text=True, env=env, cwd="/", timeout=30
    )
    assert res.returncode == 0
