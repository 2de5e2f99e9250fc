"""``campusguard demo --city``: three schools on a three-node NATS cluster, two stations.

Three schools, each with its gateway (in-process) and two virtual units (the real
firmware on MicroPython), a three-node cluster (:class:`NatsCluster`: TLS, accounts,
JetStream), and two police stations with persistent sessions on different nodes: the
north station's district holds two schools, the south's one. Each school's first unit
is pressed; then the node leading the MQTT layer's streams is killed (kill -9) and each
school's second unit is pressed during the failover. Printed: what each station
received, and the latency from the press to each station, before and during failover.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from gateway.security.brokerconfig import Accounts
from gateway.security.signkeys import gateway_kid, public_path
from gateway.sim.fleet import Fleet, FleetPlan, FleetUnit
from gateway.sim.natscluster import NatsCluster
from gateway.sim.police import Police, Received

SCHOOLS = (  # gateway id, site, district
    ("gw-oak", "oak-primary", "north"),
    ("gw-elm", "elm-primary", "north"),
    ("gw-ash", "ash-school", "south"),
)
STATION_NODE = {"north": "n2", "south": "n3"}
DELIVERY_TIMEOUT_S = 120.0  # a station still missing an alarm after this counts it lost


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def run_city(keep: Path | None, out: TextIO) -> dict[str, Any]:
    """Run the city demo (its folder kept in ``keep``); return the summary (``--json``'s)."""
    with contextlib.ExitStack() as stack:
        if keep:
            workdir = Path(keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cg-city-")))
        accounts = Accounts(
            gateways={gid: [site] for gid, site, _ in SCHOOLS},
            dutyrooms={d: [site for _, site, dd in SCHOOLS if dd == d] for d in STATION_NODE},
        )
        print("starting a three-node NATS cluster (JetStream, MQTT, TLS)", file=out, flush=True)
        cluster = stack.enter_context(NatsCluster(workdir / "nats", accounts))
        fleets: dict[str, Fleet] = {}
        stationkeys = workdir / "stations"
        async with contextlib.AsyncExitStack() as astack:
            for i, (gid, site, _) in enumerate(SCHOOLS):
                plan = FleetPlan(units=2, links=1, guard_post=False, gateway_id=gid, site=site)
                fleet = Fleet(
                    workdir / gid,
                    plan,
                    broker_url=cluster.settings(f"gateway-{gid}", first=f"n{1 + i % 3}"),
                    install_test=False,
                )
                fleets[gid] = fleet
            print(
                f"starting {len(SCHOOLS)} schools: gateways and virtual units (real firmware)",
                file=out,
                flush=True,
            )
            for fleet in fleets.values():
                await astack.enter_async_context(fleet)
            for gid, fleet in fleets.items():
                await fleet.wait_connected()
                for d in STATION_NODE:
                    (stationkeys / d).mkdir(parents=True, exist_ok=True)
                    pub = public_path(fleet.keydir, gateway_kid(gid))
                    shutil.copy(pub, stationkeys / d / pub.name)
            stations: dict[str, Police] = {}
            for d, node in STATION_NODE.items():
                p = Police(
                    cluster.settings(f"dutyroom-{d}", first=node),
                    keydir=stationkeys / d,
                    sites=[site for _, site, dd in SCHOOLS if dd == d],
                    identifier=f"station-{d}",
                )
                p.listen(_printer(out, d))
                await astack.enter_async_context(p)
                stations[d] = p
            t0 = time.monotonic()
            presses: list[tuple[str, FleetUnit, str, str]] = []  # (phase, unit, district)
            print("\nbefore: one press at each school", file=out, flush=True)
            for gid, fleet in fleets.items():
                unit = fleet.unit(fleet.plan.unit_ids()[0])
                await unit.press()
                presses.append(("before", unit, fleet.plan.site, _district(gid)))
            await _delivered(stations, presses, fleets)
            leaders = cluster.stream_leaders()
            victim = leaders.get("$MQTT_msgs", "n1")
            led = ", ".join(sorted(k for k, v in leaders.items() if v == victim))
            print(
                f"\nkill -9 of node {victim} (it leads {led or 'no MQTT stream'}) and one"
                " press at each school while the cluster elects a new leader",
                file=out,
                flush=True,
            )
            killed_at = time.monotonic()
            cluster.kill(victim)
            for gid, fleet in fleets.items():
                unit = fleet.unit(fleet.plan.unit_ids()[1])
                await unit.press()
                presses.append(("failover", unit, fleet.plan.site, _district(gid)))
            await _delivered(stations, presses, fleets)
            return _summary(
                stations, presses, fleets, time.monotonic() - t0, killed_at, victim, out
            )
    raise AssertionError("unreachable")


def _district(gid: str) -> str:
    return next(d for g, _, d in SCHOOLS if g == gid)


def _first_receipt(p: Police, unit: FleetUnit, site: str) -> float | None:
    """When the station first had the alarm of this press (unit ids repeat across schools)."""
    since = unit.pressed_at
    if since is None:
        return None
    at = [
        m.at
        for m in p.alarms(unit.id, since=since)
        if m.get("update") == "new" and m.get("site") == site
    ]
    return min(at) if at else None


async def _delivered(
    stations: dict[str, Police],
    presses: list[tuple[str, FleetUnit, str, str]],
    fleets: dict[str, Fleet],
) -> None:
    """Wait until each station has each press of its district (or the timeout)."""
    for d, p in stations.items():
        mine = [(u, site) for _, u, site, dd in presses if dd == d]

        def arrived(p: Police = p, mine: list[tuple[FleetUnit, str]] = mine) -> bool:
            return all(_first_receipt(p, u, site) is not None for u, site in mine)

        with contextlib.suppress(AssertionError):  # counted as lost in the summary
            await p.wait_for(arrived, DELIVERY_TIMEOUT_S, "every alarm of its district")


def _printer(out: TextIO, station: str) -> Any:
    def show(m: Received) -> None:
        if m.kind == "alarm" and m.get("update") == "new":
            print(
                f"  station {station:<5} alarm {m.get('incident')}"
                f" ({m.get('kind')} at {m.get('site')})",
                file=out,
                flush=True,
            )

    return show


def _summary(
    stations: dict[str, Police],
    presses: list[tuple[str, FleetUnit, str, str]],
    fleets: dict[str, Fleet],
    seconds: float,
    killed_at: float,
    victim: str,
    out: TextIO,
) -> dict[str, Any]:
    rows: list[tuple[str, str, str, float | None]] = []
    for phase, unit, site, d in presses:
        got = _first_receipt(stations[d], unit, site)
        assert unit.pressed_at is not None
        ms = None if got is None else (got - unit.pressed_at) * 1000
        rows.append((phase, f"{site}/{unit.id}", d, ms))
    print(f"\n{'phase':<9} {'school/unit':<22} {'station':<8} {'press -> station':>17}", file=out)
    for phase, uid, d, ms in rows:
        shown = "LOST" if ms is None else f"{ms:9.1f} ms"
        print(f"{phase:<9} {uid:<22} {d:<8} {shown:>17}", file=out)
    lat = [ms for *_, ms in rows if ms is not None]
    during = [ms for phase, *_, ms in rows if phase == "failover" and ms is not None]
    lost = sum(ms is None for *_, ms in rows)
    p50 = round(statistics.median(lat), 1) if lat else None
    worst = round(max(lat), 1) if lat else None
    during_max = round(max(during), 1) if during else None
    summary: dict[str, Any] = {
        "gateways": len(fleets),
        "stations": len(stations),
        "presses": len(presses),
        "delivered": len(lat),
        "lost": lost,
        "latency_ms": {
            "p50": p50,
            "p99": round(_percentile(lat, 0.99), 1) if lat else None,
            "max": worst,
        },
        "failover": {
            "lost": sum(ms is None for phase, *_, ms in rows if phase == "failover"),
            "max_ms": during_max,
            "killed": victim,
        },
        "seconds": round(seconds, 1),
    }
    print(
        f"\nsummary: {len(presses)} presses, {len(lat)} delivered to their station, {lost} lost;"
        f" press to station p50 {p50} ms, max {worst} ms; during the failover (node {victim}"
        f" killed) max {during_max} ms",
        file=out,
    )
    return summary
