"""Adversarial run: the real gateway under serial and MQTT attack, genuine alarms throughout.

The gateway runs in-process (the same code as the service) on ptys, with a real
Mosquitto, the duty watch and two guard posts. While genuine alarms go out every
``--alarm-every`` seconds from a unit on line A (each press measured to the moment the
duty room has the verified message), an attacker:

- floods line B with frames in the units' names under a wrong key (forged), and plays
  recorded genuine frames back on line B (replays);
- publishes police acks for every open incident: unsigned, empty, signed by a key the
  gateway does not know, a genuine ack of another incident moved to this one, deeply
  nested JSON, and a 20 MB payload; and replays a genuine ack;
- answers every missed check-in of the attacked guard post with forged duty acks
  (unsigned, wrong key, replayed);
- on the open broker (anonymous, as the repository shipped before), all of that; on
  the locked-down broker (``broker-config``'s), it is also refused at connect.

Printed figures (all must be 0 except the latencies): forged frames accepted, replays
accepted (journalled twice, or moving the unit's downlink to line B), forged acks acted
on (an incident acknowledged, closed or a unit told ACK state 2 without the duty room),
escalations silenced (the attacked post's ladder not reaching ``police`` while the
control post's does), and the genuine alarms' press-to-duty-room latency during the
floods. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway.core.clock import ManualClock  # noqa: E402
from gateway.core.config import load_config  # noqa: E402
from gateway.core.timefmt import iso  # noqa: E402
from gateway.relay.acks import make_ack  # noqa: E402
from gateway.security.brokerconfig import Accounts  # noqa: E402
from gateway.security.envelope import Signer  # noqa: E402
from gateway.security.signkeys import provision_one_room, write_pair  # noqa: E402
from gateway.service.assembly import Gateway, Settings  # noqa: E402
from gateway.service.watchers import build_watchers  # noqa: E402
from gateway.sim.localbroker import LocalBroker  # noqa: E402
from gateway.sim.police import Police  # noqa: E402
from protocol import AckState, Alarm, AlarmKind, Heartbeat, HeartbeatFlags  # noqa: E402
from tests.support.fakeunit import FakePort, FakeUnit  # noqa: E402
from tests.support.mosquitto import open_broker  # noqa: E402

GATEWAY = "gw-adv"
SITE = "adv-school"
DUTYROOM = "police"
PINS = "{button: 13, tamper: 4, led: 2, buzzer: 15, battery_adc: 34, uart_tx: 17, uart_rx: 16}"


def register(a: Path, b: Path) -> str:
    units = [
        ("shop-a", 257, "shop"),
        ("shop-b", 258, "shop"),
        ("guard-gate", 300, "guard_post"),
        ("guard-yard", 301, "guard_post"),
    ]
    lines = [
        "version: 1",
        f"gateway: {{id: {GATEWAY}, site: {SITE}}}",
        "defaults: {incident_window_s: 10}",
        "links:",
        f"  - {{id: bus-a, port: {a}, baud: 115200}}",
        f"  - {{id: bus-b, port: {b}, baud: 115200}}",
        "sites:",
        f"  - {{id: {SITE}, name: S, address: x, security_lead: {{name: L, phone: '1'}}}}",
        "units:",
    ]
    for uid, addr, role in units:
        lines.append(
            f"  - {{id: {uid}, addr: {addr}, site: {SITE}, place: P {uid}, owner: O, role: {role},"
            f" link: bus-a, pins: {PINS}}}"
        )
    lines.append("posts:")
    for post, unit in (("gate", "guard-gate"), ("yard", "guard-yard")):
        lines += [
            f"  - id: {post}",
            f"    site: {SITE}",
            f"    unit: {unit}",
            "    checkin_interval_min: 5",
            "    grace_min: 0",
            "    shifts: [{days: mon-sun, start: '00:00', end: '24:00'}]",
            "    escalation: [{step: prompt_guard, after_min: 0}, {step: security_lead,"
            " after_min: 1}, {step: police, after_min: 2}]",
        ]
    return "\n".join(lines) + "\n"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000, 2)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Attacker:
    """An MQTT client with broker access (open broker: anyone) but no duty-room key."""

    def __init__(self, broker: LocalBroker, tmp: Path) -> None:
        self.broker = broker
        self.stranger = Signer.load(
            write_pair(tmp / "stranger", "dutyroom-police").parent, "dutyroom-police"
        )
        self.sent = 0

    async def publish_all(self, items: list[tuple[str, bytes]]) -> None:
        s = self.broker.settings()
        async with aiomqtt.Client(s.host, s.port, timeout=60) as c:
            for topic, payload in items:
                await c.publish(topic, payload, qos=1)
                self.sent += 1

    def police_ack_forgeries(self, iid: str, genuine_other: str) -> list[tuple[str, bytes]]:
        topic = f"campusguard/{SITE}/ack/{iid}"
        body = {
            "kind": "police_ack",
            "site": SITE,
            "incident": iid,
            "disposition": "false_alarm",
            "by": "Mallory",
            "nonce": secrets.token_hex(16),
            "at": iso(time.time()),
        }
        return [
            (topic, b""),
            (topic, b'{"by": "Mallory", "disposition": "false_alarm"}'),
            (topic, self.stranger.seal_obj(topic, body).encode()),
            (topic, genuine_other.encode()),
            (topic, b"[" * 50_000),
        ]

    def duty_ack_forgeries(self, post: str) -> list[tuple[str, bytes]]:
        topic = f"campusguard/{SITE}/duty/{post}/ack"
        body = {
            "kind": "duty_ack",
            "site": SITE,
            "post": post,
            "by": "Mallory",
            "nonce": secrets.token_hex(16),
            "at": iso(time.time()),
        }
        return [
            (topic, b""),
            (topic, b'{"by": "Mallory"}'),
            (topic, self.stranger.seal_obj(topic, body).encode()),
        ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cg-adv-"))
    port_a, port_b = FakePort(tmp / "ttyA"), FakePort(tmp / "ttyB")
    cfg_path = tmp / "boards.yaml"
    cfg_path.write_text(register(port_a.path, port_b.path))
    config = load_config(cfg_path)
    keydir = tmp / "keys"
    keys = {u.id: secrets.token_bytes(32) for u in config.units.values()}
    keydir.mkdir()
    for uid, k in keys.items():
        (keydir / f"{uid}.key").write_text(k.hex())
    provision_one_room(keydir, GATEWAY, DUTYROOM)
    clock = ManualClock(start=time.time())
    result: dict[str, Any] = {"bench": "adversarial", "python": sys.version.split()[0]}
    with open_broker(tmp / "mqtt") as broker:
        settings = Settings(
            db_path=tmp / "gw.db", keydir=keydir, broker=broker.settings(), clock=clock
        )
        gw = Gateway(config, settings)
        gw.attach(build_watchers(config, gw.outlet, gw.store, gw.clock))
        police = Police(broker.settings(), keydir=keydir, dutyroom=DUTYROOM, clock=clock.now)
        attacker = Attacker(broker, tmp)
        task = asyncio.create_task(gw.run(), name="gateway")
        await police.start()
        try:
            async with asyncio.timeout(10):
                await gw.ready.wait()
                await gw.relay.connected.wait()
            rss0 = rss_mb()
            result.update(
                await scenario(args, config, gw, police, attacker, port_a, port_b, keys, clock)
            )
            result["rss_growth_mb"] = round(rss_mb() - rss0, 1)
        finally:
            gw.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await police.stop()
            port_a.close()
            port_b.close()
        result["locked_broker"] = await locked_broker_checks(tmp)
    return result


async def scenario(
    args: argparse.Namespace,
    config: Any,
    gw: Gateway,
    police: Police,
    attacker: Attacker,
    port_a: FakePort,
    port_b: FakePort,
    keys: dict[str, bytes],
    clock: ManualClock,
) -> dict[str, Any]:
    addr = {u.id: u.addr for u in config.units.values()}
    shop = FakeUnit(port_a, addr["shop-a"], keys["shop-a"], epoch=1)
    other = FakeUnit(port_a, addr["shop-b"], keys["shop-b"], epoch=1)
    forger = {u: FakeUnit(port_b, addr[u], os.urandom(32), epoch=9) for u in addr}
    stop = asyncio.Event()
    # the guard posts' units are installed (a unit never heard has no check-ins to miss)
    for uid in ("guard-gate", "guard-yard"):
        guard = FakeUnit(port_a, addr[uid], keys[uid], epoch=1)
        await guard.send_until_acked(
            guard.make(Heartbeat(3700, 1, 0x0100, HeartbeatFlags(0))), timeout=10
        )

    # a genuine incident of shop-b, and a genuine ack of it (to move and to replay)
    fb = other.send(Alarm(AlarmKind.PANIC, 1, 1))
    ib = f"{GATEWAY}-shop-b-1-0"
    await police.wait_for(lambda: bool(police.alarms(incident=ib)), 10, "shop-b alarm")
    topic_b, genuine_b = make_ack(
        Signer.load(police.keydir, f"dutyroom-{DUTYROOM}"),
        "campusguard",
        SITE,
        incident=ib,
        by="Officer Li",
        at=clock.now(),
    )
    recorded = [
        shop.wire(shop.make(Heartbeat(3700, i, 0x0100, HeartbeatFlags(0)))) for i in range(20)
    ]
    for w in recorded:
        port_a.write(w)  # genuine once ...

    async def serial_flood() -> tuple[int, int]:
        forged = replayed = 0
        units = list(forger.values())
        while not stop.is_set():
            for _ in range(50):
                u = units[forged % len(units)]
                port_b.write(u.wire(u.make(Alarm(AlarmKind.PANIC, 1, 1))))
                forged += 1
            for w in recorded[:10]:
                port_b.write(w)  # ... and played back on line B
                replayed += 1
            await asyncio.sleep(0.005)
        return forged, replayed

    latencies: list[float] = []

    async def genuine_alarms() -> None:
        n = 0
        while not stop.is_set():
            frame = shop.send(Alarm(AlarmKind.PANIC, 1, 10_000 + n))
            t0 = time.monotonic()
            iid = f"{GATEWAY}-shop-a-{frame.epoch}-{frame.seq}"
            with contextlib.suppress(AssertionError):
                await police.wait_for(lambda i=iid: bool(police.alarms(incident=i)), 5, iid)
                got = police.alarms(incident=iid)[0]
                latencies.append(got.at - t0)
            n += 1
            clock.advance(11)  # past the incident window: the next press opens a new one
            await asyncio.sleep(args.alarm_every)

    flood = asyncio.create_task(serial_flood())
    alarms = asyncio.create_task(genuine_alarms())
    t_start = time.monotonic()
    # MQTT: forged police acks for every incident seen, a 20 MB ack, a replayed ack
    await attacker.publish_all([(topic_b, genuine_b.encode())])  # the real duty room's ack
    await police.wait_for(
        lambda: any(m.get("update") == "police_ack" for m in police.alarms(incident=ib)), 10, "ack"
    )
    for _ in range(args.rounds):
        open_ids = [
            str(m.get("incident")) for m in police.alarms(update="new") if m.get("unit") == "shop-a"
        ]
        items: list[tuple[str, bytes]] = []
        for iid in open_ids[-5:]:
            items += attacker.police_ack_forgeries(iid, genuine_b)
            items.append((f"campusguard/{SITE}/ack/{ib}", genuine_b.encode()))  # replay
        await attacker.publish_all(items)
        await asyncio.sleep(0.2)
    big = asyncio.create_task(
        attacker.publish_all([(f"campusguard/{SITE}/ack/x", b"{" + b" " * 20_000_000 + b"}")])
    )
    # guard duty: nobody checks in at either post (the genuine alarms move the clock on,
    # 11 s a press); the attacker answers every rung of the gate's ladder
    clock.advance(5 * 60 + 1)
    for post in ("gate", "yard"):
        await police.expect_duty("missed_checkin", post=post, within=10, since=t_start)
    for _ in range(6):
        await attacker.publish_all(attacker.duty_ack_forgeries("gate"))
        clock.advance(31)
        await asyncio.sleep(0.3)
    reached = {}
    for post in ("gate", "yard"):
        try:
            await police.expect_duty(
                "escalation", post=post, step="police", within=10, since=t_start
            )
            reached[post] = True
        except AssertionError:
            reached[post] = False
    # no check-in and no genuine duty ack was ever sent: every "acknowledged" is a forgery
    silenced = len(police.duty("acknowledged", post="gate")) + (not reached["gate"])
    await big
    await asyncio.sleep(args.flood_s)
    stop.set()
    forged_sent, replays_sent = await flood
    await alarms
    await asyncio.sleep(0.5)

    conn = gw.store.conn
    shop_a_frames = conn.execute("SELECT count(*) FROM frames WHERE unit = 'shop-a'").fetchone()[0]
    forged_in = conn.execute("SELECT count(*) FROM frames WHERE epoch = 9").fetchone()[0]
    double = conn.execute(
        "SELECT count(*) - count(DISTINCT addr || ':' || epoch || ':' || seq) FROM frames"
    ).fetchone()[0]
    acked_wrongly = conn.execute(
        "SELECT count(*) FROM incidents WHERE police_ack_at IS NOT NULL AND id != ?", (ib,)
    ).fetchone()[0]
    closed_wrongly = conn.execute(
        "SELECT count(*) FROM incidents WHERE state = 'closed' AND id != ?", (ib,)
    ).fetchone()[0]
    state2 = sum(
        1
        for f in port_a.downlinks
        if getattr(f.body, "state", None) == AckState.POLICE_ACK and f.body.ref_seq != fb.seq
    )
    moved = sum(1 for f in port_b.downlinks if f.unit == shop.addr)
    return {
        "serial": {
            "forged_sent": forged_sent,
            "forged_accepted": forged_in,
            "replays_sent": replays_sent,
            "replays_accepted": double,
            "replays_moving_downlink": moved,
            "reacks_suppressed": gw.pipeline.reacks_suppressed,
            "rejects": dict(gw.receiver.rejects()),
        },
        "mqtt": {
            "messages_sent": attacker.sent,
            "forged_acks_acted_on": acked_wrongly + closed_wrongly + state2,
            "escalations_silenced": silenced,
            "ladder_reached_police": reached,
            "rejects": dict(gw.pipeline.mqtt_rejects),
            "oversized_dropped_unparsed": gw.relay.oversized,
        },
        "genuine_alarms": {
            "sent": shop_a_frames - 20,
            "delivered": len(latencies),
            "p50_ms": pct(latencies, 50),
            "p99_ms": pct(latencies, 99),
            "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        },
        "duration_s": round(time.monotonic() - t_start, 1),
    }


async def locked_broker_checks(tmp: Path) -> dict[str, Any]:
    """On broker-config's broker: anonymous refused, acks only from duty rooms, 20 MB refused."""
    accounts = Accounts(
        gateways={GATEWAY: [SITE]}, dutyrooms={DUTYROOM: [SITE]}, viewers={"press": [SITE]}
    )
    out: dict[str, Any] = {}
    with LocalBroker(tmp / "locked", accounts=accounts) as b:
        s = b.settings("viewer-press")
        try:
            async with aiomqtt.Client(s.host, s.port, tls_context=s.tls_context()):
                out["anonymous_connected"] = True
        except aiomqtt.MqttError:
            out["anonymous_connected"] = False
        try:
            d = b.settings(f"dutyroom-{DUTYROOM}")
            async with aiomqtt.Client(
                d.host,
                d.port,
                username=d.username,
                password=d.password,
                tls_context=d.tls_context(),
                timeout=10,
            ) as c:
                await c.publish(f"campusguard/{SITE}/ack/x", b"x" * 20_000_000, qos=1)
            out["oversized_accepted"] = True
        except aiomqtt.MqttError:
            out["oversized_accepted"] = False
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=20, help="rounds of forged police acks")
    p.add_argument("--flood-s", type=float, default=5.0, help="serial flood after the MQTT part")
    p.add_argument("--alarm-every", type=float, default=0.05, help="genuine alarm interval (s)")
    args = p.parse_args()
    res = asyncio.run(run(args))
    if args.json:
        print(json.dumps(res))
        return
    s, m, g = res["serial"], res["mqtt"], res["genuine_alarms"]
    print(
        f"serial: {s['forged_sent']} forged frames, {s['forged_accepted']} accepted;"
        f" {s['replays_sent']} replays, {s['replays_accepted']} accepted,"
        f" {s['replays_moving_downlink']} downlink frames to line B;"
        f" {s['reacks_suppressed']} re-ACKs held back"
    )
    print(
        f"mqtt: {m['messages_sent']} attacker messages; forged acks acted on"
        f" {m['forged_acks_acted_on']}; escalations silenced {m['escalations_silenced']};"
        f" rejects {m['rejects']}; oversized dropped {m['oversized_dropped_unparsed']}"
    )
    print(
        f"genuine alarms during the floods: {g['delivered']}/{g['sent']} delivered,"
        f" p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms, max {g['max_ms']} ms;"
        f" RSS growth {res['rss_growth_mb']} MB; locked {res['locked_broker']}"
    )


if __name__ == "__main__":
    main()
