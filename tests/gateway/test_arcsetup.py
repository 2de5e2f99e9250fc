"""ARC configuration: boards.yaml's arc section, --arc URLs, key files, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.arc.dc09 import Token
from gateway.arc.wiring import parse_arc_url, plan_arc
from gateway.core.config import parse_config
from gateway.core.errors import ConfigError, KeyMissingError, UsageError
from tests.support.register import shipped

ROOT = Path(__file__).resolve().parents[2]
CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
ARC: dict[str, Any] = {
    "id": "city",
    "protocol": "sia-dcs",
    "key_format": "hex",
    "receivers": [
        {"id": "primary", "host": "arc1.example", "port": 5000, "receiver": "1A", "line": 2},
        {"id": "backup", "host": "arc2.example", "port": 5001},
    ],
}


def test_arc_section_and_a_key_file_per_receiver(tmp_path: Path) -> None:
    config = parse_config(shipped(arc=ARC))
    (tmp_path / "dc09-primary.key").write_text("00112233445566778899aabbccddeeff\n")
    (tmp_path / "dc09-backup.key").write_text("ff" * 32 + "\n")
    plan = plan_arc(config, tmp_path)
    assert plan is not None
    s = plan.settings
    assert (s.name, s.token) == ("city", Token.SIA_DCS)
    assert [(p.name, p.receiver, p.line, len(p.key or b"")) for p in s.paths] == [
        ("arc1.example:5000", "1A", "2", 16),
        ("arc2.example:5001", "0", "0", 32),
    ]


def test_a_missing_receiver_key_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(KeyMissingError, match=re.escape("dc09-primary.key")):
        plan_arc(parse_config(shipped(arc=ARC)), tmp_path)


def test_cli_arc_replaces_the_receivers_and_takes_a_key_file(tmp_path: Path) -> None:
    config = parse_config(shipped())
    key = tmp_path / "arc.key"
    key.write_text("ABCDEFGHIJKLMNOP")
    plan = plan_arc(config, tmp_path, ["dc09+tcp://1f2e@127.0.0.1:6000"], key)
    assert plan is not None and plan.default_account == "1F2E"
    assert [(p.host, p.port, p.key) for p in plan.settings.paths] == [
        ("127.0.0.1", 6000, b"ABCDEFGHIJKLMNOP")
    ]
    assert plan_arc(config, tmp_path) is None  # no arc section, no --arc: no ARC


@pytest.mark.parametrize(
    ("urls", "key", "words"),
    [
        (["tcp://1234@h:1"], None, "dc09+tcp://ACCOUNT@HOST:PORT"),
        (["dc09+tcp://h:1"], None, "ACCOUNT is 3-16 hex"),
        (["dc09+tcp://12@h:1"], None, "ACCOUNT is 3-16 hex"),
        (["dc09+tcp://1234@h"], None, "dc09+tcp://"),
        (["dc09+tcp://1234@h:99999"], None, "bad port"),
        (["dc09+tcp://1234@a:1", "dc09+tcp://5678@b:1"], None, "one account"),
        (["dc09+tcp://1234@a:1", "dc09+tcp://1234@b:1"], "k", "single receiver"),
        (["dc09+tcp://1234@a:1"], "0" * 32, "say which"),
        ([], "k", "needs --arc"),
    ],
)
def test_bad_arc_options_are_named(
    tmp_path: Path, urls: list[str], key: str | None, words: str
) -> None:
    path = None
    if key is not None:
        path = tmp_path / "arc.key"
        path.write_text(key if len(key) > 1 else "ABCDEFGHIJKLMNOP")
    with pytest.raises(UsageError, match=re.escape(words)):
        plan_arc(parse_config(shipped()), tmp_path, urls, path)


def test_an_arc_needs_a_zone_for_every_unit(tmp_path: Path) -> None:
    doc = shipped()
    del doc["units"][1]["zone"]
    (tmp_path / "k").write_text("ABCDEFGHIJKLMNOP")
    with pytest.raises(UsageError, match=f"unit {doc['units'][1]['id']}: field 'zone'"):
        plan_arc(parse_config(doc), tmp_path, ["dc09+tcp://1234@a:1"], tmp_path / "k")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["units"][1].update(zone=d["units"][0]["zone"]), "already unit"),
        (lambda d: d["units"][0].update(zone=1000), "outside 1..999"),
        (lambda d: d["sites"][0].update(account="12"), "3-16 hex digits"),
        (lambda d: d["sites"][0].update(account="XYZ1"), "3-16 hex digits"),
        (lambda d: d["sites"][0].update(partition=100), "outside 0..99"),
        (lambda d: d.update(arc={**ARC, "protocol": "contact-id"}), "adm-cid, sia-dcs"),
        (lambda d: d.update(arc={**ARC, "receivers": []}), "at least one"),
        (lambda d: d.update(arc={**ARC, "key": "secret"}), "field 'key'"),
        (
            lambda d: d.update(
                arc={**ARC, "receivers": [{"id": "p", "host": "h", "port": 1, "line": "XYZ"}]}
            ),
            "1-6 hex",
        ),
    ],
)
def test_register_mistakes_are_named(change: Any, words: str) -> None:
    doc = shipped()
    change(doc)
    with pytest.raises(ConfigError, match=words):
        parse_config(doc)


def test_cli_bad_arc_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            CAMPUSGUARD,
            "gateway",
            "--config",
            str(ROOT / "boards.yaml"),
            "--db",
            str(tmp_path / "j.db"),
            "--arc",
            "dc09+tcp://nothex@h:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "campusguard gateway: --arc 'dc09+tcp://nothex@h:1': expected "
        "dc09+tcp://ACCOUNT@HOST:PORT: ACCOUNT is 3-16 hex digits"
    ]


def test_parse_arc_url() -> None:
    account, r = parse_arc_url("dc09+tcp://abc1@[::1]:5000")
    assert (account, r.host, r.port) == ("ABC1", "::1", 5000)
