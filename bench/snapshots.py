"""Camera snapshots against the alarm path (issue 17 item 6).

The real gateway (`campusguard gateway`, a process of its own as on the Pi: journal
fsynced before each unit ACK, relay, supervision and duty watchers, the snapshot watcher)
against Mosquitto (open, as bench/relay.py: the application layer is measured), with fake
units on a pty and a duty room that verifies every signature, in this process. Two runs
of the same alarms, one ALARM every ``--interval-ms`` from a new unit each time (each
opens an incident):

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
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from protocol import Alarm, AlarmKind, Heartbeat, HeartbeatFlags  # noqa: E402
from tests.gateway.conftest import SITE, Police, make_site, police_for  # noqa: E402
from tests.support.camera import CameraServer, dead_url, write_login  # noqa: E402
from tests.support.mosquitto import open_broker  # noqa: E402

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))


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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    site: Any,
    police: Police,
    units: list[tuple[str, int]],
    interval_s: float,
    cameras: bool,
    pid: int,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], float]:
    """Warm up, press every unit's button once, wait for the alarms (and snapshots)."""
    n = len(units)
    fake = {uid: site.unit(uid) for uid, _ in units}
    warm = fake[units[0][0]]
    await warm.send_until_acked(
        warm.make(Heartbeat(3700, 1, 0x0100, HeartbeatFlags(0))), timeout=15
    )
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    seen: dict[str, float] = {}
    cpu0 = cpu_s(pid)

    def note() -> bool:
        for a in police.alarms():
            if a["update"] == "new" and a["unit"] not in seen:
                seen[a["unit"]] = time.perf_counter()
        return len(seen) == n

    police.listen(lambda _: note())  # timestamps each alarm as the duty room verifies it
    for uid, _ in units:
        sent[uid] = time.perf_counter()
        sent_wall[uid] = time.time()
        fake[uid].send(Alarm(AlarmKind.PANIC, 1, 0))
        await asyncio.sleep(interval_s)
    await police.wait_for(note, timeout=30)
    if cameras:
        expected = n * 3
        await police.wait_for(
            lambda: sum(1 for m in police.messages if "/snapshot/" in m.topic
                        and m.get("part", 1) == m.get("parts", 1)) >= expected,
            timeout=60,
        )  # fmt: skip
    return sent, sent_wall, seen, cpu_s(pid) - cpu0


async def run(tmp: Path, n: int, interval_s: float, cameras: bool) -> dict[str, Any]:
    units = [(f"shop-{i}", 257 + i) for i in range(n)]
    tmp.mkdir(parents=True)
    site = make_site(tmp, units)
    with RemoteCamera() as camera, open_broker(tmp / "broker") as broker:
        data = yaml.safe_load(site.config_path.read_text())
        if cameras:
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
            write_login(site.keydir, "gate")
        site.config_path.write_text(yaml.safe_dump(data))
        police = police_for(broker, site)
        await police.start()
        # the gateway as it runs on the Pi: a process of its own (`campusguard gateway`)
        proc = subprocess.Popen(
            [CAMPUSGUARD, "gateway", "--config", str(site.config_path), "--keydir",
             str(site.keydir), "--db", str(site.db), "--broker", broker.url],
            stdout=subprocess.DEVNULL, stderr=(tmp / "gateway.log").open("wb"),
        )  # fmt: skip
        try:
            got = await drive(site, police, units, interval_s, cameras, proc.pid)
        finally:  # whatever happened, no gateway is left running
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 10)
            await police.stop()
            site.port.close()
    sent, sent_wall, seen, cpu = got
    db = sqlite3.connect(site.db)
    rows = (
        db.execute("SELECT camera, status, elapsed_s FROM snapshots").fetchall() if cameras else []
    )
    outbox = db.execute(
        "SELECT id, topic, created_at, sent_at, incident FROM outbox ORDER BY id"
    ).fetchall()
    db.close()
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
        "gateway_cpu_ms_per_alarm": round(cpu * 1000 / n, 2),
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
    out["_samples"] = {"lat": lat, "puback": puback, "fetch_ok": ok}
    return out


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's runs together: percentiles over every alarm of every round."""
    lat = [x for r in runs for x in r["_samples"]["lat"]]
    puback = [x for r in runs for x in r["_samples"]["puback"]]
    out: dict[str, Any] = {
        "alarms": sum(r["alarms"] for r in runs),
        "alarms_seen": sum(r["alarms_seen"] for r in runs),
        "alarm_latency_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": pct(lat, 1.0)},
        "frame_to_puback_ms": {
            "p50": pct(puback, 0.5),
            "p99": pct(puback, 0.99),
            "max": pct(puback, 1.0),
        },
        "alarm_p99_ms_per_round": [r["alarm_latency_ms"]["p99"] for r in runs],
        "gateway_cpu_ms_per_alarm": round(
            sum(r["gateway_cpu_ms_per_alarm"] * r["alarms"] for r in runs)
            / max(1, sum(r["alarms"] for r in runs)),
            2,
        ),
    }
    if "snapshot_outcomes" in runs[0]:
        ok = [x for r in runs for x in r["_samples"]["fetch_ok"]]
        out["snapshot_fetch_ms_ok"] = {"n": len(ok), "p50": pct(ok, 0.5), "p99": pct(ok, 0.99)}
        outcomes: dict[str, int] = {}
        for r in runs:
            for k, v in r["snapshot_outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
        out["snapshot_outcomes"] = outcomes
        out["snapshot_parts_published"] = sum(r["snapshot_parts_published"] for r in runs)
        out["parts_ahead_max"] = max(r["parts_ahead_max"] for r in runs)
        out["alarms_queued_after_own_snapshot"] = sum(
            r["alarms_queued_after_own_snapshot"] for r in runs
        )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base: list[dict[str, Any]] = []
    cams: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        d = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory()))
        interval = args.interval_ms / 1000
        # the modes take turns (a b, b a, ...): a machine whose load drifts hits both alike
        for i in range(args.rounds):
            for cameras in (False, True) if i % 2 == 0 else (True, False):
                r = await run(d / f"{i}-{int(cameras)}", args.alarms, interval, cameras)
                (cams if cameras else base).append(r)
    b, c = pooled(base), pooled(cams)
    return {
        "rounds": args.rounds,
        "no_cameras": b,
        "cameras": c,
        "alarm_p50_delta_ms": round(
            (c["alarm_latency_ms"]["p50"] or 0) - (b["alarm_latency_ms"]["p50"] or 0), 2
        ),
        "alarm_p99_delta_ms": round(
            (c["alarm_latency_ms"]["p99"] or 0) - (b["alarm_latency_ms"]["p99"] or 0), 2
        ),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alarms", type=int, default=40, help="alarms per run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each mode, taking turns")
    p.add_argument("--interval-ms", type=float, default=150.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, journals)")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
