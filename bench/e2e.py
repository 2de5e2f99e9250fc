"""End to end: a virtual press -> the police subscriber's receipt, on the virtual fleet.

python bench/e2e.py [--json] [--presses N] [--rate PER_S] [--baud N] [--fsync-ms LOW:HIGH]

For 10 and 100 units (the real firmware on the MicroPython unix port, 2 and 4 shared
links), each with a clean link and with 10 % of frames dropped both ways (seeded): a
private Mosquitto, the gateway in-process with its watchers, the police subscriber. The
harness presses buttons round-robin at ``--rate`` presses a second (default 20) and
measures, for every press that opens an incident, the time from writing ``button 1`` on
the unit's control pty to the police subscriber receiving the alarm (same process, same
monotonic clock). Every press must be accounted for in the incidents' ``presses``.
``taken_by_units``: presses the firmware took, from the ALARM frames heard on the links:
each carries its series' press count so far (``presses``; the series is named by its first
press's ``press_ms``) and a unit may fold presses into one frame (a press while the
series' ALARM is still owed), so a series took its largest ``presses`` heard, not its
number of frames. ``lost``: presses a unit took that the police never counted, unit by
unit (never negative: one unit's surplus cannot hide another's loss).
``delivered_beyond_taken``: presses the police counted beyond what a unit was heard to
take (0 unless the gateway overcounts a unit's presses: a lost press of that unit could
hide behind them).
A press the unit never took (a virtual unit starved of CPU while its button was down for
80 ms) is presses - taken.
The figures are read once every unit has answered a question on its control pty (a
starved unit may take a press after the script's last one) and the police have every
press taken (or 60 s have passed), the police's count before the presses heard: a press
still on its way shows as lost, never as delivered.

The gateway's clock runs 60x (as in ``campusguard demo``) so that a unit's incident
window is short and each unit can open a new incident every half second; the units'
heartbeat, incident and cancel windows are scaled alike. Unit folders are written
directly (``prepare_unit_dir``), not through mpremote. Targets: p99 under 100 ms without
loss (issue 6) and with 10 % loss at 115200 baud (issue 18), nothing lost; at other baud
rates the figures are reported against 500 ms. Exit status 1 only if a press a unit took
was lost or the police counted presses no unit took (``lost``, ``delivered_beyond_taken``);
a missed latency target shows as ``"ok": false``.

The line and the disk are emulated: each link carries frames at ``--baud`` (10 bits a
byte, one frame at a time in either direction: a shared RS-485 pair or radio channel) and
every journal fsync takes ``--fsync-ms`` more (uniform; a Pi's SD card: 1-20 ms). The
gateway ACKs after that fsync, so both are in every round trip the units learn their
retransmission timeout from. ``retransmissions``: copies of a frame heard on the line
after its first (the units' retries); on a lossless link every one of them is needless
(``needless_retransmissions``), as nothing was lost that it could have replaced.
The units' own figures (``unit_rto_ms``, ``unit_srtt_ms``, ``needless_seen_by_units``)
come from a ``link`` question on each control pty; a unit that does not answer within 3 s
(a process starved of CPU) gets one line on stderr and is listed in
``units_without_link_figures``, and the run goes on without its figures.

On a 2-core host the 100-unit runs measure the host, not the system: each idle firmware
process (the unix port's asyncio loop with 20 ms ticks) takes ~1.8 % of a core, so 100 of
them take ~1.8 cores before anything is pressed; units then take presses late or miss an
80 ms press altogether (``presses`` > ``taken_by_units``), and the gateway waits for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.core.errors import VirtualUnitError  # noqa: E402
from gateway.security.brokerconfig import Accounts  # noqa: E402
from gateway.security.signkeys import provision_one_room  # noqa: E402
from gateway.sim.demo import PressBook  # noqa: E402
from gateway.sim.fleet import DUTYROOM, Fleet, FleetPlan, Heard, latency_stats  # noqa: E402
from gateway.sim.linkrelay import Impairment  # noqa: E402
from gateway.sim.localbroker import LocalBroker  # noqa: E402
from gateway.sim.police import Police  # noqa: E402
from gateway.sim.vboard import VirtualUnit  # noqa: E402
from protocol import Alarm, Frame, MsgType  # noqa: E402

# what the units send until ACKed (heartbeats go once)
RELIABLE = {MsgType.ALARM, MsgType.CANCEL, MsgType.CHECKIN, MsgType.TEST, MsgType.FAULT}

SPEED = 60.0
TARGET_P99_MS = 100.0  # clean, and 10 % loss at 115200 baud
OTHER_TARGET_P99_MS = 500.0  # 10 % loss at other baud rates (issue 6's target)


def target_ms(loss: float, baud: int) -> float:
    """The p99 a run is held to."""
    return TARGET_P99_MS if loss == 0.0 or baud == 115200 else OTHER_TARGET_P99_MS


def presses_taken(heard: Iterable[tuple[Heard, Frame]]) -> Counter[str]:
    """Unit -> the presses it took, from the ALARM frames heard on its link.

    Frames are not presses: an ALARM carries its series' press count so far, and a unit
    folds a press into the next frame while the series' ALARM is still owed. A series
    (one unit, one first-press ``press_ms``) took its largest ``presses`` heard.
    """
    series: dict[tuple[str, int], int] = {}
    for h, f in heard:
        if isinstance(f.body, Alarm):
            key = (h.sender, f.body.press_ms)
            series[key] = max(series.get(key, 0), f.body.presses)
    taken: Counter[str] = Counter()
    for (unit, _), n in series.items():
        taken[unit] += n
    return taken


def lost_presses(taken: Mapping[str, int], delivered: Mapping[str, int]) -> int:
    """Presses the units took that the police never counted, unit by unit.

    Never negative, and a unit the police credit with more than it took (a gateway that
    overcounts) does not offset another unit's loss.
    """
    return sum(max(0, n - delivered.get(unit, 0)) for unit, n in taken.items())


def beyond_taken(taken: Mapping[str, int], delivered: Mapping[str, int]) -> int:
    """Presses the police counted beyond what each unit was heard to take."""
    return sum(max(0, n - taken.get(unit, 0)) for unit, n in delivered.items())


def plan_for(units: int, baud: int) -> FleetPlan:
    return FleetPlan(
        units=units,
        baud=baud,
        links=2 if units <= 25 else 4,
        guard_post=False,
        gateway_id="bench-gw",
        heartbeat_s=600,
        missed_heartbeats=3,
        incident_window_s=10,
        cancel_window_s=60,
    )


def firmware_for(plan: FleetPlan) -> dict[str, int]:
    return {
        "heartbeat_ms": int(plan.heartbeat_s * 1000 / SPEED),
        "incident_window_ms": int(plan.incident_window_s * 1000 / SPEED),
        "cancel_window_ms": int(plan.cancel_window_s * 1000 / SPEED),
        "link_lost_ms": 600_000,
    }


async def link_timings(
    units: list[VirtualUnit], timeout_s: float = 3.0
) -> tuple[list[tuple[int, int, int, int]], list[str]]:
    """Each unit's learnt timing, and the names of the units that did not answer."""
    timings = []
    silent = []
    for vu in units:
        try:
            timings.append(await vu.link_timing(timeout_s))
        except VirtualUnitError as e:
            # a unit's process starved of CPU on a loaded host: its figures are missing,
            # the run's are not
            print(f"e2e: {e}: its link figures are missing from this run", file=sys.stderr)
            silent.append(vu.name)
    return timings, silent


