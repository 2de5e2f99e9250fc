"""city.yaml: districts, stations, gateways, keys, calendar -> cluster accounts and trust."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import pytest

from gateway.core.city import load_city, parse_city
from gateway.core.errors import CityError, SubscriptionRefused
from gateway.relay.mqttsocket import subscribe
from gateway.relay.socketloop import loop_watched
from gateway.security.brokerconfig import Accounts
from gateway.security.cluster import (
    BCRYPT_COST,
    accounts_of,
    max_ack_pending,
    max_consumers,
    write_trust,
)
from gateway.security.signkeys import public_path, write_pair
from gateway.sim.natscluster import NatsCluster, find_nats_server
from gateway.sim.police import Police
from protocol import AckState, Alarm, AlarmKind
from tests.cluster.conftest import TEST_BCRYPT_COST, gateway_on
from tests.gateway.conftest import GATEWAY_ID, SITE, Site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cluster" / "city.example.yaml"
CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


def pub_body(path: Path) -> str:
    """What city.yaml's ``key`` holds: the base64 body of a .pub file."""
    return "".join(line for line in path.read_text().splitlines() if "-----" not in line)


def test_the_example_city_feeds_accounts_and_each_clients_trust(tmp_path: Path) -> None:
    city = load_city(EXAMPLE)
    accounts = accounts_of(city)
    assert accounts.dutyrooms["north-hq"] == ["elm-kindergarten", "elm-primary", "oak-primary"]
    assert accounts.dutyrooms["south-hq"] == ["ash-school"]
    assert accounts.gateways["gw-elm"] == ["elm-kindergarten", "elm-primary"]
    assert accounts.viewers == {"city-view": ["+"]}
    folders = write_trust(tmp_path, city)
    names = {u: sorted(p.name for p in f.iterdir()) for u, f in folders.items()}
    assert names["gateway-gw-elm"] == [
        "dutyroom-north-hq@elm-kindergarten.pub",
        "dutyroom-north-hq@elm-primary.pub",
    ]
    assert names["dutyroom-south-hq"] == ["gateway-gw-ash.pub"]
    assert names["viewer-city-view"] == [
        "gateway-gw-ash.pub",
        "gateway-gw-elm.pub",
        "gateway-gw-oak.pub",
    ]
    assert city.closed_on(dt.date(2027, 1, 2)) is not None
    assert city.closed_on(dt.date(2027, 1, 7)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("district: south, sites: [ash", "district: east, sites: [ash"), "district 'east'"),
        (("sites: [oak-primary]", "sites: [ash-school]"), "already gateway gw-oak's"),
        (
            ("  - {id: south-hq, district: south", "  - {id: south-hq, district: north"),
            "district 'south' has no station",
        ),
        (("version: 1", "version: 2"), "only version 1"),
        (("{from: 2027-04-06, to: 2027-04-17", "{from: 2027-04-06, to: 2027-04-01"), "before"),
    ],
)
def test_a_broken_city_is_one_line_and_exit_2(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    bad = tmp_path / "city.yaml"
    text = EXAMPLE.read_text()
    assert change[0] in text
    bad.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(CityError, match=message):
        load_city(bad)
    r = subprocess.run(
        [CAMPUSGUARD, "cluster-config", "--city", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and message.split("'")[0] in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_key_that_is_not_ed25519_is_refused() -> None:
    doc = {
        "version": 1,
        "districts": [{"id": "d"}],
        "stations": [{"id": "s", "district": "d", "key": "bm90IGEga2V5"}],
        "gateways": [{"id": "g", "district": "d", "sites": ["x"], "key": "bm90IGEga2V5"}],
    }
    with pytest.raises(CityError, match=r"stations\[0\]: key"):
        parse_city(doc)


def test_cluster_config_writes_nodes_nats_server_accepts(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    r = subprocess.run(
        [CAMPUSGUARD, "cluster-config", "--city", str(EXAMPLE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for node in ("n1", "n2", "n3"):
        conf = out / f"{node}.conf"
        assert conf.stat().st_mode & 0o077 == 0  # password hashes: the owner's only
        text = conf.read_text()
        assert "verify: true" in text and "allowed_connection_types" in text
        # the shipped cost of the password hashes (the tests' clusters use bcrypt's lowest)
        hashes = re.findall(r"\$2[aby]\$(\d\d)\$", text)
        assert hashes and set(hashes) == {f"{BCRYPT_COST:02d}"}, hashes
        check = subprocess.run(
            [find_nats_server(), "-t", "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr + check.stdout
    passwords = {p.name: p.read_text() for p in (out / "credentials").iterdir()}
    again = subprocess.run(
        [CAMPUSGUARD, "cluster-config", "--city", str(EXAMPLE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0
    assert passwords == {p.name: p.read_text() for p in (out / "credentials").iterdir()}


def test_fewer_than_three_nodes_is_refused(tmp_path: Path) -> None:
    two = tmp_path / "city.yaml"
    two.write_text(EXAMPLE.read_text().replace("  - {name: n3, host: nats3.police.example}\n", ""))
    r = subprocess.run(
        [CAMPUSGUARD, "cluster-config", "--city", str(two), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "needs 3" in r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_node_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    text = (ROOT / "cluster" / "campusguard-nats@.service").read_text()
    text = text.replace("/opt/campusguard/.venv/bin/nats-server", find_nats_server())
    unit = tmp_path / "campusguard-nats@n1.service"
    unit.write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


async def test_each_station_receives_its_district_only_and_its_ack_reaches_the_unit(
    tmp_path: Path, site: Site, ca_dir: Path
) -> None:
    """The accounts and keys come from city.yaml; the cluster enforces the districts.

    The north district has 33 sites: its station subscribes them all, and NATS refuses a
    session more than 31 ``#`` subscriptions at its default of un-PUBACKed messages (a
    station that heard nothing from its 32nd school on): the config sizes that limit.
    """
    stations = {name: tmp_path / name for name in ("north-hq", "south-hq")}
    for name, keydir in stations.items():
        write_pair(keydir, f"dutyroom-{name}")
    more = [f"school-{i}" for i in range(32)]
    write_pair(tmp_path / "more", "gateway-gw-more")
    city = parse_city(
        {
            "version": 1,
            "districts": [{"id": "north"}, {"id": "south"}],
            "stations": [
                {
                    "id": name,
                    "district": name.split("-")[0],
                    "key": pub_body(public_path(keydir, f"dutyroom-{name}")),
                }
                for name, keydir in stations.items()
            ],
            "gateways": [
                {
                    "id": GATEWAY_ID,
                    "district": "north",
                    "sites": [SITE],
                    "key": pub_body(public_path(site.keydir, f"gateway-{GATEWAY_ID}")),
                },
                {
                    "id": "gw-more",
                    "district": "north",
                    "sites": more,
                    "key": pub_body(public_path(tmp_path / "more", "gateway-gw-more")),
                },
            ],
            "viewers": [{"id": "city-view"}],
        }
    )
    for user, folder in write_trust(tmp_path / "trust", city).items():
        target = site.keydir if user.startswith("gateway-") else tmp_path / user.split("-", 1)[1]
        target.mkdir(exist_ok=True)
        for f in folder.iterdir():
            shutil.copy(f, target / f.name)
    with NatsCluster(
        tmp_path / "nats", accounts_of(city), ca_dir=ca_dir, bcrypt_cost=TEST_BCRYPT_COST
    ) as cluster:

        def client(user: str, keydir: Path, first: str, sites: Sequence[str] = ()) -> Police:
            return Police(
                cluster.settings(user, first=first),
                keydir=keydir,
                dutyroom=user.split("-", 1)[1],
                site=SITE,
                sites=sites,
                identifier=user,
            )

        # the school of this test subscribed last, after the 32 others of its district
        north = client("dutyroom-north-hq", stations["north-hq"], "n2", [*more, SITE])
        view = client("viewer-city-view", tmp_path / "city-view", "n1")

        def connect(user: str, first: str) -> aiomqtt.Client:
            s = cluster.settings(user, first=first)[0]
            return loop_watched(
                aiomqtt.Client(
                    s.host,
                    s.port,
                    username=s.username,
                    password=s.password,
                    tls_context=s.tls_context(),
                    identifier=f"{user}-check",
                    clean_session=False,
                )
            )

        # on one connection the north station subscribes its 33 sites, every one granted
        # (Police would retry a refusal on another connection, where NATS lets it pass)
        async with connect("dutyroom-north-hq", "n2") as c:
            for school in [*more, SITE]:
                await subscribe(c, f"campusguard/{school}/#")
        # the south station may not read the north's site: the broker refuses it
        with pytest.raises(SubscriptionRefused):
            async with connect("dutyroom-south-hq", "n3") as south:
                await subscribe(south, f"campusguard/{SITE}/#")
        for p in (north, view):
            await p.start(timeout=30)
        try:
            async with gateway_on(cluster, site, "n1") as gw:
                frame = site.unit("shop-0-0", epoch=5).send(Alarm(AlarmKind.PANIC, 1, 1))
                await north.wait_for(lambda: bool(north.alarms()), 30, "the alarm")
                await view.wait_for(lambda: bool(view.alarms()), 30, "the alarm")
                await north.ack(str(north.alarms()[0].get("incident")), by="North desk")
                await site.port.wait_ack(frame, AckState.POLICE_ACK, timeout=30)
                await view.wait_for(
                    lambda: bool(view.alarms(update="police_ack")), 30, "the ack, seen by all"
                )
                assert gw.store.conn.execute("SELECT police_ack_by FROM incidents").fetchone() == (
                    "North desk",
                )
        finally:
            for p in (north, view):
                await p.stop()


def test_a_district_too_big_for_one_stations_session_is_refused() -> None:
    def accounts(sites: int) -> Accounts:
        return Accounts(
            prefix="campusguard",
            gateways={"g": ["s"]},
            dutyrooms={"d": [f"s{i}" for i in range(sites)]},
        )

    # NATS allows 65,535 un-PUBACKed messages per session: 1,024 per subscription (its
    # default) for a few sites, fewer for a big district, refused below 8
    assert max_ack_pending(accounts(1)) == 1024
    assert max_ack_pending(accounts(300)) * 300 * 9 <= 65535
    with pytest.raises(ValueError, match="split its district"):
        max_ack_pending(accounts(1000))


def test_the_nodes_allow_a_citys_consumers_on_the_mqtt_message_stream(
    tmp_path: Path, ca_dir: Path
) -> None:
    # 300 gateways (3 ack filters each) and two stations of 150 sites (P/<site>/# is two
    # consumers): ~1,500 consumers on $MQTT_msgs, one per QoS 1 subscription. nats-server
    # 2.15 allows 1,000 per stream by default: the 301-gateway connect storm stalled on
    # "maximum consumers limit reached (10026)"
    gateways = {f"g{i}": [f"s{i}"] for i in range(300)}
    accounts = Accounts(
        prefix="campusguard",
        gateways=gateways,
        dutyrooms={
            d: [f"s{i}" for i in range(300) if i % 2 == k] for k, d in enumerate(("n", "s"))
        },
    )
    made = 300 * 3 + 2 * (150 * 2 + 1)
    assert max_consumers(accounts) >= 2 * made
    with NatsCluster(
        tmp_path / "nats", accounts, ca_dir=ca_dir, bcrypt_cost=TEST_BCRYPT_COST
    ) as cluster:
        limits = cluster.varz("n1")["jetstream"]["limits"]
    assert limits["default_max_consumers"] == max_consumers(accounts)
