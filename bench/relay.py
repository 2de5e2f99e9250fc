"""Gateway relay latency: frame into a pty -> broker PUBACK, and -> a subscriber.

Runs the real gateway (`campusguard gateway`, a subprocess, its journal fsynced before
every unit ACK, the supervision and duty watchers attached) against its own Mosquitto,
with fake units on a pty:

- steady load with 1, 50 and 200 units: an ALARM every 20 ms round-robin (each opens an
  incident; the unit cancels it once the police have it, so the next one opens another),
  and, independently, a HEARTBEAT every 7 ms from the units in turn (background traffic
  that is not synchronised with the alarms, as on a real bus);
- a burst of 1,000 ALARMs from 200 units within one second (5 presses each);
- a bare aiomqtt QoS 1 publish loop (an alarm-sized payload, one at a time) to the same
  broker in the same run, in a process of its own as the gateway is: once like the
  steady runs (one publish per alarm interval, this process subscribed to the alarm
  topics, so the broker forwards every message before its PUBACK), once hot (every 2 ms,
  nobody subscribed: the floor);
- the pieces of the path measured on their own: pty write -> read, deframe + decode,
  a commit with synchronous FULL vs NORMAL on the journal's filesystem; and the
  gateway's own stage latencies (its `stats`, stored in the journal at stop; `commit` is
  the COMMIT on the loop, `fsync` the WAL fsync in the worker thread).

PUBACK latency is the time from writing the frame's bytes into the pty to the moment the
gateway received the broker's PUBACK (outbox.sent_at holds that moment; same host clock).

overhead ratio = gateway frame-in -> PUBACK / bare publish -> PUBACK, at p50 and at p99
(each against the same percentile of the bare loop run like the steady runs;
`overhead_ratio_vs_hot_loop` against the hot one). `--json` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway.security.envelope import open_gateway  # noqa: E402
from gateway.security.signkeys import gateway_keys, provision_one_room  # noqa: E402
from protocol import (  # noqa: E402
    Alarm,
    AlarmKind,
    Cancel,
    Codec,
    Deframer,
    Heartbeat,
    HeartbeatFlags,
)
from tests.support.fakeunit import FakePort, FakeUnit  # noqa: E402
from tests.support.mosquitto import Mosquitto, open_broker  # noqa: E402

CAMPUSGUARD = str(Path(sys.executable).with_name("campusguard"))
GATEWAY = "gw-bench"
SITE = "bench-school"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50) * 1000, 2),
        "p99_ms": round(pct(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
    }


def write_site(d: Path, port: Path, n: int) -> tuple[Path, Path, dict[int, bytes]]:
    keydir = d / "keys"
    keydir.mkdir()
    lines = [
        "version: 1",
        f"gateway: {{id: {GATEWAY}, site: {SITE}}}",
        "defaults: {incident_window_s: 10}",
        "links:",
        f"  - {{id: bus, port: {port}, baud: 115200}}",
        "sites:",
        f"  - {{id: {SITE}, name: Bench, address: x, security_lead: {{name: x, phone: '1'}}}}",
        "units:",
    ]
    keys: dict[int, bytes] = {}
    for i in range(n):
        addr = 1000 + i
        keys[addr] = os.urandom(32)
        (keydir / f"u{addr}.key").write_text(keys[addr].hex())
        lines += [
            f"  - {{id: u{addr}, addr: {addr}, site: {SITE}, place: Shop {i}, owner: o,",
            "      role: shop, link: bus, pins: {button: 13, tamper: 4, led: 2, buzzer: 15,",
            "      battery_adc: 34, uart_tx: 17, uart_rx: 16}}",
        ]
    cfg = d / "boards.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    provision_one_room(keydir, GATEWAY, "bench")  # the gateway signs what it publishes
    return cfg, keydir, keys


class Run:
    """One gateway process with N fake units on one pty bus, and a subscriber."""

    def __init__(self, broker: Mosquitto, n: int, tmp: Path, name: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.port = FakePort(self.dir / "ttyBUS")
        self.cfg, self.keydir, keys = write_site(self.dir, self.port.path, n)
        self.units = [FakeUnit(self.port, a, k, epoch=1) for a, k in keys.items()]
        self.db = self.dir / "gateway.db"
        self.broker = broker
        self.received: dict[tuple[str, str], float] = {}
        self.presses: dict[str, int] = {}
        self._sub_ready = asyncio.Event()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                CAMPUSGUARD,
                "gateway",
                "--config",
                str(self.cfg),
                "--keydir",
                str(self.keydir),
                "--db",
                str(self.db),
                "--broker",
                self.broker.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "gateway.log").open("wb"),
        )
        self.sub = asyncio.create_task(self._subscribe())
        await asyncio.wait_for(self._sub_ready.wait(), 10)
        warm = self.units[0].make(Heartbeat(3700, 1, 0x0100, HeartbeatFlags(0)))
        await self.units[0].send_until_acked(warm, timeout=15)

    async def _subscribe(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as c:
            await c.subscribe(f"campusguard/{SITE}/alarm/+", qos=1)
            self._sub_ready.set()
            trusted = gateway_keys(self.keydir)
            async for m in c.messages:
                raw = m.payload if isinstance(m.payload, bytes) else b""
                d = open_gateway(str(m.topic), raw, trusted)  # as a duty room checks it
                self.received.setdefault((d["incident"], d["update"]), time.time())
                self.presses[d["incident"]] = max(self.presses.get(d["incident"], 0), d["presses"])
                self._changed.set()

    async def wait(self, pred: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    def sent_at(self) -> dict[str, float]:
        db = sqlite3.connect(self.db)
        rows = db.execute(
            "SELECT incident, min(sent_at) FROM outbox WHERE incident IS NOT NULL"
            " AND json_extract(json_extract(payload, '$.body'), '$.update') = 'new'"
            " GROUP BY incident"
        ).fetchall()
        db.close()
        return {r[0]: r[1] for r in rows if r[1] is not None}

    async def stop(self) -> None:
        self.sub.cancel()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, 10)
        self.port.close()

    def stats(self) -> dict[str, Any]:
        """The gateway's own stage latencies of this run (stored in the journal at stop)."""
        db = sqlite3.connect(self.db)
        row = db.execute("SELECT value FROM meta WHERE key = 'stats'").fetchone()
        db.close()
        return json.loads(row[0]) if row else {}


