"""gateway/arc/feed.py: journalled incidents and events reach the ARC queue atomically, and
the whole gateway reports a unit's alarm to pysiaalarm's receiver over encrypted DC-09."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pysiaalarm import SIAAccount
from pysiaalarm.aio import SIAClient
from pysiaalarm.event import SIAEvent

from gateway.arc.feed import Addressing, ArcFeed
from gateway.arc.queue import ArcQueue
from gateway.arc.wiring import plan_arc
from gateway.core.config import load_config, parse_config
from gateway.journal.store import Store
from gateway.service.status import read, render
from protocol import Alarm, AlarmKind
from tests.gateway.conftest import Police, Site, running_gateway
from tests.support.mosquitto import Mosquitto
from tests.support.timing import scaled

ROOT = Path(__file__).resolve().parents[2]


def with_arc_fields(site: Site, account: str = "1234") -> None:
    """Give the test register's site an account and each unit a zone (001, 002, ...)."""
    doc = yaml.safe_load(site.config_path.read_text())
    doc["sites"][0]["account"] = account
    doc["sites"][0]["partition"] = 2
    for i, u in enumerate(doc["units"], 1):
        u["zone"] = i
    site.config_path.write_text(yaml.safe_dump(doc))
    site.config = load_config(site.config_path)


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Store, ArcQueue, ArcFeed]:
    doc = yaml.safe_load((ROOT / "boards.yaml").read_text())
    config = parse_config(doc)
    store = Store(tmp_path / "j.db", fsync=lambda fd: None)
    q = ArcQueue(store)
    f = ArcFeed(q, ["arc"], Addressing.from_config(config, None))
    store.on_enqueue = f.on_enqueue
    return store, q, f


def rows(store: Store) -> list[tuple[Any, ...]]:
    return store.conn.execute(
        "SELECT account, qualifier, code, grp, zone FROM arc_queue ORDER BY id"
    ).fetchall()


def enqueue(store: Store, payload: dict[str, Any], topic: str = "cg/s/event/u") -> None:
    with store.transaction():
        store.enqueue(at=time.time(), topic=topic, payload=json.dumps(payload))


def test_the_shipped_register_has_arc_addresses() -> None:
    config = load_config(ROOT / "boards.yaml")
    a = Addressing.from_config(config, None)
    assert a.accounts and len(a.zones) == len(config.units)
    assert config.arc is None  # the example register reports to no ARC (see its comments)


def test_incidents_and_coded_events_are_queued_as_contact_id(
    feed: tuple[Store, ArcQueue, ArcFeed],
) -> None:
    store, q, f = feed
    a = f.addressing
    site = next(iter(a.accounts))
    unit, zone = next(iter(a.zones.items()))
    acct, grp = a.account(site), a.groups[site]
    enqueue(
        store,
        {
            "incident": "i1",
            "update": "new",
            "contact_id": 120,
            "site": site,
            "unit": unit,
            "kind": "panic",
        },
    )
    enqueue(
        store,
        {
            "incident": "i1",
            "update": "presses",
            "contact_id": 120,
            "site": site,
            "unit": unit,
            "kind": "panic",
        },
    )  # nothing new for the ARC
    enqueue(
        store,
        {
            "incident": "i1",
            "update": "kind",
            "contact_id": 121,
            "site": site,
            "unit": unit,
            "kind": "duress",
        },
    )
    enqueue(
        store,
        {"event": 7, "kind": "cancel", "code": 406, "qualifier": 1, "site": site, "unit": unit},
    )
    enqueue(
        store,
        {"event": 8, "kind": "online", "code": 381, "qualifier": 3, "site": site, "unit": unit},
    )
    enqueue(store, {"event": 9, "kind": "escalation", "code": None, "site": site})
    enqueue(
        store,
        {"event": 10, "kind": "link_down", "code": 350, "qualifier": 1, "site": site, "unit": None},
    )
    assert rows(store) == [
        (acct, 1, 120, grp, zone),
        (acct, 1, 121, grp, zone),
        (acct, 1, 406, grp, zone),
        (acct, 3, 381, grp, zone),
        (acct, 1, 350, grp, 0),  # the gateway's own trouble: zone 000
    ]
    assert q.waiting("arc") == 5


def test_retained_board_copies_are_not_reported_again(
    feed: tuple[Store, ArcQueue, ArcFeed],
) -> None:
    store, _, f = feed
    alarm = {
        "incident": "i1",
        "update": "new",
        "contact_id": 120,
        "site": next(iter(f.addressing.groups)),
        "unit": next(iter(f.addressing.zones)),
    }
    enqueue(store, alarm, "cg/s/alarm/u")
    with store.transaction():
        store.enqueue(at=0.0, topic="cg/s/open/i1", payload=json.dumps(alarm), retain=True)
        store.enqueue(at=0.0, topic="cg/s/unit/u/state", payload=json.dumps(alarm), retain=True)
    enqueue(store, alarm, "cg/s/status/u")  # not an alarm, event or duty topic
    assert len(rows(store)) == 1