async def one_run(
    units: int,
    loss: float,
    presses: int,
    rate: float,
    broker: LocalBroker,
    workdir: Path,
    seed: int,
    gateway: Literal["inprocess", "process"],
    baud: int,
    fsync_ms: tuple[float, float],
) -> dict[str, Any]:
    plan = plan_for(units, baud)
    book = PressBook()
    fleet = Fleet(
        workdir,
        plan,
        broker_url=broker.settings(f"gateway-{plan.gateway_id}"),
        impairment=Impairment(drop=loss, baud=baud),
        seed=seed,
        provision="fast",
        firmware=firmware_for(plan),
        install_test=False,
        clock_speed=SPEED,
        concurrency=16,
        gateway=gateway,
        fsync_delay_ms=fsync_ms if fsync_ms[1] > 0 else None,
    )
    # the police emulator reads what the gateway signs and signs its acks (same key folder)
    provision_one_room(fleet.keydir, plan.gateway_id, DUTYROOM)
    police = Police(
        broker.settings(f"dutyroom-{DUTYROOM}"),
        keydir=fleet.keydir,
        dutyroom=DUTYROOM,
        clock=fleet.clock.now,
    )
    async with police:
        t_up = time.monotonic()
        async with fleet:
            up_s = time.monotonic() - t_up
            if gateway == "inprocess":
                await fleet.wait_connected()
            else:
                await police.wait_for(
                    lambda: any(
                        m.kind == "gateway" and m.get("state") == "online" for m in police.messages
                    ),
                    10.0,
                    "gateway online",
                )
            order = list(fleet.units.values())
            tasks = []
            t0 = time.monotonic()
            for k in range(presses):
                u = order[k % len(order)]
                tasks.append(asyncio.create_task(u.press()))
                await asyncio.sleep(0)  # the button is down now
                book.add(u)
                # a fixed schedule, not a fixed gap: slow steps do not slow the offered rate
                delay = t0 + (k + 1) / rate - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            await asyncio.gather(*tasks)
            # a unit that answers its control pty has read its last press (a starved one
            # took it late: its ALARM may still be on the way)
            timings, silent = await link_timings([u.vu for u in order])
            seen: dict[str, dict[str, int]] = {}

            def settled() -> bool:
                # the police's count first: every press in it was heard before it
                seen["delivered"] = book.delivered_by_unit(police)
                seen["taken"] = presses_taken(fleet.heard())
                return lost_presses(seen["taken"], seen["delivered"]) == 0

            try:
                await police.wait_for(settled, 60.0, "every press taken")
            except AssertionError:
                pass
            taken_by, delivered_by = seen["taken"], seen["delivered"]
            taken = sum(taken_by.values())
            delivered = sum(delivered_by.values())
            copies = Counter(
                (h.sender, f.epoch, f.seq) for h, f in fleet.heard() if f.body.TYPE in RELIABLE
            )
            resent = sum(n - 1 for n in copies.values())
            lat = book.latencies(police)
            stats = {lid: dict(r.stats) for lid, r in fleet.relays.items()}
            rejects = dict(fleet.rejects()) if gateway == "inprocess" else {}
            # the gateway's part of each round trip: frames read -> ACKs written
            frames_to_acks = (
                latency_stats(list(fleet.gateway.pipeline.batch_s))
                if gateway == "inprocess"
                else None
            )
    dropped = sum(s.get("up_dropped", 0) + s.get("down_dropped", 0) for s in stats.values())
    frames = sum(s.get("up_frames", 0) + s.get("down_frames", 0) for s in stats.values())
    stats_ms = latency_stats(lat)
    return {
        "units": units,
        "links": plan.links,
        "loss": loss,
        "presses": book.total,
        "taken_by_units": taken,
        "delivered": delivered,
        "lost": lost_presses(taken_by, delivered_by),
        "delivered_beyond_taken": beyond_taken(taken_by, delivered_by),
        "latency_ms": stats_ms,
        "samples": len(lat),
        "frames_relayed": frames,
        "frames_dropped": dropped,
        "gateway_rejects": rejects,
        "gateway_frames_to_acks_ms": frames_to_acks,
        "baud": baud,
        "fsync_ms": list(fsync_ms),
        "retransmissions": resent,
        # what the units learnt (ms): their timeouts and smoothed round trips at the end
        "unit_rto_ms": latency_stats([t[0] / 1000 for t in timings]),
        "unit_srtt_ms": latency_stats([t[1] / 1000 for t in timings]),
        "needless_retransmissions": resent if loss == 0.0 else None,
        # copies the units know were needless: a frame sent twice and ACKed twice (the
        # gateway ACKs every copy it gets, so the first had arrived; RFC 3708)
        "needless_seen_by_units": sum(t[3] for t in timings),
        # units that did not answer the link query (a starved process): their figures
        # above are missing, the run's own figures are not
        "units_without_link_figures": silent,
        "fleet_up_s": round(up_s, 2),
        "target_p99_ms": target_ms(loss, baud),
        "ok": taken == delivered == book.total
        and lost_presses(taken_by, delivered_by) == 0
        and stats_ms["p99"] < target_ms(loss, baud),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    low, _, high = args.fsync_ms.partition(":")
    fsync_ms = (float(low), float(high or low))
    # the broker as broker-config writes it (TLS, a user per client, the ACL)
    accounts = Accounts(gateways={"bench-gw": ["+"]}, dutyrooms={DUTYROOM: ["+"]})
    with (
        tempfile.TemporaryDirectory(prefix="cg-e2e-") as tmp,
        LocalBroker(Path(tmp) / "mqtt", accounts=accounts) as b,
    ):
        configs = [(10, 0.0), (10, 0.1), (100, 0.0), (100, 0.1)]
        if args.only:
            n, _, drop = args.only.partition(":")
            configs = [(int(n), float(drop or 0))]
        for i, (units, loss) in enumerate(configs):
            r = await one_run(
                units,
                loss,
                args.presses,
                args.rate,
                b,
                Path(tmp) / f"run{i}",
                seed=i + 1,
                gateway=args.gateway,
                baud=args.baud,
                fsync_ms=fsync_ms,
            )
            runs.append(r)
            if not args.json:
                lat = r["latency_ms"]
                print(
                    f"{r['units']:>4} units  loss {r['loss']:>4.0%}  presses {r['presses']:>4}  "
                    f"taken {r['taken_by_units']:>4}  delivered {r['delivered']:>4}  "
                    f"lost {r['lost']}  beyond {r['delivered_beyond_taken']}  "
                    f"p50 {lat['p50']:>6.1f} ms  p99 {lat['p99']:>6.1f} ms  "
                    f"max {lat['max']:>6.1f} ms  resent {r['retransmissions']}  "
                    f"(target p99 < {r['target_p99_ms']:.0f} ms: "
                    f"{'ok' if r['ok'] else 'MISSED'})",
                    flush=True,
                )
    return {
        "bench": "e2e",
        "baud": args.baud,
        "fsync_ms": list(fsync_ms),
        "method": "virtual press (control pty) -> police subscriber receipt, same monotonic clock",
        "rate_per_s": args.rate,
        "runs": runs,
        "ok": all(r["ok"] for r in runs),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--presses", type=int, default=200, help="presses per run (default 200)")
    p.add_argument("--rate", type=float, default=20.0, help="presses per second (default 20)")
    p.add_argument(
        "--gateway",
        choices=("process", "inprocess"),
        default="process",
        help="the gateway as its own process (default, as on the Pi) or in the harness",
    )
    p.add_argument("--only", help="run only UNITS:LOSS, e.g. 100:0.1")
    p.add_argument(
        "--baud", type=int, default=115200, help="the links' speed (default 115200; 9600: radio)"
    )
    p.add_argument(
        "--fsync-ms",
        default="1:20",
        metavar="LOW:HIGH",
        help="each journal fsync also takes LOW..HIGH ms (default 1:20, a Pi's SD card; 0: none)",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # aiomqtt's pending-publish notes
    result = asyncio.run(main(a))
    if a.json:
        print(json.dumps(result))
    # a missed latency target is a figure (printed, "ok": false); a lost press is a failure,
    # and so is a count that could hide one
    failed = any(r["lost"] or r["delivered_beyond_taken"] for r in result["runs"])
    sys.exit(1 if failed else 0)