ALARM_EVERY_S = 0.020
HEARTBEAT_EVERY_S = 0.007


async def steady(broker: Mosquitto, n: int, samples: int, tmp: Path) -> dict[str, Any]:
    run = Run(broker, n, tmp, f"steady{n}")
    await run.start()
    written: dict[str, float] = {}
    ack_lat: list[float] = []

    async def background() -> None:
        i = 0
        t_next = time.monotonic()
        while True:
            hu = run.units[i % n]
            hu.send(Heartbeat(3700, 10 + i, 0x0100, HeartbeatFlags(0)))
            i += 1
            t_next += HEARTBEAT_EVERY_S
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))

    bg = asyncio.create_task(background())
    try:
        t_next = time.monotonic()
        for i in range(samples):
            u = run.units[i % n]
            f = u.make(Alarm(AlarmKind.PANIC, 1, 1000 + i))
            iid = f"{GATEWAY}-u{u.addr}-{f.epoch}-{f.seq}"
            wire = u.wire(f)
            t0 = time.time()
            run.port.write(wire)
            written[iid] = t0
            await run.port.wait_ack(f, timeout=5)
            ack_lat.append(time.time() - t0)
            await run.wait(lambda iid=iid: (iid, "new") in run.received, 5)  # type: ignore[misc]
            u.send(Cancel(f.epoch, f.seq))  # so the unit's next press opens a new incident
            t_next += ALARM_EVERY_S
            await asyncio.sleep(max(0.001, t_next - time.monotonic()))
        await run.wait(lambda: all((i, "cancelled") in run.received for i in written), 10)
    finally:
        bg.cancel()
        await run.stop()
    sent = run.sent_at()
    puback = [sent[i] - t for i, t in written.items() if i in sent]
    e2e = [run.received[(i, "new")] - t for i, t in written.items()]
    return {
        "units": n,
        "ack": ms(ack_lat),
        "puback": ms(puback),
        "subscriber": ms(e2e),
        "gateway_stats": run.stats(),
    }


