"""The pipeline's decisions without a broker (issue 19): fresh or duplicate, the ACK state a
unit is told, a failed commit taken back, security events, links, inbound routing.

A real journal, the real downlink and codec; the link is a recording one, and what it
carries is decoded the way a unit would. The police acknowledgement goes through
:func:`police_ack`, the one place that builds it: a duty-room-signed envelope (issue 12),
checked by the verifier the service gives the pipeline, with the duty room's key authorised.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.core.config import Unit
from gateway.core.errors import AckRejected
from gateway.core.timefmt import iso
from gateway.journal.store import Store
from gateway.link.downlink import Downlink
from gateway.link.receiver import Received
from gateway.pipeline.pipeline import SECURITY_EVENT_INTERVAL_S, Pipeline
from gateway.relay.acks import AckVerifier, make_ack
from gateway.security.envelope import Signer, parse, verify
from gateway.security.signkeys import dutyroom_keys, dutyroom_kid
from protocol import (
    Ack,
    AckState,
    Codec,
    Deframer,
    Frame,
    Heartbeat,
    HeartbeatFlags,
    Reason,
    ReplayGuard,
    Signal,
    SignalPattern,
    Verdict,
)
from protocol.keys import TEST_KEY
from tests.support.timing import scaled

from .conftest import DUTYROOM, install_signing_keys
from .helpers import (
    T0,
    alarm,
    cancel,
    config,
    duress_checkin,
    outbox,
    publications,
    updates,
)

PREFIX = "campusguard/v1"


class RecordingLink:
    """A link that takes every write and decodes it as the unit at ``addr`` would."""

    def __init__(self) -> None:
        self.deframer = Deframer()
        self.frames: list[Frame] = []
        self.changed = asyncio.Event()
        self.up = True

    def write(self, data: bytes) -> bool:
        if not self.up:
            return False
        for raw in self.deframer.feed(data):
            self.frames.append(Codec(lambda a: TEST_KEY, gateway=False).decode(raw))
        self.changed.set()
        return True

    def acks(self) -> list[tuple[int, int, int, AckState]]:
        return [
            (f.unit, f.body.ref_epoch, f.body.ref_seq, f.body.state)
            for f in self.frames
            if isinstance(f.body, Ack)
        ]

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(scaled(10)):
            while len(self.frames) < n:
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Watch:
    """A watcher that records what the pipeline tells it."""

    frames: list[Frame] = field(default_factory=list)
    links: list[tuple[str, bool]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        self.frames.append(frame)
        self.calls.append(("frame", unit.id, at))

    def on_link(self, link: str, up: bool, at: float) -> None:
        self.links.append((link, up))
        self.calls.append(("link", at))

    def on_command(self, topic: str, payload: bytes, at: float) -> None:
        self.commands.append(topic)
        self.calls.append(("command", payload, at))

    def tick(self, now: float) -> None:
        self.ticks.append(now)


class Broken(Watch):
    def on_frame(self, unit: Unit, frame: Frame, at: float) -> None:
        raise RuntimeError("watcher bug")


@dataclass
class Rig:
    store: Store
    guard: ReplayGuard
    link: RecordingLink
    clock: ManualClock
    pipe: Pipeline
    watch: Watch
    wakes: list[int]
    signer: Signer  # the duty room's key, authorised at this gateway

    def unit(self, uid: str) -> Unit:
        return self.pipe._config.units[uid]

    def feed(self, *frames: Frame, verdict: Verdict | None = None) -> None:
        items = []
        for f in frames:
            v = verdict if verdict is not None else self.guard.check(f.unit, f.epoch, f.seq)
            items.append(Received("bus", f, v))
        self.pipe.on_frames("bus", items)

    def journalled(self) -> list[tuple[int, int, int, str]]:
        return self.store.conn.execute(
            "SELECT addr, epoch, seq, type FROM frames ORDER BY id"
        ).fetchall()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in outbox(self.store) if "/event/" in r.topic]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    cfg = config()
    store = Store(tmp_path / "gw.db")
    guard = ReplayGuard()
    link = RecordingLink()
    keys = {u.addr: TEST_KEY for u in cfg.units.values()}
    downlink = Downlink(Codec(keys, gateway=True), store, {"bus": link}, {})
    clock = ManualClock(T0)
    wakes: list[int] = []
    keydir, dutyroom_dir = tmp_path / "keys", tmp_path / "dutyroom"
    install_signing_keys(keydir, dutyroom_dir, cfg.gateway_id)
    pipe = Pipeline(
        cfg,
        store,
        guard,
        downlink,
        clock,
        prefix=PREFIX,
        wake_relay=lambda: wakes.append(1),
        acks=AckVerifier(store.conn, dutyroom_keys(keydir)),  # as the service builds it
    )
    watch = Watch()
    pipe.watchers.append(watch)
    signer = Signer.load(dutyroom_dir, dutyroom_kid(DUTYROOM))
    yield Rig(store, guard, link, clock, pipe, watch, wakes, signer)
    pipe.close()
    store.close()


def alarm_rows(store: Store) -> list[Any]:
    """The incident publications in the outbox (not the retained board copies)."""
    return [r for r in outbox(store) if "/alarm/" in r.topic]


def police_ack(
    rig: Rig, incident: str, *, by: str | None = "desk 1", disposition: str | None = "genuine"
) -> None:
    """The duty room acknowledges ``incident`` (the one place that builds the message).

    A genuine ack, dated now by the rig's clock, signed with the authorised duty-room key.
    ``by`` and ``disposition`` are signed as given, even values a duty room's tool would not
    send (``None`` leaves the field out): the signature is genuine, the content is odd.
    """
    topic, payload = make_ack(
        rig.signer, PREFIX, "school", incident=incident, by="desk 1", at=rig.clock.now()
    )
    body = verify(topic, parse(payload.encode()), rig.signer.public_key())
    for name, value in (("by", by), ("disposition", disposition)):
        if value is None:
            del body[name]
        else:
            body[name] = value
    rig.pipe.on_message(topic, rig.signer.seal_obj(topic, body).encode())


async def test_fresh_alarm_is_journalled_relayed_then_acked_received(rig: Rig) -> None:
    shop = rig.unit("shop")
    frame, _ = alarm(shop, 5)
    rig.feed(frame)
    assert rig.journalled() == [(shop.addr, 1, 5, "ALARM")]
    assert rig.store.replay_load_all() == {shop.addr: [(1, 5, 1)]}
    assert rig.guard.check(shop.addr, 1, 5) is Verdict.DUPLICATE
    assert [p["update"] for p in publications(rig.store)] == ["new"]
    assert rig.wakes == [1]
    await rig.link.wait_for(1)
    assert rig.link.acks() == [(shop.addr, 1, 5, AckState.RECEIVED)]
    assert rig.watch.frames == [frame]
    assert rig.pipe.journalled == 1 and rig.pipe.last_commit_ok


async def test_duplicate_is_acked_again_never_journalled_or_relayed_twice(rig: Rig) -> None:
    shop = rig.unit("shop")
    frame, _ = alarm(shop, 5)
    rig.feed(frame)
    rig.feed(frame)  # the unit missed the ACK and sends it again
    assert rig.journalled() == [(shop.addr, 1, 5, "ALARM")]
    assert len(alarm_rows(rig.store)) == 1
    await rig.link.wait_for(2)
    assert rig.link.acks() == [(shop.addr, 1, 5, AckState.RECEIVED)] * 2
    assert rig.watch.frames == [frame]  # watchers hear of it once
    assert rig.wakes == [1]
    assert rig.pipe.journalled == 1


async def test_one_batch_journals_fresh_and_acks_all_in_order(rig: Rig) -> None:
    shop, home = rig.unit("shop"), rig.unit("home")
    a, _ = alarm(shop, 1)
    b, _ = alarm(home, 1)
    rig.feed(a)
    rig.feed(a, b)
    await rig.link.wait_for(3)
    assert rig.link.acks()[1:] == [
        (shop.addr, 1, 1, AckState.RECEIVED),
        (home.addr, 1, 1, AckState.RECEIVED),
    ]
    assert rig.store.replay_load_all() == {shop.addr: [(1, 1, 1)], home.addr: [(1, 1, 1)]}


async def test_after_the_police_ack_an_alarm_is_acked_with_state_2(rig: Rig) -> None:
    shop = rig.unit("shop")
    first, _ = alarm(shop, 1)
    rig.feed(first)
    police_ack(rig, "gw-test-shop-1-1")
    await rig.link.wait_for(2)
    assert rig.link.acks()[1] == (shop.addr, 1, 1, AckState.POLICE_ACK)
    rig.feed(first)  # a retransmission of the acknowledged alarm
    second, _ = alarm(shop, 2)
    rig.feed(second)  # a further press folds into the acknowledged incident
    await rig.link.wait_for(4)
    assert rig.link.acks()[2:] == [
        (shop.addr, 1, 1, AckState.POLICE_ACK),
        (shop.addr, 1, 2, AckState.POLICE_ACK),
    ]


async def test_police_ack_is_repeated_and_close_cancels_the_repeats(rig: Rig) -> None:
    rig.feed(alarm(rig.unit("shop"), 1)[0])
    police_ack(rig, "gw-test-shop-1-1")
    await rig.link.wait_for(2)
    loop = asyncio.get_running_loop()
    delays = sorted(round(h.when() - loop.time()) for h in rig.pipe._timers)
    assert delays == [1, 3]
    rig.pipe.close()
    assert not rig.pipe._timers


async def test_police_ack_of_unknown_incident_tells_no_unit(rig: Rig) -> None:
    police_ack(rig, "gw-test-shop-9-9")
    assert rig.link.frames == [] and outbox(rig.store) == []


async def test_repeated_police_ack_wakes_the_relay_once(rig: Rig) -> None:
    rig.feed(alarm(rig.unit("shop"), 1)[0])
    police_ack(rig, "gw-test-shop-1-1")
    police_ack(rig, "gw-test-shop-1-1", by="desk 2")
    assert rig.wakes == [1, 1]  # the alarm, then the first ack's publication
    await rig.link.wait_for(3)
    assert [s for *_, s in rig.link.acks()] == [AckState.RECEIVED] + [AckState.POLICE_ACK] * 2


async def test_cancel_is_acked_state_3_and_so_is_its_retransmission(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    c, _ = cancel(shop, 2, 1)
    rig.feed(c)
    rig.feed(c)
    await rig.link.wait_for(3)
    assert rig.link.acks()[1:] == [(shop.addr, 1, 2, AckState.CANCELLED)] * 2


async def test_cancel_of_an_unknown_alarm_is_acked_received(rig: Rig) -> None:
    shop = rig.unit("shop")
    c, _ = cancel(shop, 2, 1)
    rig.feed(c)
    rig.feed(c)
    await rig.link.wait_for(2)
    assert [s for *_, s in rig.link.acks()] == [AckState.RECEIVED] * 2


async def test_silent_duress_is_never_acked_state_2(rig: Rig) -> None:
    guard = rig.unit("guard")
    f = duress_checkin(guard, 1)
    rig.feed(f)
    iid = "gw-test-guard-1-1"
    assert [p["kind"] for p in publications(rig.store)] == ["duress"]
    police_ack(rig, iid)
    rig.feed(f)
    await rig.link.wait_for(2)
    assert [s for *_, s in rig.link.acks()] == [AckState.RECEIVED] * 2


async def test_heartbeat_sets_the_boot_time(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.feed(Frame(shop.addr, 3, 1, Heartbeat(3300, 600, 0x0100, HeartbeatFlags(0))))
    assert rig.store.boot_at(shop.addr, 3) == T0 - 600
    assert publications(rig.store) == []


async def test_failed_commit_acks_nothing_and_takes_the_frame_back(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    await rig.link.wait_for(1)
    before = rig.guard.state(shop.addr)
    rig.store.conn.execute(
        "CREATE TEMP TRIGGER full BEFORE INSERT ON frames BEGIN SELECT RAISE(ABORT, 'disk'); END"
    )
    frame, _ = alarm(shop, 2)
    rig.feed(frame)
    assert rig.pipe.commit_failures == 1 and not rig.pipe.last_commit_ok
    assert rig.guard.state(shop.addr) == before
    assert rig.guard.check(shop.addr, 1, 2) is Verdict.FRESH
    assert len(alarm_rows(rig.store)) == 1  # the fold's publication was rolled back
    assert rig.watch.frames == [alarm(shop, 1)[0]]
    rig.store.conn.execute("DROP TRIGGER full")
    rig.feed(frame)  # the unit retransmits: taken as fresh now
    await rig.link.wait_for(2)
    assert rig.link.acks()[-1] == (shop.addr, 1, 2, AckState.RECEIVED)
    assert rig.pipe.last_commit_ok
    assert rig.store.conn.execute("SELECT presses FROM incidents").fetchone()[0] == 2


async def test_a_broken_watcher_does_not_stop_the_others(rig: Rig) -> None:
    rig.pipe.watchers.insert(0, Broken())
    frame, _ = alarm(rig.unit("shop"), 1)
    rig.feed(frame)
    assert rig.watch.frames == [frame]


async def test_security_rejects_make_one_event_per_unit_and_interval(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.pipe.on_security_reject("bus", Reason.CORRUPT, shop.addr)  # line noise: not security
    assert rig.events() == []
    rig.pipe.on_security_reject("bus", Reason.FORGED, shop.addr)
    (e,) = rig.events()
    assert (e["kind"], e["code"], e["unit"], e["site"]) == ("forgery", 461, "shop", "school")
    assert e["detail"]["forged"] == 1 and e["detail"]["addr"] == shop.addr
    assert e["detail"]["links"] == ["bus"] and e["detail"]["window_s"] == 300.0
    for _ in range(3):
        rig.pipe.on_security_reject("bus2", Reason.REPLAYED, shop.addr)
    assert len(rig.events()) == 1  # within the interval: counted, not published
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S - 1)
    rig.pipe.tick()
    assert len(rig.events()) == 1
    rig.clock.advance(1)
    rig.pipe.tick()
    second = rig.events()[-1]["detail"]
    assert (second.get("forged"), second["replayed"], second["links"]) == (None, 3, ["bus2"])
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)
    rig.pipe.tick()  # nothing counted since: no event
    assert len(rig.events()) == 2


async def test_unregistered_addresses_share_one_tally(rig: Rig) -> None:
    rig.pipe.on_security_reject("bus", Reason.UNKNOWN_UNIT, 999)
    rig.pipe.on_security_reject("bus", Reason.UNKNOWN_UNIT, 998)
    rig.pipe.on_security_reject("bus", Reason.UNKNOWN_UNIT, None)
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)
    rig.pipe.tick()
    first, second = rig.events()
    assert first["unit"] is None and first["detail"]["addrs"] == [999]
    assert second["detail"]["addrs"] == [998] and second["detail"]["unknown_unit"] == 2
    for addr in range(1000, 1040):
        rig.pipe.on_security_reject("bus", Reason.UNKNOWN_UNIT, addr)
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)
    rig.pipe.tick()
    assert len(rig.events()[-1]["detail"]["addrs"]) == 16  # bounded


async def test_link_changes_are_events_and_reach_the_watchers(rig: Rig) -> None:
    rig.pipe.on_link("bus", False)
    rig.clock.advance(5)
    rig.pipe.on_link("bus", True)
    assert rig.watch.calls == [("link", T0), ("link", T0 + 5)]
    down, up = rig.events()
    assert (down["kind"], down["code"], down["qualifier"]) == ("link_down", 350, 1)
    assert (up["kind"], up["code"], up["qualifier"]) == ("link_up", 350, 3)
    assert down["detail"] == {"link": "bus"}
    assert rig.watch.links == [("bus", False), ("bus", True)]


async def test_inbound_messages_are_routed_by_topic(rig: Rig) -> None:
    rig.feed(alarm(rig.unit("shop"), 1)[0])
    now = rig.clock.now()
    duty, payload = make_ack(rig.signer, PREFIX, "school", post="gate", by="desk 1", at=now)
    # each signed for its own topic: only the routing keeps them from being acted on
    elsewhere = [
        make_ack(rig.signer, "other/v1", "school", post="gate", by="desk 1", at=now),
        make_ack(rig.signer, "other/v1", "school", incident="gw-test-shop-1-1", by="x", at=now),
    ]
    signed_body = parse(payload.encode()).body
    for topic in (f"{PREFIX}/school/duty/gate", f"{PREFIX}/school/alarm/shop"):
        elsewhere.append((topic, rig.signer.seal(topic, signed_body)))
    rig.pipe.on_message(duty, payload.encode())
    for topic, other in elsewhere:
        rig.pipe.on_message(topic, other.encode())
    assert rig.watch.commands == [duty]
    ((what, body, at),) = rig.watch.calls[1:]
    signed = json.loads(signed_body)
    assert (what, at) == ("command", T0)
    assert json.loads(body) == {
        "by": "desk 1",
        "at": signed["at"],
        "nonce": signed["nonce"],
        "kid": rig.signer.kid,
    }
    assert not rig.pipe.mqtt_rejects  # ignored, not taken for forgeries
    assert updates(rig.store) == ["new"]  # the incident's ack on another prefix did nothing


async def test_a_duty_ack_that_does_not_verify_reaches_no_watcher(rig: Rig) -> None:
    now = rig.clock.now()
    topic, payload = make_ack(rig.signer, PREFIX, "school", post="gate", by="desk 1", at=now)
    forged = payload.replace("desk 1", "desk 9")  # the signature no longer covers the body
    rig.pipe.on_message(topic, forged.encode())
    assert rig.watch.commands == []
    assert sum(rig.pipe.mqtt_rejects.values()) == 1
    rig.pipe.on_message(topic, payload.encode())  # the genuine one still goes through
    assert rig.watch.commands == [topic]


async def test_tick_reaches_the_watchers_and_publishes_due_updates(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    rig.clock.advance(0.5)
    rig.feed(alarm(shop, 2)[0])
    rig.clock.advance(0.5)
    rig.pipe.tick()
    assert [p["update"] for p in publications(rig.store)] == ["new", "presses"]
    assert rig.watch.ticks == [T0 + 1]
    assert rig.wakes == [1, 1, 1]


async def test_signal_goes_to_the_unit_and_unknown_units_are_refused(rig: Rig) -> None:
    rig.pipe.signal("guard", SignalPattern.PROMPT_CHECKIN, 30)
    rig.pipe.signal("nobody", SignalPattern.PROMPT_CHECKIN, 30)
    await rig.link.wait_for(1)
    (f,) = rig.link.frames
    assert f.unit == rig.unit("guard").addr
    assert f.body == Signal(SignalPattern.PROMPT_CHECKIN, 30)


async def test_events_go_to_their_topic(rig: Rig) -> None:
    rig.pipe.event(site="school", kind="x", at=T0, post="gate", topic="duty", detail={"a": 1})
    rig.pipe.event(site="school", kind="y", at=T0, unit="shop")
    rig.pipe.event(site="school", kind="z", at=T0)
    topics = [r.topic for r in outbox(rig.store)]
    assert topics == [
        f"{PREFIX}/school/duty/gate",
        f"{PREFIX}/school/event/shop",
        f"{PREFIX}/school/event/gw-test",
    ]
    first = json.loads(outbox(rig.store)[0].payload)
    assert (first["kind"], first["post"], first["detail"], first["gateway"]) == (
        "x",
        "gate",
        {"a": 1},
        "gw-test",
    )
    with pytest.raises(ValueError):
        rig.pipe.event(site="school", kind="x", at=T0, topic="alarm")
    assert rig.wakes == [1, 1, 1]


@pytest.mark.parametrize(
    ("by", "disposition", "expect"),
    [
        ("desk 1", "genuine", ("desk 1", "genuine")),
        ("desk 1", "false_alarm", ("desk 1", "false_alarm")),
        ("  desk 3 ", "test", ("desk 3", "test")),
        ("x" * 300, "genuine", ("x" * 100, "genuine")),  # bounded text
        # signed, yet not acted on: nobody named, or no known disposition
        (None, "test", None),
        ("   ", "genuine", None),
        ("desk 1", "burglary", None),
        ("desk 1", None, None),
        (None, None, None),
    ],
)
async def test_police_ack_records_who_and_what_defensively(
    rig: Rig, by: str | None, disposition: str | None, expect: tuple[str, str] | None
) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    police_ack(rig, "gw-test-shop-1-1", by=by, disposition=disposition)
    p = publications(rig.store)[-1]
    if expect is None:
        assert p["update"] == "new" and rig.pipe.mqtt_rejects == {"malformed": 1}
        state = rig.store.conn.execute("SELECT state, police_ack_by FROM incidents").fetchone()
        assert state == ("open", None)
        rig.feed(alarm(shop, 1)[0])  # the unit still hears "received", not "police"
        await rig.link.wait_for(2)
        assert [s for *_, s in rig.link.acks()] == [AckState.RECEIVED] * 2
    else:
        assert (p["update"], p["police_ack_by"], p["disposition"]) == ("police_ack", *expect)
        assert not rig.pipe.mqtt_rejects


# Further cases the mutation run asked for (issue 19).


async def test_journal_row_and_publication_of_a_fresh_alarm(rig: Rig) -> None:
    assert rig.pipe.last_commit_ok is True  # healthy before the first frame
    shop = rig.unit("shop")
    rig.clock.advance(2)
    rig.feed(alarm(shop, 5, press_ms=777)[0])
    row = rig.store.conn.execute("SELECT at, link, unit, body, incident FROM frames").fetchone()
    assert row[:3] == (T0 + 2, "bus", "shop")
    assert json.loads(row[3]) == {"kind": 0, "presses": 1, "press_ms": 777}
    assert row[4] == "gw-test-shop-1-5"
    (only,) = alarm_rows(rig.store)
    assert only.topic == f"{PREFIX}/school/alarm/shop"
    assert json.loads(only.payload)["link"] == "bus"
    assert rig.watch.calls == [("frame", "shop", T0 + 2)]
    await rig.link.wait_for(1)
    assert len(rig.pipe.batch_s) == 1 and rig.pipe.batch_s[0] >= 0
    assert rig.pipe.batch_s.maxlen == 4096


async def test_duress_checkin_publication_names_its_link(rig: Rig) -> None:
    rig.feed(duress_checkin(rig.unit("guard"), 1))
    (p,) = publications(rig.store)
    assert p["link"] == "bus"


async def test_a_frame_without_a_register_entry_does_not_stop_the_batch(rig: Rig) -> None:
    stray = Frame(99, 1, 1, alarm(rig.unit("shop"), 1)[1])
    frame, _ = alarm(rig.unit("shop"), 1)
    rig.pipe.on_frames(
        "bus", [Received("bus", stray, Verdict.FRESH), Received("bus", frame, Verdict.FRESH)]
    )
    assert rig.journalled() == [(rig.unit("shop").addr, 1, 1, "ALARM")]


async def test_failed_commit_takes_back_every_frame_of_the_batch(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.store.conn.execute(
        "CREATE TEMP TRIGGER full BEFORE INSERT ON frames WHEN NEW.seq = 3"
        " BEGIN SELECT RAISE(ABORT, 'disk'); END"
    )
    rig.feed(alarm(shop, 2)[0], alarm(shop, 3)[0])  # the second one fails the whole commit
    rig.feed(alarm(shop, 3)[0])
    assert rig.pipe.commit_failures == 2
    assert rig.pipe.last_commit_ok is False
    assert rig.guard.check(shop.addr, 1, 2) is Verdict.FRESH  # recorded, then taken back
    assert rig.guard.state(shop.addr) == []
    assert rig.journalled() == [] and outbox(rig.store) == []
    assert rig.link.frames == []


async def test_acks_go_back_on_the_link_the_unit_spoke_on(tmp_path: Path) -> None:
    cfg = config()
    store = Store(tmp_path / "gw.db")
    links = {"bus": RecordingLink(), "bus2": RecordingLink()}
    keys = {u.addr: TEST_KEY for u in cfg.units.values()}
    downlink = Downlink(Codec(keys, gateway=True), store, links, {})
    pipe = Pipeline(cfg, store, ReplayGuard(), downlink, ManualClock(T0), prefix=PREFIX)
    shop = cfg.units["shop"]
    frame, _ = alarm(shop, 1)
    pipe.on_frames("bus2", [Received("bus2", frame, Verdict.FRESH)])
    await links["bus2"].wait_for(1)
    assert links["bus2"].acks() == [(shop.addr, 1, 1, AckState.RECEIVED)]
    assert links["bus"].frames == []
    row = store.conn.execute("SELECT link FROM frames").fetchone()
    assert row == ("bus2",)
    pipe.close()
    store.close()


async def test_security_event_says_since_when_and_where(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.pipe.on_security_reject("bus", Reason.FORGED, shop.addr)
    (first,) = rig.events()
    assert first["detail"]["since"] == iso(T0) and first["detail"]["place"] == shop.place
    # a bad MAC from a registered unit may also be a unit still on its old key
    assert first["detail"]["hint"] == (
        "if this unit was re-keyed, deploy it again (campusguard deploy shop)"
    )
    rig.clock.advance(100)
    rig.pipe.on_security_reject("bus", Reason.FORGED, shop.addr)
    rig.clock.advance(50)
    rig.pipe.on_security_reject("bus", Reason.FORGED, shop.addr)
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S - 150)  # exactly the interval after the first
    rig.pipe.on_security_reject("bus", Reason.FORGED, shop.addr)  # due now: no tick needed
    second = rig.events()[-1]
    assert second["detail"]["forged"] == 3
    assert second["detail"]["since"] == iso(T0 + 100)
    assert second["at"] == iso(T0 + SECURITY_EVENT_INTERVAL_S)


async def test_police_ack_is_repeated_twice_to_the_unit(rig: Rig) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    police_ack(rig, "gw-test-shop-1-1")
    await rig.link.wait_for(4)  # the ACK and its two repeats (after 1 s and 3 s)
    assert rig.link.acks()[1:] == [(shop.addr, 1, 1, AckState.POLICE_ACK)] * 3


async def test_events_are_journalled_with_every_field(rig: Rig) -> None:
    rig.pipe.event(
        site="school",
        kind="k",
        at=T0 + 1,
        unit="shop",
        post="gate",
        code=602,
        qualifier=3,
        detail={"path": Path("/x"), "n": 1},
    )
    rig.pipe.event(site="school", kind="d", at=T0 + 2, unit="guard", topic="duty")
    cur = rig.store.conn.execute(
        "SELECT id, at, site, unit, post, kind, code, qualifier, detail FROM events ORDER BY id"
    )
    eid, *row, detail = cur.fetchall()[0]
    assert row == [T0 + 1, "school", "shop", "gate", "k", 602, 3]
    assert json.loads(detail) == {"path": "/x", "n": 1}
    first, duty = (json.loads(r.payload) for r in outbox(rig.store))
    assert (first["event"], first["at"], first["detail"]) == (
        f"gw-test-{eid}",  # unique across gateways
        iso(T0 + 1),
        {"path": "/x", "n": 1},
    )
    assert outbox(rig.store)[1].topic == f"{PREFIX}/school/duty/guard"
    assert duty["event"] == f"gw-test-{eid + 1}"


async def test_relay_alerts_become_forgery_events(rig: Rig) -> None:
    """A second gateway is told at once, every time; oversized payloads and forged status
    messages are counted with the other rejected MQTT messages, one event per window."""
    rig.pipe.on_alert("second_gateway", {"nonce": "abc"})
    rig.clock.advance(1)
    rig.pipe.on_alert("second_gateway", {"nonce": "def"})
    rig.clock.advance(1)
    rig.pipe.on_alert("oversized_payload", {"topic": f"{PREFIX}/school/ack/x", "size": 9000})
    rig.pipe.on_alert("forged_status", {"topic": f"{PREFIX}/school/status"})
    rig.pipe.on_alert("oversized_payload", {"topic": f"{PREFIX}/school/ack/y"})
    events = rig.events()
    assert [(e["kind"], e["code"], e["site"], e["at"]) for e in events] == [
        ("forgery", 461, "school", iso(T0)),
        ("forgery", 461, "school", iso(T0 + 1)),
        ("forgery", 461, "school", iso(T0 + 2)),
    ]
    assert [e["detail"] for e in events[:2]] == [
        {"nonce": "abc", "channel": "mqtt", "reason": "second_gateway"},
        {"nonce": "def", "channel": "mqtt", "reason": "second_gateway"},
    ]
    window = {"channel": "mqtt", "kids": [], "since": iso(T0 + 2), "window_s": 300}
    assert SECURITY_EVENT_INTERVAL_S == 300
    assert events[2]["detail"] == {
        **window,
        "oversized": 1,
        "topics": [f"{PREFIX}/school/ack/x"],
    }
    assert rig.pipe.mqtt_rejects == {"oversized": 2, "forged_status": 1}
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S - 1)
    rig.pipe.tick()
    assert len(rig.events()) == 3  # the window is not over
    rig.clock.advance(1)
    rig.pipe.tick()  # exactly a window after the last event: the rest of it
    last = rig.events()[-1]
    assert (last["kind"], last["site"], last["at"]) == ("forgery", "school", iso(T0 + 302))
    assert last["detail"] == {
        **window,
        "oversized": 1,
        "forged_status": 1,
        "topics": [f"{PREFIX}/school/ack/y", f"{PREFIX}/school/status"],
    }
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)
    rig.pipe.tick()
    assert len(rig.events()) == 4  # nothing new: no event


async def test_rejected_mqtt_messages_name_at_most_sixteen_topics_and_keys(rig: Rig) -> None:
    rig.pipe.on_bad_ack("school", "t/first", AckRejected("bad_signature", kid="dutyroom-a"))
    for n in range(20):
        rig.pipe.on_bad_ack("school", f"t/{n:02}", AckRejected("unknown_key", kid=f"k{n:02}"))
    rig.pipe.on_bad_ack("school", "t/last", AckRejected("replayed"))
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)
    rig.pipe.tick()
    first, second = rig.events()
    assert first["detail"]["kids"] == ["dutyroom-a"] and first["detail"]["since"] == iso(T0)
    d = second["detail"]
    assert (d["unknown_key"], d["replayed"]) == (20, 1)
    assert d["topics"] == [f"t/{n:02}" for n in range(16)]
    assert d["kids"] == [f"k{n:02}" for n in range(16)]
    assert rig.pipe.mqtt_rejects == {"bad_signature": 1, "unknown_key": 20, "replayed": 1}
    rig.clock.advance(SECURITY_EVENT_INTERVAL_S)  # exactly a window after the last event
    rig.pipe.on_bad_ack("school", "t/again", AckRejected("replayed"))  # told at once
    assert rig.events()[-1]["detail"]["topics"] == ["t/again"]


async def test_retained_states_are_queued_signed_by_the_gateway_and_wake_the_relay(
    rig: Rig,
) -> None:
    rig.pipe.retain(site="school", topic="unit/shop/state", payload={"state": "online"}, at=T0)
    (row,) = outbox(rig.store)
    assert (row.topic, row.retain, row.qos) == (f"{PREFIX}/school/unit/shop/state", True, 1)
    assert json.loads(row.payload) == {"gateway": "gw-test", "state": "online"}
    assert rig.wakes == [1]
    with rig.store.transaction():  # inside a frame's transaction: the relay hears at its end
        rig.pipe.retain(site="school", topic="post/gate/state", payload={"at": Path("/x")}, at=T0)
        assert rig.wakes == [1]
    assert json.loads(outbox(rig.store)[1].payload) == {"gateway": "gw-test", "at": "/x"}
    for bad in ("unit/shop", "alarm/shop/state", "unit/shop/status", "unit/a/b/state"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            rig.pipe.retain(site="school", topic=bad, payload={}, at=T0)
    assert len(outbox(rig.store)) == 2


async def test_duplicates_are_re_acked_at_a_limited_rate(rig: Rig) -> None:
    """Per counter one re-ACK per 0.5 s; per unit at most 4 a second; 4096 counters kept."""
    may = rig.pipe._may_reack
    a, b = rig.unit("shop").addr, rig.unit("home").addr
    assert may(a, 1, 1, T0) is True
    assert may(a, 1, 1, T0 + 0.49) is False  # the same counter, too soon
    assert may(a, 1, 1, T0 + 0.5) is True  # half a second on
    assert [may(a, 1, s, T0 + 0.6) for s in (2, 3, 4)] == [True, True, False]  # 4 a second
    assert may(b, 1, 1, T0 + 0.6) is True  # another unit has its own budget
    assert may(a, 1, 4, T0 + 1.0) is True  # a second after the window began: a new one
    for n in range(4096):  # the per-counter memory keeps the 4096 most recent counters
        assert may(10_000 + n, 1, 1, T0 + 2)
    assert may(10_000, 1, 1, T0 + 2.1) is False  # 4096 counters: all remembered
    assert may(a, 1, 4, T0 + 2.1) is True  # forgotten, and now the newest
    assert may(10_000, 1, 1, T0 + 2.2) is True  # the oldest made room for it
    assert may(10_000 + 4095, 1, 1, T0 + 2.2) is False  # the newest are kept


async def test_police_acks_that_do_not_fit_the_incident_are_refused_and_counted(
    rig: Rig,
) -> None:
    shop = rig.unit("shop")
    rig.feed(alarm(shop, 1)[0])
    iid = "gw-test-shop-1-1"
    elsewhere = make_ack(rig.signer, PREFIX, "other", incident=iid, by="desk 1", at=T0)
    rig.pipe.on_message(elsewhere[0], elsewhere[1].encode())
    early = make_ack(rig.signer, PREFIX, "school", incident=iid, by="desk 1", at=T0 - 5.001)
    rig.pipe.on_message(early[0], early[1].encode())
    assert updates(rig.store) == ["new"]  # neither acknowledged anything
    forgeries = [e for e in rig.events() if e["kind"] == "forgery"]
    assert [(e["site"], e["detail"]) for e in forgeries] == [
        (
            "other",
            {
                "channel": "mqtt",
                "mismatch": 1,
                "topics": [elsewhere[0]],
                "kids": [rig.signer.kid],
                "since": iso(T0),
                "window_s": 300,
            },
        ),
        (
            "school",
            {
                "channel": "mqtt",
                "predated": 1,
                "topics": [early[0]],
                "kids": [rig.signer.kid],
                "since": iso(T0),
                "window_s": 300,
            },
        ),
    ]
    on_time = make_ack(rig.signer, PREFIX, "school", incident=iid, by="desk 1", at=T0 - 5)
    rig.pipe.on_message(on_time[0], on_time[1].encode())  # within the clock allowance
    assert updates(rig.store)[-1] == "police_ack"


async def test_without_duty_room_keys_every_ack_is_refused_and_counted(tmp_path: Path) -> None:
    cfg = config()
    store = Store(tmp_path / "gw.db")
    links = {"bus": RecordingLink()}
    keys = {u.addr: TEST_KEY for u in cfg.units.values()}
    downlink = Downlink(Codec(keys, gateway=True), store, links, {})
    pipe = Pipeline(cfg, store, ReplayGuard(), downlink, ManualClock(T0), prefix=PREFIX)
    topic = f"{PREFIX}/school/ack/gw-test-shop-1-1"
    pipe.on_message(topic, b"{}")
    (row,) = [r for r in outbox(store) if "/event/" in r.topic]
    event = json.loads(row.payload)
    assert (event["kind"], event["site"]) == ("forgery", "school")
    assert event["detail"]["no_keys"] == 1 and event["detail"]["topics"] == [topic]
    pipe.close()
    store.close()


# Further cases the mutation run asked for (issue 19): re-ACK accounting in a batch,
# patrol acks and events, where a rejected MQTT message is counted.


async def test_suppressed_re_acks_are_counted_and_the_rest_of_the_batch_goes_on(
    rig: Rig,
) -> None:
    shop, home = rig.unit("shop"), rig.unit("home")
    a, _ = alarm(shop, 1)
    rig.feed(a)
    assert (rig.pipe.reacks_suppressed, rig.pipe.retries["shop"]) == (0, 0)
    fresh, _ = alarm(home, 1)
    rig.feed(a, a, a, fresh)  # the first copy is re-ACKed, the next two are too soon
    assert (rig.pipe.reacks_suppressed, rig.pipe.retries["shop"]) == (2, 3)
    assert rig.journalled()[-1] == (home.addr, 1, 1, "ALARM")  # after them in the batch
    await rig.link.wait_for(3)
    assert rig.link.acks() == [
        (shop.addr, 1, 1, AckState.RECEIVED),
        (shop.addr, 1, 1, AckState.RECEIVED),
        (home.addr, 1, 1, AckState.RECEIVED),
    ]
    rig.clock.advance(0.5)
    rig.feed(a)
    assert (rig.pipe.reacks_suppressed, rig.pipe.retries["shop"]) == (2, 4)


async def test_re_acks_are_limited_per_unit_and_counter_within_a_batch(rig: Rig) -> None:
    """The limits key on the frame's own unit, epoch and counter."""
    shop, home = rig.unit("shop"), rig.unit("home")
    shop_frames = [alarm(shop, s)[0] for s in (1, 2, 3, 4, 5)]
    home_frame = alarm(home, 1)[0]
    other_epoch = Frame(shop.addr, 2, 1, shop_frames[0].body)
    rig.feed(*shop_frames, home_frame, other_epoch)  # all fresh
    await rig.link.wait_for(7)
    rig.link.frames.clear()
    # now all duplicates: shop has 4 re-ACKs a second, home its own 4
    rig.clock.advance(1)
    rig.feed(*shop_frames[:3], other_epoch, shop_frames[3], home_frame)
    await rig.link.wait_for(5)
    assert rig.link.acks() == [
        (shop.addr, 1, 1, AckState.RECEIVED),
        (shop.addr, 1, 2, AckState.RECEIVED),
        (shop.addr, 1, 3, AckState.RECEIVED),
        (shop.addr, 2, 1, AckState.RECEIVED),  # counter 1 of another epoch: not too soon
        (home.addr, 1, 1, AckState.RECEIVED),  # shop's fifth is refused, home's first is not
    ]
    assert rig.pipe.reacks_suppressed == 1


