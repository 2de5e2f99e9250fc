"""Camera snapshots against the alarm path (issue 17 item 6).

The real gateway in-process (journal fsynced before each unit ACK, relay, supervision and
duty watchers, the snapshot watcher) against a locked Mosquitto, with fake units on a pty
and a duty room that verifies every signature. Two runs of the same alarms, one ALARM
every ``--interval-ms`` from a new unit each time (each opens an incident):

- ``no_cameras``: the places have no cameras;
- ``cameras``: every place has three: a digest-auth camera that answers a 30 KB JPEG, a
  hung one (answers only after the gateway has given up, at 2 s) and a dead one (nothing
  listens), so every incident costs three fetches, a 2 s timeout and 7 published parts.

Alarm latency is pty write -> the duty room has the verified alarm. Snapshot fetch time
is the gateway's own measure per camera (journal table ``snapshots``). ``parts_ahead_max``
is, over every alarm, how many snapshot parts were still unsent in the outbox when it was
queued (the most that could be ahead of it). `--json` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from gateway.cmd_gateway import attach_video, build_watchers  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.service import Gateway, Settings  # noqa: E402
from protocol import Alarm, AlarmKind  # noqa: E402
from tests.gateway.conftest import GATEWAY_USER, SITE, Police, locked_broker, make_site  # noqa: E402
from tests.support.camera import CameraServer, dead_url, write_login  # noqa: E402


class RemoteCamera:
    """The camera server in a process of its own, as a real camera is not in the gateway."""

    def __enter__(self) -> RemoteCamera:
        ctx = multiprocessing.get_context("fork")
        q: Any = ctx.Queue()
        self._proc = ctx.Process(target=_serve_camera, args=(q,), daemon=True)
        self._proc.start()
        self.port = int(q.get(timeout=10))
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __exit__(self, *exc: object) -> None:
        self._proc.kill()
        self._proc.join()


def _serve_camera(q: Any) -> None:
    with CameraServer() as camera:
        q.put(camera.port)
        threading.Event().wait()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[round(q * (len(s) - 1))] * 1000, 2)


async def run(tmp: Path, n: int, interval_s: float, cameras: bool, ca: Path) -> dict[str, Any]:
    units = [(f"shop-{i}", 257 + i) for i in range(n)]
    tmp.mkdir(parents=True)
    site = make_site(tmp, units)
    with RemoteCamera() as camera, locked_broker(tmp / "broker", ca) as broker:
        if cameras:
            data = yaml.safe_load(site.config_path.read_text())
            data["cameras"] = [
                {"id": "cam-gate", "site": SITE, "name": "Gate",
                 "snapshot": camera.url("/digest.jpg"), "credentials": "gate"},
                {"id": "cam-hung", "site": SITE, "name": "Hung",
                 "snapshot": camera.url("/slow.jpg"), "auth": "none"},
                {"id": "cam-dead", "site": SITE, "name": "Dead", "snapshot": dead_url(),
                 "auth": "none"},
            ]  # fmt: skip
            for u in data["units"]:
                u["cameras"] = ["cam-gate", "cam-hung", "cam-dead"]
            site.config = parse_config(data, str(site.config_path))
            write_login(site.keydir, "gate")
        police = Police(broker, site)
        await police.start()
        settings = Settings(
            db_path=site.db, keydir=site.keydir, broker=broker.settings(GATEWAY_USER)
        )
        gw = Gateway(site.config, settings)
        gw.attach(build_watchers(site.config, gw.outlet, gw.store, gw.clock))
        watch = attach_video(gw)
        task = asyncio.create_task(gw.run(), name="gateway")
        await asyncio.wait_for(gw.ready.wait(), 5)
        sent: dict[str, float] = {}
        sent_wall: dict[str, float] = {}
        seen: dict[str, float] = {}

        def note() -> bool:
            for a in police.alarms():
                if a["update"] == "new" and a["unit"] not in seen:
                    seen[a["unit"]] = time.perf_counter()
            return len(seen) == n

        async def observe() -> None:  # timestamps each alarm as the duty room verifies it
            while True:
                police._changed.clear()
                note()
                await police._changed.wait()

        observer = asyncio.create_task(observe())
        for uid, _ in units:
            sent[uid] = time.perf_counter()
            sent_wall[uid] = time.time()
            site.unit(uid).send(Alarm(AlarmKind.PANIC, 1, 0))
            await asyncio.sleep(interval_s)
        await police.wait_for(note, timeout=30)
        if cameras:
            expected = n * 3
            await police.wait_for(
                lambda: sum(1 for t, d in police.messages if "/snapshot/" in t
                            and d.get("part", 1) == d.get("parts", 1)) >= expected,
                timeout=60,
            )  # fmt: skip
        rows = (
            gw.store.conn.execute("SELECT camera, status, elapsed_s FROM snapshots").fetchall()
            if watch
            else []
        )
        outbox = gw.store.conn.execute(
            "SELECT id, topic, created_at, sent_at, incident FROM outbox ORDER BY id"
        ).fetchall()
        observer.cancel()
        gw.stop()
        await asyncio.wait_for(task, 10)
        await police.stop()
    alarm_rows = [r for r in outbox if "/alarm/" in r[1]]
    snap_rows = [r for r in outbox if "/snapshot/" in r[1]]
    ahead = [
        sum(1 for s in snap_rows if s[0] < a[0] and (s[3] is None or s[3] > a[2]))
        for a in alarm_rows
    ]
    lat = [seen[u] - sent[u] for u in sent]
    # the gateway's own part: pty write -> the broker's PUBACK of the alarm (outbox.sent_at)
    first_alarm = {}
    for a in alarm_rows:
        first_alarm.setdefault(a[1].rsplit("/", 1)[1], a)
    puback = [first_alarm[u][3] - sent_wall[u] for u in sent_wall if u in first_alarm]
    ok = [r[2] for r in rows if r[1] == "ok"]
    out: dict[str, Any] = {
        "alarms": n,
        "alarms_seen": len(seen),
        "alarm_latency_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": pct(lat, 1.0)},
        "frame_to_puback_ms": {
            "p50": pct(puback, 0.5),
            "p99": pct(puback, 0.99),
            "max": pct(puback, 1.0),
        },
    }
    if cameras:
        out["snapshot_fetch_ms_ok"] = {"n": len(ok), "p50": pct(ok, 0.5), "p99": pct(ok, 0.99)}
        out["snapshot_outcomes"] = {
            s: sum(1 for r in rows if r[1] == s) for s in sorted({r[1] for r in rows})
        }
        out["snapshot_parts_published"] = len(snap_rows)
        out["parts_ahead_max"] = max(ahead) if ahead else 0
        first_snap: dict[str, int] = {}
        for s in snap_rows:
            first_snap.setdefault(s[1].split("/")[-2], s[0])
        out["alarms_queued_after_own_snapshot"] = sum(
            1 for a in alarm_rows if a[4] in first_snap and first_snap[a[4]] < a[0]
            and a[0] == min(x[0] for x in alarm_rows if x[4] == a[4])
        )  # fmt: skip
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        ca = Path(d) / "ca"
        ca.mkdir()
        base = await run(Path(d) / "a", args.alarms, args.interval_ms / 1000, False, ca)
        cams = await run(Path(d) / "b", args.alarms, args.interval_ms / 1000, True, ca)
    return {
        "no_cameras": base,
        "cameras": cams,
        "alarm_p99_delta_ms": round(
            (cams["alarm_latency_ms"]["p99"] or 0) - (base["alarm_latency_ms"]["p99"] or 0), 2
        ),
    }


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alarms", type=int, default=40)
    p.add_argument("--interval-ms", type=float, default=150.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