async def burst(broker: Mosquitto, tmp: Path) -> dict[str, Any]:
    n, per_unit = 200, 5
    run = Run(broker, n, tmp, "burst")
    await run.start()
    frames = []
    t_write: dict[tuple[int, int, int], float] = {}
    first_of: dict[str, float] = {}
    try:
        t_start = time.time()
        idx = 0
        for k in range(per_unit):
            for u in run.units:
                f = u.make(Alarm(AlarmKind.PANIC, k + 1, 5000))
                now = time.time()
                u.resend(f)
                t_write[(f.unit, f.epoch, f.seq)] = now
                if k == 0:
                    first_of[f"{GATEWAY}-u{u.addr}-{f.epoch}-{f.seq}"] = now
                frames.append(f)
                idx += 1
                if idx % 10 == 0:  # spread evenly over 0.9 s
                    await asyncio.sleep(max(0.0, t_start + idx * 0.0009 - time.time()))
        t_written = time.time() - t_start
        await run.port.wait_for(lambda: all(run.port.acks_for(f) for f in frames), 30)
        ack_lat = []
        for f in frames:
            at = run.port.first_ack_at(f)
            assert at is not None
            ack_lat.append(at - t_write[(f.unit, f.epoch, f.seq)])
        await run.wait(
            lambda: len(run.presses) == n and all(p == per_unit for p in run.presses.values()), 30
        )
        t_all = time.time() - t_start
        sent = run.sent_at()
        puback = [sent[i] - t for i, t in first_of.items() if i in sent]
        e2e = [run.received[(i, "new")] - t for i, t in first_of.items()]
        db = sqlite3.connect(run.db)
        journalled = db.execute("SELECT count(*) FROM frames WHERE type='ALARM'").fetchone()[0]
        incidents = db.execute("SELECT count(*), sum(presses) FROM incidents").fetchone()
        db.close()
    finally:
        await run.stop()
    return {
        "gateway_stats": run.stats(),
        "alarms": len(frames),
        "units": n,
        "written_in_s": round(t_written, 3),
        "journalled": journalled,
        "incidents": incidents[0],
        "presses_total": incidents[1],
        "all_delivered_in_s": round(t_all, 3),
        "ack": ms(ack_lat),
        "first_press_puback": ms(puback),
        "first_press_subscriber": ms(e2e),
    }


ALARM_SIZED = json.dumps(
    {
        "incident": "gw-bench-u1000-1-0",
        "update": "new",
        "update_no": 1,
        "gateway": GATEWAY,
        "site": SITE,
        "unit": "u1000",
        "place": "Shop 0 " + "x" * 60,
        "owner": "o" * 40,
        "role": "shop",
        "kind": "panic",
        "contact_id": 120,
        "first_press_at": "2026-11-29T16:05:25.812Z",
        "first_press_source": "unit_uptime",
        "received_at": "2026-11-29T16:05:26.110Z",
        "presses": 1,
        "state": "open",
        "cancelled_at": None,
        "police_ack_at": None,
        "police_ack_by": None,
        "disposition": None,
        "closed_at": None,
        "published_at": "2026-11-29T16:05:26.110Z",
        "link": "bus",
    }
)


async def bare_loop(host: str, port: int, count: int, gap_s: float) -> list[float]:
    """aiomqtt QoS 1 publishes of an alarm-sized payload, one at a time, ``gap_s`` apart."""
    lat = []
    async with aiomqtt.Client(host, port) as c:
        for _ in range(count):
            t0 = time.perf_counter()
            await c.publish(f"campusguard/{SITE}/alarm/u1000", ALARM_SIZED, qos=1)
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(gap_s)
    return lat


async def bare(
    broker: Mosquitto, *, subscribed: bool, gap_s: float, count: int = 400
) -> dict[str, Any]:
    """The bare loop in a process of its own, as the gateway is, against the same broker.

    ``subscribed``: this process listens on the alarm topics meanwhile, as it does in the
    gateway runs, so the broker forwards each message to a subscriber before its PUBACK
    and a third process competes for the CPUs. ``gap_s``: the pause between publishes;
    at the steady runs' alarm interval the CPUs and the broker idle in between as they do
    there (measured here: about twice the round trip of a loop that publishes every 2 ms).
    Subscribed and at that interval: the same conditions, minus the gateway.
    """
    got = 0
    ready = asyncio.Event()

    async def listen() -> None:
        nonlocal got
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe(f"campusguard/{SITE}/alarm/+", qos=1)
            ready.set()
            async for m in c.messages:
                json.loads(m.payload if isinstance(m.payload, bytes) else b"{}")
                got += 1

    sub = asyncio.create_task(listen()) if subscribed else None
    try:
        if sub is not None:
            await asyncio.wait_for(ready.wait(), 10)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--bare-loop",
            f"{broker.host}:{broker.port}:{count}:{gap_s}",
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bare loop failed ({proc.returncode})")
        if sub is not None:
            async with asyncio.timeout(10):
                while got < count:
                    await asyncio.sleep(0.05)
    finally:
        if sub is not None:
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
    return {**ms(json.loads(out)), "subscriber": subscribed, "every_ms": gap_s * 1000}