async def test_a_new_re_ack_second_has_the_full_budget_again(rig: Rig) -> None:
    may = rig.pipe._may_reack
    a = rig.unit("shop").addr
    assert [may(a, 1, s, T0) for s in range(1, 6)] == [True] * 4 + [False]
    assert [may(a, 1, s, T0 + 1) for s in range(11, 16)] == [True] * 4 + [False]


async def test_batch_time_is_measured_from_the_batch_start(rig: Rig) -> None:
    before = time.perf_counter()
    rig.feed(alarm(rig.unit("shop"), 1)[0])
    await rig.link.wait_for(1)
    (took,) = rig.pipe.batch_s
    assert 0 <= took <= time.perf_counter() - before


async def test_a_forged_frame_is_reported_at_its_units_site(rig: Rig) -> None:
    annex = replace(rig.unit("shop"), id="annex", addr=40, site="annex")
    cfg = rig.pipe._config
    cfg2 = replace(cfg, units={**cfg.units, "annex": annex})
    keys = {u.addr: TEST_KEY for u in cfg2.units.values()}
    downlink = Downlink(Codec(keys, gateway=True), rig.store, {"bus": rig.link}, {})
    pipe = Pipeline(cfg2, rig.store, ReplayGuard(), downlink, rig.clock, prefix=PREFIX)
    pipe.on_security_reject("bus", Reason.FORGED, 40)
    (row,) = [r for r in outbox(rig.store) if "/event/" in r.topic]
    assert row.topic == f"{PREFIX}/annex/event/annex"
    assert json.loads(row.payload)["site"] == "annex"
    pipe.close()


