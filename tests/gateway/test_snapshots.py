"""Camera snapshots on a new incident (issue 17 item 6), against a real HTTP camera on
loopback (digest and basic auth), a hung camera and a dead one, through the real gateway,
a real Mosquitto and the duty room's signature check."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.clock import ManualClock
from gateway.core.config import Camera, parse_config
from gateway.core.credentials import SecretDir
from gateway.security.envelope import MAX_PAYLOAD_BYTES, Signer
from gateway.security.signkeys import gateway_kid
from gateway.service.assembly import Gateway, Settings
from gateway.service.snapshots import attach_video
from gateway.video.cameras import Login
from gateway.video.fetch import Shot, fetch, session
from gateway.video.snapshots import PART_BYTES, WINDOW_PARTS, Snapshots
from gateway.video.watch import SnapshotWatch
from protocol import Alarm, AlarmKind, Checkin
from tests.support.camera import PASSWORD, USER, CameraServer, dead_url, jpeg, write_login
from tests.support.mosquitto import Mosquitto

from .conftest import GATEWAY_USER, SITE, Police, Site, register_yaml, until
from .helpers import T0, open_store

LOGIN = Login(USER, PASSWORD)


def cam(url: str, auth: str = "digest") -> Camera:
    return Camera("cam", SITE, "Gate", snapshot=url, auth=auth, credentials="c")


@pytest.fixture
def camera() -> Any:
    with CameraServer() as server:
        yield server


# -- one fetch -------------------------------------------------------------------------


async def test_digest_and_basic_auth_give_the_jpeg(camera: CameraServer) -> None:
    async with session() as client:
        shot = await fetch(client, cam(camera.url("/digest.jpg")), LOGIN)
        assert shot.status == "ok" and shot.jpeg == camera.picture
        assert camera.requests["/digest.jpg"] == 2  # the challenge, then the answer
        shot = await fetch(client, cam(camera.url("/basic.jpg"), "basic"), LOGIN)
        assert shot.status == "ok" and shot.jpeg == camera.picture
        shot = await fetch(client, cam(camera.url("/open.jpg"), "none"), None)
        assert shot.status == "ok"


async def test_each_way_a_camera_fails_is_one_status(camera: CameraServer) -> None:
    async with session() as client:
        wrong = Login(USER, "guess")
        assert (await fetch(client, cam(camera.url("/digest.jpg")), wrong)).status == "http_401"
        assert (await fetch(client, cam(camera.url("/digest.jpg")), None)).status == "http_401"
        assert (await fetch(client, cam(dead_url()), LOGIN)).status == "unreachable"
        big = await fetch(client, cam(camera.url("/big.jpg"), "none"), None, max_bytes=100_000)
        assert big.status == "too_large" and big.jpeg == b""
        assert (await fetch(client, cam(camera.url("/html"), "none"), None)).status == "not_jpeg"
        slow = await fetch(client, cam(camera.url("/slow.jpg"), "none"), None, timeout_s=0.3)
        assert slow.status == "timeout" and not camera.release.is_set()


# -- kept and published ------------------------------------------------------------------


def unsent(snaps: Snapshots) -> list[tuple[int, str, str]]:
    rows = snaps._store.conn.execute(
        "SELECT id, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY id"
    ).fetchall()
    return [(int(r[0]), r[1], r[2]) for r in rows]


def test_parts_wait_behind_alarms_and_reassemble(tmp_path: Path, site_signer: Signer) -> None:
    store = open_store(tmp_path / "var" / "gateway.db")
    store.seal = site_signer.seal
    snaps = Snapshots(store, tmp_path / "var" / "snapshots", prefix="cg", gateway_id="gw-test")
    picture = jpeg(6 * PART_BYTES + 100)
    shot = Shot("cam-gate", "ok", 0.05, picture)
    rel = snaps.save_file("gw-test-shop-a-1-1", shot)
    snaps.record("gw-test-shop-a-1-1", SITE, shot, T0, rel)
    snaps.record(
        "gw-test-shop-a-1-1", SITE, Shot("cam-dead", "unreachable", 0.01, error="x"), T0, None
    )
    path = tmp_path / "var" / "snapshots" / "gw-test-shop-a-1-1" / "cam-gate.jpg"
    assert path.read_bytes() == picture
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert snaps.known("gw-test-shop-a-1-1") and not snaps.known("gw-test-shop-a-1-2")

    got: list[dict[str, Any]] = []
    while True:
        assert snaps.pump(T0) <= WINDOW_PARTS
        rows = unsent(snaps)
        assert len(rows) <= WINDOW_PARTS  # never more parts ahead of a new alarm
        if not rows:
            break
        for _rid, topic, payload in rows:
            assert len(payload.encode()) < MAX_PAYLOAD_BYTES  # what duty rooms accept
            env = json.loads(payload)
            body = json.loads(env["body"])
            assert topic == f"cg/{SITE}/snapshot/gw-test-shop-a-1-1/{body['camera']}"
            got.append(body)
        store.mark_acked([(r, T0 + 1) for r in store.pending(100)])
    parts = sorted((b for b in got if b["camera"] == "cam-gate"), key=lambda b: b["part"])
    assert [b["part"] for b in parts] == list(range(1, 8)) and parts[0]["parts"] == 7
    whole = b"".join(base64.b64decode(b["data"]) for b in parts)
    assert whole == picture and hashlib.sha256(whole).hexdigest() == parts[0]["sha256"]
    dead = [b for b in got if b["camera"] == "cam-dead"]
    assert len(dead) == 1 and dead[0]["status"] == "unreachable" and "data" not in dead[0]
    assert snaps.pump(T0) == 0

    assert snaps.prune(T0 - 1) == 0 and path.exists()
    assert snaps.prune(T0 + 1) == 2
    assert not path.exists() and not snaps.known("gw-test-shop-a-1-1")
    store.close()


@pytest.fixture
def site_signer(tmp_path: Path) -> Signer:
    from gateway.security.signkeys import write_pair

    write_pair(tmp_path / "k", gateway_kid("gw-test"))
    return Signer.load(tmp_path / "k", gateway_kid("gw-test"))


# -- through the gateway -----------------------------------------------------------------


def with_cameras(site: Site, camera: CameraServer) -> None:
    """shop-a's place has a working digest camera, a hung one and a dead one."""
    data = yaml.safe_load(site.config_path.read_text())
    data["cameras"] = [
        {"id": "cam-gate", "site": SITE, "name": "Gate", "snapshot": camera.url("/digest.jpg"),
         "rtsp": "rtsp://127.0.0.1/ch1", "credentials": "gate"},
        {"id": "cam-slow", "site": SITE, "name": "Hung", "snapshot": camera.url("/slow.jpg"),
         "auth": "none"},
        {"id": "cam-dead", "site": SITE, "name": "Dead", "snapshot": dead_url(), "auth": "none"},
    ]  # fmt: skip
    data["units"][0]["cameras"] = ["cam-gate", "cam-slow", "cam-dead"]
    site.config_path.write_text(yaml.safe_dump(data))
    site.config = parse_config(data, str(site.config_path))
    write_login(site.keydir, "gate")


