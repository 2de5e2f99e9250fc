"""Patrols through the real pipeline and journal: a duress scan opens the silent incident,
patrol events and the route's state go out signed on their own topics, and a duty room's
signed patrol ack reaches the watch (a forged one does not)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core.clock import ManualClock
from gateway.journal.store import Store
from gateway.link.downlink import Downlink
from gateway.link.receiver import Received
from gateway.pipeline.pipeline import Pipeline
from gateway.relay.acks import AckVerifier, make_ack
from gateway.security.envelope import Signer, parse, verify
from gateway.security.signkeys import dutyroom_keys, dutyroom_kid, gateway_kid
from gateway.watch.patrol import PatrolWatch
from protocol import Codec, ReplayGuard
from protocol.keys import TEST_KEY
from protocol.messages import Checkin, Frame
from tests.gateway.conftest import DUTYROOM, install_signing_keys
from tests.gateway.helpers import outbox
from tests.gateway.test_pipeline_decisions import RecordingLink
from tests.patrol.helpers import TERM_MONDAY, TZ, register

PREFIX = "campusguard/v1"
H = 3600.0


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.config = register()
        self.store = Store(tmp / "gw.db")
        keydir, self.dutyroom_dir = tmp / "keys", tmp / "dutyroom"
        install_signing_keys(keydir, self.dutyroom_dir, self.config.gateway_id)
        kid = gateway_kid(self.config.gateway_id)
        gw_signer = Signer.load(keydir, kid)
        self.store.seal = gw_signer.seal
        self.gateway_key = gw_signer.public_key()
        self.clock = ManualClock(TERM_MONDAY + 7 * H)
        keys = {u.addr: TEST_KEY for u in self.config.units.values()}
        self.guard = ReplayGuard()
        downlink = Downlink(Codec(keys, gateway=True), self.store, {"bus": RecordingLink()}, {})
        self.pipe = Pipeline(
            self.config,
            self.store,
            self.guard,
            downlink,
            self.clock,
            prefix=PREFIX,
            wake_relay=lambda: None,
            acks=AckVerifier(self.store.conn, dutyroom_keys(keydir)),
        )
        self.watch = PatrolWatch(self.config, self.pipe, self.store.conn, self.clock, tz=TZ)
        self.pipe.watchers.append(self.watch)
        self.signer = Signer.load(self.dutyroom_dir, dutyroom_kid(DUTYROOM))
        self.seq = 0

    def scan(self, cp: str, duress: bool = False) -> None:
        unit = self.config.units[cp]
        self.seq += 1
        f = Frame(unit.addr, 1, self.seq, Checkin(flags=int(duress), press_ms=1000))
        self.pipe.on_frames("bus", [Received("bus", f, self.guard.check(f.unit, 1, self.seq))])

    def published(self, leaf: str) -> list[dict[str, object]]:
        out = []
        for row in outbox(self.store):
            if row.topic.endswith(leaf):
                body = verify(row.topic, parse(row.payload.encode()), self.gateway_key)
                out.append(body)
        return out


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.pipe.close()
    r.store.close()


async def test_a_duress_scan_opens_a_silent_incident_and_counts_as_a_scan(rig: Rig) -> None:
    rig.pipe.tick()
    rig.scan("cp-a", duress=True)
    incidents = rig.store.conn.execute("SELECT unit, kind, state FROM incidents").fetchall()
    assert incidents == [("cp-a", "duress", "open")]
    scans = [p for p in rig.published("/school/patrol/run") if p["kind"] == "patrol_scan"]
    assert len(scans) == 1 and scans[0]["route"] == "run"
    assert scans[0]["detail"]["duress"] is True  # type: ignore[index]
    state = rig.published("/school/patrol/run/state")[-1]
    assert state["round"]["scanned"] == ["cp-a"]  # type: ignore[index]
    assert state["gateway"] == rig.config.gateway_id
    rows = [r for r in outbox(rig.store) if r.topic.endswith("/patrol/run/state")]
    assert rows and all(r.retain for r in rows)


async def test_a_signed_patrol_ack_reaches_the_watch_and_a_forged_one_does_not(rig: Rig) -> None:
    rig.clock.set(TERM_MONDAY + 8 * H + 1)
    rig.pipe.tick()
    assert rig.watch.state["run"].ladder is not None
    forger = Signer(dutyroom_kid(DUTYROOM), Ed25519PrivateKey.generate())  # not its key
    topic, payload = make_ack(forger, PREFIX, "school", route="run", by="x", at=rig.clock.now())
    rig.pipe.on_message(topic, payload.encode())
    assert rig.watch.state["run"].ladder is not None
    topic, payload = make_ack(
        rig.signer, PREFIX, "school", route="run", by="Officer Wu", at=rig.clock.now()
    )
    assert topic == f"{PREFIX}/school/patrol/run/ack"
    rig.pipe.on_message(topic, payload.encode())
    assert rig.watch.state["run"].ladder is None
    acked = [p for p in rig.published("/school/patrol/run") if p["kind"] == "patrol_acknowledged"]
    assert acked[0]["detail"]["by"] == "Officer Wu"  # type: ignore[index]
    assert json.loads(json.dumps(acked[0]))["code"] == 102