async def test_a_patrol_ack_reaches_the_watchers_as_one(rig: Rig) -> None:
    now = rig.clock.now()
    topic, payload = make_ack(rig.signer, PREFIX, "school", route="night", by="desk 1", at=now)
    assert topic == f"{PREFIX}/school/patrol/night/ack"
    rig.pipe.on_message(topic, payload.encode())
    assert rig.watch.commands == [topic]
    ((what, body, at),) = rig.watch.calls
    assert what == "command"
    signed = json.loads(parse(payload.encode()).body)
    assert json.loads(body) == {
        "by": "desk 1",
        "at": signed["at"],
        "nonce": signed["nonce"],
        "kid": rig.signer.kid,
    }
    assert at == T0
    assert rig.store.conn.execute("SELECT topic FROM ack_nonces").fetchall() == [(topic,)]
    assert not rig.pipe.mqtt_rejects
    # a duty ack's signature does not make a patrol ack, nor the other way round
    duty = make_ack(rig.signer, PREFIX, "school", post="night", by="desk 1", at=now)
    body = parse(duty[1].encode()).body
    rig.pipe.on_message(topic, rig.signer.seal(topic, body).encode())
    patrol_body = parse(payload.encode()).body
    rig.pipe.on_message(duty[0], rig.signer.seal(duty[0], patrol_body).encode())
    assert rig.watch.commands == [topic]
    assert sum(rig.pipe.mqtt_rejects.values()) == 2
    # patrol topics of other shapes are not acks
    for bad in (f"{PREFIX}/school/patrol/night/x/ack", f"{PREFIX}/school/patrol/night/nack"):
        rig.pipe.on_message(bad, payload.encode())
    assert rig.watch.commands == [topic] and sum(rig.pipe.mqtt_rejects.values()) == 2


