"""One broker option group for every client; the signing keys keygen makes."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.brokeroptions import add_broker_options, broker_settings
from gateway.core.broker import PASSWORD_ENV, BrokerSettings
from gateway.core.errors import GatewayError
from gateway.security.envelope import Signer
from gateway.security.pki import ensure_ca
from gateway.security.signkeys import dutyroom_keys, gateway_keys, read_private, write_pair
from tests.gateway.conftest import GATEWAY_USER, Site, locked_broker, running_gateway
from tests.support.mosquitto import Mosquitto

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_broker_options(p)
    return p.parse_args(argv)


def test_brokers_in_order_password_from_the_environment() -> None:
    args = parse("--broker", "mqtt://gw@node1:1883", "--broker", "mqtt://gw:inurl@node2")
    one, two = broker_settings(args, {PASSWORD_ENV: "s3cret"})
    assert (one.host, one.username, one.password) == ("node1", "gw", "s3cret")
    assert (two.host, two.port, two.password) == ("node2", 1883, "inurl")
    assert [s.host for s in broker_settings(parse(), {})] == ["127.0.0.1"]
    assert parse().prefix == "campusguard"


def test_a_missing_certificate_file_is_named() -> None:
    with pytest.raises(GatewayError, match=r"/nonexistent\.pem"):
        broker_settings(parse("--broker", "mqtts://h", "--ca-file", "/nonexistent.pem"), {})
    with pytest.raises(GatewayError, match="mqtts"):
        broker_settings(parse("--ca-file", __file__), {})


def test_settings_round_trip_through_the_options(tmp_path: Path) -> None:
    ca = str(ensure_ca(tmp_path).cert)
    s = BrokerSettings("h", 8883, tls=True, username="dutyroom-x", password="pw", ca_file=ca)
    args = parse(*s.cli_args())
    (back,) = broker_settings(args, s.environ())
    assert back == s


@pytest.mark.parametrize("command", ["gateway", "console", "demo"])
def test_every_client_shows_the_same_broker_group_with_defaults(command: str) -> None:
    out = subprocess.run(
        [CAMPUSGUARD, command, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--broker URL", "--ca-file PEM", "--client-cert PEM", "--client-key PEM"):
        assert flag in out
    assert PASSWORD_ENV in out and "(default: campusguard)" in out


def test_console_with_a_missing_ca_file_says_so_and_exits_2() -> None:
    res = subprocess.run(
        [CAMPUSGUARD, "console", "--broker", "mqtts://localhost", "--ca-file", "/nonexistent.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "campusguard console: --ca-file /nonexistent.pem: No such file or directory"
    ]


async def test_the_gateway_fails_over_to_the_next_broker(
    site: Site, broker: Mosquitto, tmp_path: Path, ca_dir: Path
) -> None:
    dead = locked_broker(tmp_path / "dead", ca_dir)  # never started
    async with running_gateway(site, dead, more_brokers=(broker.settings(GATEWAY_USER),)) as gw:
        await gw.relay.connected.wait()
        assert gw.relay.failures >= 1


def test_keygen_makes_duty_room_and_gateway_keys(tmp_path: Path) -> None:
    cfg = Path(__file__).resolve().parents[2] / "boards.yaml"
    keydir = tmp_path / "keys"
    run = [CAMPUSGUARD, "keygen", "--keydir", str(keydir), "--config", str(cfg)]
    subprocess.run([*run, "--dutyroom", "police-hexi"], check=True, capture_output=True)
    subprocess.run([*run, "--gateway"], check=True, capture_output=True)
    for name in ("dutyroom-police-hexi.pem", "gateway-hx-gw1.pem"):
        assert stat.S_IMODE(os.stat(keydir / name).st_mode) == 0o600
        read_private(keydir / name)
    assert set(dutyroom_keys(keydir)) == {"dutyroom-police-hexi"}
    assert set(gateway_keys(keydir)) == {"gateway-hx-gw1"}
    again = subprocess.run([*run, "--gateway"], capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    nothing = subprocess.run([*run], capture_output=True, text=True, check=False)
    assert nothing.returncode == 2


def test_duty_room_keys_per_site(tmp_path: Path) -> None:
    subprocess.run(
        [CAMPUSGUARD, "keygen", "--dutyroom", "east", "--keydir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    pub = (tmp_path / "dutyroom-east.pub").read_bytes()
    (tmp_path / "dutyroom-east.pub").unlink()
    (tmp_path / "dutyroom-east@site-a.pub").write_bytes(pub)
    (tmp_path / "dutyroom-east@site-b.pub").write_bytes(pub)
    east = dutyroom_keys(tmp_path)["dutyroom-east"]
    assert east.may_act_for("site-a") and east.may_act_for("site-b")
    assert not east.may_act_for("site-c")


def test_signing_keys_are_found_as_systemd_hands_them_over(tmp_path: Path) -> None:
    """LoadCredential=keys:DIR names each file keys_<file>."""
    made = tmp_path / "made"
    for kid in ("gateway-gw1", "dutyroom-east"):
        write_pair(made, kid)
    creds = tmp_path / "credentials"
    creds.mkdir()
    for f in made.iterdir():
        (creds / f"keys_{f.name}").write_bytes(f.read_bytes())
    assert Signer.load(creds, "gateway-gw1").kid == "gateway-gw1"
    assert set(dutyroom_keys(creds)) == {"dutyroom-east"}
    assert set(gateway_keys(creds)) == {"gateway-gw1"}