@contextlib.asynccontextmanager
async def gateway_with_video(site: Site, broker: Mosquitto) -> AsyncIterator[Gateway]:
    settings = Settings(db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER))
    gw = Gateway(site.config, settings)
    assert attach_video(gw) is not None
    task = asyncio.create_task(gw.run(), name="gateway")
    try:
        async with asyncio.timeout(5):
            await gw.ready.wait()
        yield gw
    finally:
        gw.stop()
        async with asyncio.timeout(5):
            await task


def snapshots_of(police: Police, camera_id: str) -> list[dict[str, Any]]:
    return [
        m.payload
        for m in police.messages
        if "/snapshot/" in m.topic and m.payload["camera"] == camera_id
    ]


async def test_alarm_goes_out_while_a_camera_hangs_then_the_snapshots_follow(
    site: Site, broker: Mosquitto, police: Police, camera: CameraServer
) -> None:
    with_cameras(site, camera)
    async with gateway_with_video(site, broker) as gw:
        unit = site.unit("shop-a")
        frame = unit.send(Alarm(AlarmKind.PANIC, 1, 0))
        await police.wait_for(lambda: len(police.alarms()) >= 1)
        # the hung camera has not answered, and the alarm is out all the same
        assert not camera.release.is_set()
        alarm = police.alarms()[0]
        assert [c["id"] for c in alarm["cameras"]] == ["cam-gate", "cam-slow", "cam-dead"]
        iid = alarm["incident"]
        assert iid.endswith(f"-{frame.epoch}-{frame.seq}")

        def complete(cid: str) -> bool:
            got = snapshots_of(police, cid)
            return bool(got) and len(got) >= got[0].get("parts", 1)

        await police.wait_for(lambda: all(map(complete, ("cam-gate", "cam-slow", "cam-dead"))))
        parts = sorted(snapshots_of(police, "cam-gate"), key=lambda b: b["part"])
        whole = b"".join(base64.b64decode(p["data"]) for p in parts)
        assert whole == camera.picture and parts[0]["incident"] == iid
        assert hashlib.sha256(whole).hexdigest() == parts[0]["sha256"]
        assert snapshots_of(police, "cam-slow")[0]["status"] == "timeout"
        assert snapshots_of(police, "cam-dead")[0]["status"] == "unreachable"
        # in the outbox the alarm came first
        rows = gw.store.conn.execute("SELECT id, topic FROM outbox ORDER BY id").fetchall()
        first_snap = min(i for i, t in rows if "/snapshot/" in t)
        assert all(i < first_snap for i, t in rows if "/alarm/shop-a" in t)
        kept = site.db.parent / "snapshots" / iid / "cam-gate.jpg"
        assert kept.read_bytes() == camera.picture
        # a second press folds into the incident: no second round of snapshots
        gets = camera.requests["/digest.jpg"]
        unit.send(Alarm(AlarmKind.PANIC, 2, 0))
        await police.wait_for(lambda: any(a["update"] == "presses" for a in police.alarms()))
        assert camera.requests["/digest.jpg"] == gets