def test_duty_events_use_the_post_units_zone(feed: tuple[Store, ArcQueue, ArcFeed]) -> None:
    store, _, f = feed
    post, unit = next(iter(f.addressing.post_units.items()))
    enqueue(
        store,
        {
            "event": 1,
            "kind": "missed_checkin",
            "code": 102,
            "qualifier": 1,
            "site": next(iter(f.addressing.groups)),
            "post": post,
            "unit": None,
        },
    )
    assert rows(store)[0][1:3] == (1, 102) and rows(store)[0][4] == f.addressing.zones[unit]


def test_a_rolled_back_journal_entry_leaves_nothing_for_the_arc(
    feed: tuple[Store, ArcQueue, ArcFeed],
) -> None:
    store, _, _ = feed
    with pytest.raises(RuntimeError), store.transaction():
        store.enqueue(
            at=0.0,
            topic="cg/s/alarm/u",
            payload=json.dumps(
                {"incident": "i", "update": "new", "contact_id": 120, "site": "x", "unit": "y"}
            ),
        )
        raise RuntimeError("the journal entry failed")
    assert rows(store) == []
    assert store.pending_count() == 0


def test_an_unreadable_payload_never_undoes_the_journal(
    feed: tuple[Store, ArcQueue, ArcFeed],
) -> None:
    store, _, f = feed
    enqueue(store, {"incident": "i", "update": "new", "contact_id": "x"})
    with store.transaction():
        store.enqueue(at=0.0, topic="cg/s/event/u", payload="not json")
    assert store.pending_count() == 2 and rows(store) == [] and f.errors == 2


async def test_a_units_alarm_reaches_pysiaalarm_encrypted(
    site: Site, broker: Mosquitto, tmp_path: Path
) -> None:
    with_arc_fields(site)
    got: asyncio.Queue[SIAEvent] = asyncio.Queue()

    async def on_event(ev: SIAEvent) -> None:
        await got.put(ev)

    key = "0123456789ABCDEFGHIJKLMN"  # AES-192, panel style
    sia = SIAClient("127.0.0.1", 0, [SIAAccount("1234", key)], on_event)
    await sia.async_start()
    assert sia.server is not None
    port = sia.server.sockets[0].getsockname()[1]
    (tmp_path / "arc.key").write_text(key + "\n")
    plan = plan_arc(
        site.config, site.keydir, [f"dc09+tcp://1234@127.0.0.1:{port}"], tmp_path / "arc.key"
    )
    try:
        async with running_gateway(site, broker, arc=plan) as gw:
            unit = site.unit("shop-b", epoch=2)
            await unit.send_until_acked(unit.make(Alarm(AlarmKind.PANIC, 1, 1)), timeout=5)
            ev = await asyncio.wait_for(got.get(), scaled(10))
            while ev.message_type.value == "NULL":  # the path's supervision, from the start
                ev = await asyncio.wait_for(got.get(), scaled(10))
            assert gw.arc is not None
            await asyncio.wait_for(
                gw.arc.transmitter.wait_until(lambda: gw.arc.queue.waiting("arc") == 0), 10
            )
    finally:
        await sia.async_stop()
    assert (ev.account, ev.code, ev.event_type, ev.partition, ev.ri, ev.encrypted) == (
        "1234",
        "PA",
        "120",
        "02",
        "002",
        True,
    )


async def test_a_dead_arc_path_is_an_event_for_the_police(
    site: Site, broker: Mosquitto, police: Police, tmp_path: Path
) -> None:
    with_arc_fields(site)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # a port nobody listens on: connections are refused
    port = dead.getsockname()[1]
    (tmp_path / "arc.key").write_text("ABCDEFGHIJKLMNOP")
    plan = plan_arc(
        site.config, site.keydir, [f"dc09+tcp://1234@127.0.0.1:{port}"], tmp_path / "arc.key"
    )
    try:
        async with running_gateway(site, broker, arc=plan) as gw:
            unit = site.unit("shop-a", epoch=2)
            await unit.send_until_acked(unit.make(Alarm(AlarmKind.PANIC, 1, 1)), timeout=5)
            await police.wait_for(lambda: bool(police.events("arc_path")), timeout=30)
            assert gw.arc is not None
            assert gw.arc.queue.waiting("arc") >= 1  # the alarm waits for the centre
    finally:
        dead.close()
    ev = police.events("arc_path")[0]
    assert (ev["code"], ev["qualifier"]) == (351, 1)
    assert ev["detail"]["receiver"] == f"127.0.0.1:{port}"
    assert police.alarms()  # the police got the alarm regardless
    # the installer sees it in campusguard status (snapshot written at the stop)
    conn = sqlite3.connect(site.db)
    try:
        state = read(conn, site.config, time.time())
    finally:
        conn.close()
    assert state["arc"]["paths"][0]["up"] is False
    assert state["arc"]["queues"]["arc"]["waiting"] >= 1
    text = render(state)
    assert f"127.0.0.1:{port}" in text and "DOWN" in text and "queue arc: " in text