async def pty_latency(count: int = 300) -> dict[str, Any]:
    """One frame's bytes written into a pty master -> readable on the slave (same process)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    os.set_blocking(slave, False)
    loop = asyncio.get_running_loop()
    lat = []
    data = bytes(range(1, 48))
    try:
        for _ in range(count):
            fut: asyncio.Future[float] = loop.create_future()

            def readable(fut: asyncio.Future[float] = fut) -> None:
                os.read(slave, 4096)
                if not fut.done():
                    fut.set_result(time.perf_counter())

            loop.add_reader(slave, readable)
            t0 = time.perf_counter()
            os.write(master, data)
            lat.append(await fut - t0)
            loop.remove_reader(slave)
            await asyncio.sleep(0.002)
    finally:
        os.close(master)
        os.close(slave)
    return ms(lat)


def decode_cost(count: int = 1000) -> dict[str, Any]:
    """Deframe + decode (CRC, HMAC) of one ALARM frame."""
    key = os.urandom(32)
    port_keys = {1000: key}
    from protocol import Frame, encode, to_wire

    wires = [
        to_wire(encode(Frame(1000, 1, i, Alarm(AlarmKind.PANIC, 1, i)), key)) for i in range(count)
    ]
    codec = Codec(port_keys)
    deframer = Deframer()
    lat = []
    for w in wires:
        t0 = time.perf_counter()
        for raw in deframer.feed(w):
            codec.decode(raw)
        lat.append(time.perf_counter() - t0)
    return ms(lat)


def commit_cost(directory: Path, count: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level in ("FULL", "NORMAL"):
        path = directory / f"commit-{level}.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={level}")
        db.execute("CREATE TABLE t (x BLOB)")
        lat = []
        for _ in range(count):
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(200),))
            db.execute("COMMIT")
            lat.append(time.perf_counter() - t0)
        db.close()
        out[level] = ms(lat)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True, text=True)
    out["filesystem"] = fs.stdout.strip()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-", dir=args.dir))
    result: dict[str, Any] = {"bench": "relay", "python": sys.version.split()[0]}
    # plain TCP, anonymous: the same broker as before signing, so that before/after
    # compare the gateway's own path (the TLS broker's cost is bench/e2e.py's)
    with open_broker(tmp / "broker") as broker:
        result["steady"] = [
            await steady(broker, 1, args.samples, tmp),
            await steady(broker, 50, args.samples, tmp),
            await steady(broker, 200, max(200, args.samples), tmp),
        ]
        result["burst"] = await burst(broker, tmp)
        result["bare_aiomqtt_puback"] = await bare(broker, subscribed=True, gap_s=ALARM_EVERY_S)
        result["bare_aiomqtt_puback_hot"] = await bare(broker, subscribed=False, gap_s=0.002)
        # how much of a round trip is the CPUs and the broker waking up: the same loop,
        # subscribed, at the heartbeats' interval and at 2 ms
        result["bare_aiomqtt_puback_by_interval_ms"] = {
            str(round(gap * 1000)): (await bare(broker, subscribed=True, gap_s=gap, count=200))[
                "p50_ms"
            ]
            for gap in (0.002, HEARTBEAT_EVERY_S)
        }
        result["bare_aiomqtt_puback_by_interval_ms"][str(round(ALARM_EVERY_S * 1000))] = result[
            "bare_aiomqtt_puback"
        ]["p50_ms"]
    result["commit"] = commit_cost(tmp)
    result["pty_write_to_read"] = await pty_latency()
    result["deframe_decode"] = decode_cost()
    bare_r = result["bare_aiomqtt_puback"]
    floor = result["bare_aiomqtt_puback_hot"]
    result["overhead_ratio"] = {
        "definition": "gateway frame-in->PUBACK / bare publish->PUBACK, same percentile; "
        "the bare loop runs in its own process, one publish per alarm interval of the "
        "steady runs, with this process subscribed, as in the gateway runs",
        **{
            str(s["units"]): {
                "p50": round(s["puback"]["p50_ms"] / bare_r["p50_ms"], 1),
                "p99": round(s["puback"]["p99_ms"] / bare_r["p99_ms"], 1),
            }
            for s in result["steady"]
        },
    }
    result["overhead_ratio_vs_hot_loop"] = {
        "definition": "the same against a bare loop publishing every 2 ms with nobody "
        "subscribed (a warm CPU and an idle broker: the floor)",
        **{
            str(s["units"]): {
                "p50": round(s["puback"]["p50_ms"] / floor["p50_ms"], 1),
                "p99": round(s["puback"]["p99_ms"] / floor["p99_ms"], 1),
            }
            for s in result["steady"]
        },
    }
    # the old key, kept for scripts that read it
    result["ratio_gateway_puback_p50_to_bare_p50"] = {
        k: v["p50"] for k, v in result["overhead_ratio"].items() if isinstance(v, dict)
    }
    s1 = result["steady"][0]
    result["breakdown_1_unit_p50_ms"] = {
        "pty_write_to_read": result["pty_write_to_read"]["p50_ms"],
        "deframe_decode": result["deframe_decode"]["p50_ms"],
        "gateway_frames_to_acks_incl_fsync": (
            s1["gateway_stats"].get("batch_frames_to_acks") or {}
        ).get("p50_ms"),
        "commit_on_the_loop": (s1["gateway_stats"].get("commit") or {}).get("p50_ms"),
        "wal_fsync_in_worker": (s1["gateway_stats"].get("fsync") or {}).get("p50_ms"),
        "gateway_publish_to_puback": (s1["gateway_stats"].get("publish_to_puback") or {}).get(
            "p50_ms"
        ),
        "bare_publish_to_puback": bare_r["p50_ms"],
        "total_frame_in_to_puback": s1["puback"]["p50_ms"],
    }
    result["targets"] = {
        "steady_p99_under_5_ms": all(s["puback"]["p99_ms"] < 5 for s in result["steady"]),
        "burst_all_delivered": result["burst"]["presses_total"] == result["burst"]["alarms"],
        "burst_p99_under_1_s": result["burst"]["first_press_puback"]["p99_ms"] < 1000,
        "overhead_ratio_p50_under_3": all(
            v["p50"] < 3 for v in result["overhead_ratio"].values() if isinstance(v, dict)
        ),
    }
    return result


def show(r: dict[str, Any]) -> None:
    print(f"relay bench (python {r['python']})")
    for s in r["steady"]:
        print(
            f"  steady {s['units']:>3} units: frame->ACK p50 {s['ack']['p50_ms']} ms "
            f"p99 {s['ack']['p99_ms']} ms; frame->PUBACK p50 {s['puback']['p50_ms']} ms "
            f"p99 {s['puback']['p99_ms']} ms; ->subscriber p99 {s['subscriber']['p99_ms']} ms"
        )
    b = r["burst"]
    print(
        f"  burst {b['alarms']} alarms / {b['units']} units written in {b['written_in_s']} s: "
        f"journalled {b['journalled']}, {b['incidents']} incidents, {b['presses_total']} presses, "
        f"all delivered in {b['all_delivered_in_s']} s; ACK p99 {b['ack']['p99_ms']} ms; "
        f"first press PUBACK p99 {b['first_press_puback']['p99_ms']} ms"
    )
    bare_r = r["bare_aiomqtt_puback"]
    floor = r["bare_aiomqtt_puback_hot"]
    print(
        f"  bare aiomqtt QoS1 publish->PUBACK, one per {bare_r['every_ms']:.0f} ms, subscribed:"
        f" p50 {bare_r['p50_ms']} ms p99 {bare_r['p99_ms']} ms (every 2 ms, nobody"
        f" subscribed: p50 {floor['p50_ms']} ms p99 {floor['p99_ms']} ms)"
    )
    print(
        "  bare p50 by interval between publishes (ms: ms):",
        r["bare_aiomqtt_puback_by_interval_ms"],
    )
    for key in ("overhead_ratio", "overhead_ratio_vs_hot_loop"):
        print(f"  {key} ({r[key]['definition']}):")
        for k, v in r[key].items():
            if isinstance(v, dict):
                print(f"    {k:>3} units: p50 {v['p50']}x  p99 {v['p99']}x")
    c = r["commit"]
    print(
        f"  durable commit on {c['filesystem']}: FULL p50 {c['FULL']['p50_ms']} ms, "
        f"NORMAL p50 {c['NORMAL']['p50_ms']} ms"
    )
    print(f"  breakdown, 1 unit, p50 ms: {r['breakdown_1_unit_p50_ms']}")
    print(f"  targets: {r['targets']}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--samples", type=int, default=200, help="alarms per steady run")
    p.add_argument("--dir", help="where the journal and broker live (default: the temp dir)")
    p.add_argument("--bare-loop", metavar="HOST:PORT:COUNT", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.bare_loop:  # the bare loop's own process (see bare())
        host, port, count, gap = a.bare_loop.rsplit(":", 3)
        print(json.dumps(asyncio.run(bare_loop(host, int(port), int(count), float(gap)))))
        sys.exit(0)
    res = asyncio.run(main(a))
    if a.json:
        print(json.dumps(res))
    else:
        show(res)