async def test_an_ack_that_does_not_verify_is_counted_at_its_site_and_topic(rig: Rig) -> None:
    topic, payload = make_ack(rig.signer, PREFIX, "school", post="gate", by="desk 1", at=T0)
    rig.pipe.on_message(topic, payload.replace("desk 1", "desk 9").encode())
    (event,) = rig.events()
    assert (event["kind"], event["site"]) == ("forgery", "school")
    assert event["detail"]["topics"] == [topic]
    assert event["detail"]["bad_signature"] == 1


async def test_patrol_events_go_to_their_route(rig: Rig) -> None:
    rig.pipe.event(
        site="school", kind="patrol_missed", at=T0, topic="patrol", route="night", detail={"a": 1}
    )
    (row,) = outbox(rig.store)
    assert row.topic == f"{PREFIX}/school/patrol/night"
    assert row.payload == json.dumps(json.loads(row.payload), separators=(",", ":"))
    body = json.loads(row.payload)
    assert (body["route"], body["kind"], body["detail"]) == ("night", "patrol_missed", {"a": 1})
    route, detail = rig.store.conn.execute("SELECT route, detail FROM events").fetchone()
    assert (route, detail) == ("night", '{"a":1}')
    rig.pipe.event(site="school", kind="x", at=T0, unit="shop")
    assert "route" not in json.loads(outbox(rig.store)[1].payload)  # only patrol events
    for route_ in (None, ""):
        with pytest.raises(ValueError, match="route"):
            rig.pipe.event(site="school", kind="x", at=T0, topic="patrol", route=route_)
    assert len(outbox(rig.store)) == 2