class FailingOnce(Snapshots):
    """A journal that refuses the first snapshot row (disk full, say)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.refused = 0

    def record(self, *a: Any, **kw: Any) -> None:
        if not self.refused:
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full (test)")
        super().record(*a, **kw)


async def test_a_journal_error_ends_one_incident_s_snapshots_not_the_service(
    tmp_path: Path, camera: CameraServer
) -> None:
    data = yaml.safe_load(register_yaml(tmp_path / "tty", [("shop-a", 257)]))
    data["cameras"] = [{"id": "cam", "site": SITE, "name": "Gate",
                        "snapshot": camera.url("/open.jpg"), "auth": "none"}]  # fmt: skip
    data["units"][0]["cameras"] = ["cam"]
    cfg = parse_config(data, "boards.yaml")
    store = open_store(tmp_path / "j.db")
    snaps = FailingOnce(store, tmp_path / "snapshots", prefix="cg", gateway_id="gw-test")
    watch = SnapshotWatch(cfg, snaps, SecretDir(tmp_path), ManualClock(T0))
    task = asyncio.create_task(watch.run())
    try:
        watch.take("gw-test-shop-a-1-1", cfg.units["shop-a"])
        await until(lambda: watch.failed == 1)
        watch.take("gw-test-shop-a-1-9", cfg.units["shop-a"])
        await until(lambda: snaps.known("gw-test-shop-a-1-9"))
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def test_a_duress_checkin_at_a_guard_post_gets_its_snapshot(
    site: Site, broker: Mosquitto, police: Police, camera: CameraServer
) -> None:
    data = yaml.safe_load(site.config_path.read_text())
    data["cameras"] = [{"id": "cam-north", "site": SITE, "name": "North gate",
                        "snapshot": camera.url("/basic.jpg"), "auth": "basic",
                        "credentials": "north"}]  # fmt: skip
    guard = next(u for u in data["units"] if u["id"] == "guard-n")
    guard["cameras"] = ["cam-north"]
    site.config_path.write_text(yaml.safe_dump(data))
    site.config = parse_config(data, str(site.config_path))
    write_login(site.keydir, "north")
    async with gateway_with_video(site, broker):
        site.unit("guard-n").send(Checkin(1, 4000))  # the long press: silent duress
        await police.wait_for(lambda: any(a["kind"] == "duress" for a in police.alarms()))
        iid = police.alarms()[0]["incident"]

        def whole() -> bool:
            got = snapshots_of(police, "cam-north")
            return bool(got) and len(got) == got[0]["parts"]

        await police.wait_for(whole)
        parts = sorted(snapshots_of(police, "cam-north"), key=lambda b: b["part"])
        assert parts[0]["incident"] == iid
        assert b"".join(base64.b64decode(p["data"]) for p in parts) == camera.picture