async def test_patrol_states_are_retained_compactly(rig: Rig) -> None:
    rig.pipe.retain(site="school", topic="patrol/night/state", payload={"s": [1, 2]}, at=T0)
    (row,) = outbox(rig.store)
    assert (row.topic, row.retain) == (f"{PREFIX}/school/patrol/night/state", True)
    assert row.payload == '{"gateway":"gw-test","s":[1,2]}'


async def test_a_second_station_acknowledging_differently_is_told_the_first_stands(
    rig: Rig,
) -> None:
    rig.feed(alarm(rig.unit("shop"), 1)[0])
    iid = "gw-test-shop-1-1"
    police_ack(rig, iid, by="desk 1", disposition="genuine")
    rig.clock.advance(2)
    police_ack(rig, iid, by="desk 2", disposition="genuine")  # agrees: nothing to say
    assert [e["kind"] for e in rig.events()] == []
    police_ack(rig, iid, by="desk 3", disposition="false_alarm")
    (e,) = rig.events()
    assert (e["kind"], e["site"], e["at"]) == ("ack_conflict", "school", iso(T0 + 2))
    assert e["detail"] == {
        "incident": iid,
        "first": {"by": "desk 1", "disposition": "genuine"},
        "second": {"by": "desk 3", "disposition": "false_alarm", "kid": rig.signer.kid},
    }
    assert rig.pipe.incidents.police_ack_of(iid) == ("desk 1", "genuine")


async def test_event_hooks_hear_each_event_as_journalled_and_may_fail(rig: Rig) -> None:
    from gateway.pipeline.ports import JournalledEvent

    heard: list[JournalledEvent] = []

    def broken(note: JournalledEvent) -> None:
        raise RuntimeError("the SMS queue is broken")

    rig.pipe.event_hooks += [broken, heard.append]
    rig.pipe.event(
        site="school", kind="k", at=T0 + 1, unit="shop", post="gate", qualifier=3, detail={"a": 1}
    )
    rig.pipe.event(site="school", kind="p", at=T0 + 2, topic="patrol", route="night")
    (eid,) = rig.store.conn.execute("SELECT min(id) FROM events").fetchone()
    assert heard == [
        JournalledEvent(f"gw-test-{eid}", "school", "k", T0 + 1, "shop", "gate", 3, {"a": 1}),
        JournalledEvent(f"gw-test-{eid + 1}", "school", "p", T0 + 2, None, None, None, {}, "night"),
    ]
    assert len(rig.events()) == 1 and len(outbox(rig.store)) == 2  # both went out
